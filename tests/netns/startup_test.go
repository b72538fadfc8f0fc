//go:build nettest

package netns

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/dnsmasq"
	"mayu/pkg/proctest"
	"mayu/pkg/proctest/netlab"
)

// TestNetMayuStartup: bin/mayu in the namespace with real dnsmasq says
// "mayu started" only once dnsmasq serves, and exits non-zero naming the
// cause when it cannot start, leaving nothing behind.
func TestNetMayuStartup(t *testing.T) {
	proctest.RequireFile(t, dnsmasq.DefaultBinary, "dnsmasq-base")
	l := netlab.New(t)
	config := func(t *testing.T, from, to string) string {
		p := filepath.Join(t.TempDir(), "config.yaml")
		require.NoError(t, os.WriteFile(p, []byte(strings.Replace(netConfig, from, to, 1)), 0o644))
		return p
	}
	exits := func(t *testing.T, m *mayuProc) {
		t.Helper()
		requireFailedExit(t, m, "a configuration dnsmasq cannot start with")
		assert.NotContains(t, m.Out.String(), "mayu started")
		assert.Empty(t, l.NSPIDs(t))
	}

	t.Run("good config: started after dnsmasq serves", func(t *testing.T) {
		m := startMayu(t, l)
		require.Eventually(t, func() bool { return m.Out.Count("mayu started") > 0 }, 60*time.Second, 20*time.Millisecond,
			"mayu did not start")
		out := m.Out.String()
		serving := strings.Index(out, "dnsmasq serving")
		require.NotEqual(t, -1, serving)
		assert.Less(t, strings.Index(out, "sockets bound exclusively to interface br0"), serving)
		assert.Less(t, serving, strings.Index(out, "mayu started"))
		require.NoError(t, m.Stop())
		assert.Empty(t, l.NSPIDs(t))
	})
	t.Run("misspelt interface", func(t *testing.T) {
		m := startMayu(t, l, "--config", config(t, "interface: br0", "interface: bro0"))
		exits(t, m)
		assert.Contains(t, m.Out.String(), `network.interface "bro0": no such network interface`)
	})
	t.Run("missing tftproot", func(t *testing.T) {
		missing := filepath.Join(l.Dir, "missing-tftproot")
		m := startMayu(t, l, "--tftproot", missing)
		exits(t, m)
		assert.Contains(t, m.Out.String(), "--tftproot "+missing+": no such file or directory")
	})
	t.Run("port 67 held by another server", func(t *testing.T) {
		l.HoldUDP(t, "0.0.0.0:67")
		m := startMayu(t, l)
		exits(t, m)
		// mayu's own check finds the port taken before dnsmasq starts; had
		// it been taken between that check and dnsmasq's bind, dnsmasq's
		// reason and hint would name it (pkg/dnsmasq's TestNetStartFailures).
		assert.Contains(t, m.Out.String(), "UDP port 67 (DHCP) is already taken in this network namespace: address already in use")
	})
}

// requireFailedExit waits (bounded) for mayu to exit by itself, non-zero,
// over what why says.
func requireFailedExit(t *testing.T, m *mayuProc, why string) {
	t.Helper()
	select {
	case <-m.Done():
		require.Error(t, m.Err(), "mayu started with %s", why)
	case <-time.After(60 * time.Second):
		t.Fatalf("mayu did not stop on %s", why)
	}
}
