package provision

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store"
)

// Vendor placeholders and unsubstituted markers never register: they would
// make every board of a model one record with one address. Nothing is
// reserved for them, so the first real machine still gets the first address
// and the first profile.
func TestRegisterRefusesPlaceholdersAndMarkers(t *testing.T) {
	p, st := newTest(t, "192.168.2.99")
	for _, s := range []string{"__SERIAL__", "{{.Serial}}", "${serial}", "To-be-filled-by-O.E.M.", "default-string",
		"0", "0123456789", "00000000-0000-0000-0000-000000000000", " System Serial Number "} {
		_, _, err := p.Register(s)
		require.ErrorIs(t, err, ErrInvalid, "%q", s)
		assert.ErrorIs(t, err, host.ErrInvalidSerial, "%q", s)

		_, err = p.ReportFacts(s, Facts{MACs: []string{"02:00:00:00:00:01"}, ConnectedNIC: "eth0"})
		assert.ErrorIs(t, err, ErrInvalid, "%q", s)
	}
	assert.Empty(t, st.List())

	h, created, err := p.Register("CZC1234ABC")
	require.NoError(t, err)
	assert.True(t, created)
	assert.Equal(t, "192.168.2.21", h.InternalAddr.String())
	assert.Equal(t, "core-services", h.Profile)
}

// A record a placeholder serial got before mayu refused them stays
// manageable: operators must be able to reinstall or retire it.
func TestLegacyPlaceholderRecordStaysManageable(t *testing.T) {
	p, st := newTest(t, "192.168.2.99")
	const legacy = "to-be-filled-by-o.e.m."
	_, err := st.Create(legacy, store.Step{Message: MsgCreated, Apply: func(h *host.Host) error {
		h.Enabled, h.State = true, host.Running
		return nil
	}})
	require.NoError(t, err)
	h, err := p.SetState(legacy, "configured")
	require.NoError(t, err)
	assert.Equal(t, host.Configured, h.State)
	_, err = p.SetProviderID(legacy, "rack-7")
	require.NoError(t, err)
}
