package host

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A record as Mayu 0.11 writes it.
const legacyRecord = `{
  "Enabled": true,
  "Serial": "0800278e158a-0",
  "MacAddresses": [
    "08:00:27:8e:15:8a"
  ],
  "InternalAddr": "192.168.2.21",
  "Hostname": "00006c8c3d6f9a2b",
  "MachineID": "00006c8c3d6f9a2b5e43f1c0a7d8e9f1",
  "ConnectedNIC": "eth0",
  "FleetMetadata": [
    "role-core=true"
  ],
  "LastBoot": "2016-08-09T15:49:02.344687863Z",
  "Profile": "core-services",
  "EtcdClusterToken": "41f07d10ab835b22071a32d5c1b75a6d",
  "Overrides": {
    "CoreOSVersion": "1068.6.0"
  },
  "State": "running",
  "CoreOSVersion": "1068.6.0"
}
`

func TestJSONRoundTripKeepsFieldOrderAndOmissions(t *testing.T) {
	h, err := Unmarshal([]byte(legacyRecord))
	require.NoError(t, err)
	assert.Equal(t, Running, h.State)
	assert.Equal(t, "192.168.2.21", h.InternalAddr.String())
	assert.Equal(t, 344687863, h.LastBoot.Nanosecond())
	out, err := h.Marshal()
	require.NoError(t, err)
	// Byte for byte what Mayu 0.11 wrote: field order (Enabled before
	// Serial), omissions and indentation all survive the round trip.
	assert.Equal(t, legacyRecord, string(out))
}

func TestEmptyRecordKeepsMandatoryFields(t *testing.T) {
	out, err := Host{Serial: "x"}.Marshal()
	require.NoError(t, err)
	assert.JSONEq(t, `{"Serial":"x","ConnectedNIC":"","LastBoot":"0001-01-01T00:00:00Z","State":"unknown"}`, string(out))
}

func TestLegacyIntegerStates(t *testing.T) {
	for n, want := range []State{Unknown, Configured, Installing, Running} {
		var s State
		require.NoError(t, json.Unmarshal([]byte{byte('0' + n)}, &s))
		assert.Equal(t, want, s)
	}
	var s State
	assert.ErrorIs(t, json.Unmarshal([]byte(`"sleeping"`), &s), ErrInvalidState)
	assert.Error(t, json.Unmarshal([]byte(`7`), &s))
}

func TestTransitions(t *testing.T) {
	allowed := map[[2]State]bool{
		{Unknown, Configured}: true, {Unknown, Installing}: true,
		{Configured, Configured}: true, {Configured, Installing}: true,
		{Installing, Installing}: true, {Installing, Installed}: true,
		{Installed, Installed}: true, {Installed, Running}: true, {Installed, Configured}: true,
		{Running, Running}: true, {Running, Configured}: true,
	}
	for _, from := range States {
		for _, to := range States {
			err := from.CanTransition(to)
			if to == Unknown || allowed[[2]State{from, to}] {
				assert.NoError(t, err, "%s -> %s", from, to)
			} else {
				assert.ErrorIs(t, err, ErrForbiddenTransition, "%s -> %s", from, to)
			}
		}
	}
}

func TestIgnoredByDHCP(t *testing.T) {
	want := map[State]bool{Unknown: false, Configured: false, Installing: false, Installed: true, Running: true, "": false}
	for st, ignored := range want {
		assert.Equal(t, ignored, st.IgnoredByDHCP(), "%q", st)
	}
}

func TestParseState(t *testing.T) {
	for in, want := range map[string]State{"configured": Configured, `"Running"`: Running, " installed ": Installed} {
		got, err := ParseState(in)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	_, err := ParseState("done")
	assert.ErrorIs(t, err, ErrInvalidState)
}

func TestFleetMeta(t *testing.T) {
	m := FleetMeta{"role-core=true", "Zone=B"}
	assert.True(t, m.Has("ROLE-CORE=TRUE"))
	assert.True(t, m.Has("zone=b"))
	assert.False(t, m.Has("role-core=false"))
	assert.Equal(t, "role-core=true,Zone=B", m.String())
}

func TestCloneIsDeep(t *testing.T) {
	h := Host{MacAddresses: []string{"a"}, Overrides: map[string]interface{}{"k": map[string]interface{}{"n": "v"}}, LastBoot: time.Now()}
	c := h.Clone()
	c.MacAddresses[0] = "b"
	c.Overrides["k"].(map[string]interface{})["n"] = "w"
	assert.Equal(t, "a", h.MacAddresses[0])
	assert.Equal(t, "v", h.Overrides["k"].(map[string]interface{})["n"])
}

func TestOverrideString(t *testing.T) {
	h := Host{Overrides: map[string]interface{}{"s": "x", "n": 3.0, "nil": nil}}
	v, ok := h.OverrideString("s")
	assert.True(t, ok)
	assert.Equal(t, "x", v)
	v, ok = h.OverrideString("n")
	assert.True(t, ok, "non-string overrides are formatted, not asserted")
	assert.Equal(t, "3", v)
	_, ok = h.OverrideString("nil")
	assert.False(t, ok)
}

func TestNormalize(t *testing.T) {
	s, err := NormalizeSerial(" 0800278E158A-0 ")
	require.NoError(t, err)
	assert.Equal(t, "0800278e158a-0", s)
	for _, bad := range []string{"", "..", "../x", "a/b", ".x", "-x", "a b", "a\x00"} {
		_, err := NormalizeSerial(bad)
		assert.ErrorIs(t, err, ErrInvalidSerial, bad)
	}
	m, err := NormalizeMAC("08-00-27-8E-15-8A")
	require.NoError(t, err)
	assert.Equal(t, "08:00:27:8e:15:8a", m)
	_, err = NormalizeMAC("08:00:27")
	assert.ErrorIs(t, err, ErrInvalidMAC)
}
