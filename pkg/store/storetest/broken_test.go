package storetest_test

import (
	"errors"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store"
	"mayu/pkg/store/storetest"
)

func TestBroken(t *testing.T) {
	seed := host.Host{Serial: "s1", State: host.Running, MacAddresses: []string{"00:11:22:33:44:55"}, InternalAddr: net.ParseIP("10.0.0.1")}
	b := storetest.NewBroken(t, seed)
	refused := errors.New("refused")
	tests := []struct {
		name    string
		call    func() error
		wantErr error
	}{
		{"update fails with storage error", func() error {
			_, err := b.Update("s1", store.Step{Message: "x", Apply: func(h *host.Host) error { h.Cabinet = 1; return nil }})
			return err
		}, store.ErrStorage},
		{"step error wins", func() error {
			_, err := b.Update("s1", store.Step{Message: "x", Apply: func(h *host.Host) error { return refused }})
			return err
		}, refused},
		{"update of unknown serial", func() error { _, err := b.Update("nosuch"); return err }, store.ErrNotFound},
		{"create fails with storage error", func() error { _, err := b.Create("s2"); return err }, store.ErrStorage},
		{"create of existing serial", func() error { _, err := b.Create("s1"); return err }, store.ErrExists},
		{"cluster update fails", func() error {
			_, err := b.UpdateCluster("m", func(c *store.Cluster) error { c.Config.DefaultEtcdClusterToken = "t"; return nil })
			return err
		}, store.ErrStorage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.ErrorIs(t, tc.call(), tc.wantErr)
		})
	}
	assert.Equal(t, 3, b.Attempts())

	h, err := b.Get("s1")
	require.NoError(t, err)
	assert.Equal(t, host.Running, h.State, "failed updates change nothing")
	_, err = b.ByMAC("00:11:22:33:44:55")
	assert.NoError(t, err)
	_, err = b.ByIP(net.ParseIP("10.0.0.1"))
	assert.NoError(t, err)
	assert.Len(t, b.List(), 1)

	b.ReadErr = store.ErrStorage
	_, err = b.Get("s1")
	assert.ErrorIs(t, err, store.ErrStorage)

	empty := &storetest.Broken{}
	_, err = empty.Get("s1")
	assert.ErrorIs(t, err, store.ErrNotFound)
}
