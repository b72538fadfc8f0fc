package gitdir_test

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store"
	"mayu/pkg/store/gitdir"
)

// TestAllocationSeesHandEdits: the addresses an operator frees or takes
// by hand count for the next reservation: a removed host directory gives
// its address back, and a hand-made record on a reserved address makes
// that reservation's Create fail with nothing written.
func TestAllocationSeesHandEdits(t *testing.T) {
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{Watch: true})
	require.NoError(t, err)
	defer d.Close()
	req := store.AllocRequest{First: net.ParseIP("10.0.0.1"), Last: net.ParseIP("10.0.0.9"), Default: "default"}
	register := func(serial string) host.Host {
		t.Helper()
		r, err := d.Reserve(serial, req)
		require.NoError(t, err)
		a := r.Allocation()
		h, err := r.Create(step("host created", func(h *host.Host) { h.Enabled = true; h.InternalAddr = a.Addr; h.Profile = a.Profile }))
		require.NoError(t, err)
		return h
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			require.True(t, time.Now().Before(deadline), what)
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, s := range []string{"s0", "s1", "s2"} {
		register(s)
	}
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "s0")))
	eventually("removal picked up", func() bool { _, err := d.Get("s0"); return err != nil })
	assert.Equal(t, "10.0.0.1", register("s3").InternalAddr.String(), "the removed host's address is free again")

	r, err := d.Reserve("s4", req)
	require.NoError(t, err)
	require.Equal(t, "10.0.0.4", r.Allocation().Addr.String())
	require.NoError(t, os.Mkdir(filepath.Join(dir, "byhand"), 0o755))
	b, err := host.Host{Serial: "byhand", Enabled: true, InternalAddr: net.ParseIP("10.0.0.4").To4()}.Marshal()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "byhand", "conf.json"), b, 0o644))
	eventually("hand-made record picked up", func() bool { _, err := d.Get("byhand"); return err == nil })
	_, err = r.Create(step("host created", func(h *host.Host) { h.InternalAddr = net.ParseIP("10.0.0.4").To4(); h.Profile = "default" }))
	require.ErrorIs(t, err, store.ErrReservationLost)
	_, err = d.Get("s4")
	require.ErrorIs(t, err, store.ErrNotFound)
	assert.Equal(t, "10.0.0.5", register("s4").InternalAddr.String())
	checkRepo(t, dir)
}
