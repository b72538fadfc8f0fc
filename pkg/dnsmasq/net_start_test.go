//go:build nettest

package dnsmasq

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/proctest/netlab"
)

// nsSys is this machine as seen from network namespace ns, where the
// test's dnsmasq runs: the real checks, asked there.
type nsSys struct{ ns string }

func (n nsSys) Interfaces() (ifs []netIface, err error) {
	werr := netlab.InNetns(n.ns, func() error { ifs, err = realSys{}.Interfaces(); return nil })
	if werr != nil {
		return nil, werr
	}
	return ifs, err
}
func (nsSys) Euid() int                                  { return os.Geteuid() }
func (nsSys) HeldUDPPorts(pid int) (map[int]bool, error) { return heldUDPPorts(pid) }

// liar is a machine that claims to have interface br9 with 192.168.2.3:
// the checks pass, so dnsmasq itself meets what is missing.
type liar struct{ nsSys }

func (l liar) Interfaces() ([]netIface, error) {
	ifs, err := l.nsSys.Interfaces()
	_, n, _ := net.ParseCIDR("192.168.2.3/24")
	n.IP = net.ParseIP("192.168.2.3")
	return append(ifs, netIface{Name: "br9", Addrs: []*net.IPNet{n}}), err
}

// runUntilCleanup runs the started supervisor's Run loop until the test
// ends, then stops it (20s at most) and checks that Run returned cleanly.
func runUntilCleanup(t *testing.T, s *Supervisor) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Error("Run did not return within 20s of cancel")
		}
	})
}

// startOnce runs Start with a bound and checks that a failed start leaves
// nothing running.
func startOnce(t *testing.T, l *lab, s *Supervisor) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t0 := time.Now()
	err := s.Start(ctx)
	t.Logf("FIGURE Start returned after %s: %v", time.Since(t0).Round(time.Millisecond), err)
	if err != nil {
		assert.Zero(t, s.PID())
		assert.Empty(t, l.NSPIDs(t), "a dnsmasq is left running after the failed start")
	}
	return err
}

func TestNetStartFailures(t *testing.T) {
	l := newLab(t)
	tests := []struct {
		name string
		edit func(t *testing.T, s *Supervisor)
		want []string
		ran  bool // dnsmasq itself met the problem (it was started)
	}{
		{"misspelt interface", func(t *testing.T, s *Supervisor) { s.network.Interface = "bro0" },
			[]string{`network.interface "bro0": no such network interface (this machine has: br0, lo, vp0, vp1, vp2)`}, false},
		{"bind_addr not on the interface", func(t *testing.T, s *Supervisor) { s.network.BindAddr = "192.168.2.3" },
			[]string{"network.bind_addr 192.168.2.3: not an address of any network interface (br0 has 192.168.2.2/24)"}, false},
		{"missing tftproot", func(t *testing.T, s *Supervisor) { s.cfg.TFTPRoot = filepath.Join(l.Dir, "no-tftproot") },
			[]string{"--tftproot " + filepath.Join(l.Dir, "no-tftproot") + ": no such file or directory"}, false},
		{"boot loader unreadable by others", func(t *testing.T, s *Supervisor) {
			dir := filepath.Join(l.Dir, "closed-tftproot")
			require.NoError(t, os.MkdirAll(dir, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, BIOSBootFile), []byte("boot"), 0o600))
			s.cfg.TFTPRoot = dir
		}, []string{"boot file undionly.kpxe: mode 0600, not readable by others"}, false},
		{"dnsmasq meets the unknown interface itself", func(t *testing.T, s *Supervisor) {
			s.network.Interface = "br9"
			s.sys = liar{nsSys{l.Prov}}
		}, []string{"dnsmasq exited during start-up (exit status 2): dnsmasq: unknown interface br9",
			`hint: network.interface "br9" is not a network interface of this machine`}, true},
		{"dnsmasq meets the missing address itself", func(t *testing.T, s *Supervisor) {
			s.network.BindAddr = "192.168.2.3"
			s.sys = liar{nsSys{l.Prov}}
		}, []string{"failed to create listening socket for 192.168.2.3: Cannot assign requested address",
			"hint: network.bind_addr 192.168.2.3 is not an address of this machine"}, true},
		{"port 67 already bound", func(t *testing.T, s *Supervisor) { l.HoldUDP(t, "0.0.0.0:67") },
			[]string{"dnsmasq: failed to bind DHCP server socket: Address already in use",
				"hint: another process already holds UDP port 67 (DHCP)"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &logSink{}
			s := l.supervisor(t, true, sink)
			tt.edit(t, s)
			err := startOnce(t, l, s)
			require.ErrorIs(t, err, ErrStart)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.Equal(t, tt.ran, sink.count("dnsmasq started") > 0)
			assert.Zero(t, sink.count("dnsmasq serving"))
		})
	}
}

func TestNetStartAndReload(t *testing.T) {
	l := newLab(t)
	sink := &logSink{}
	s := l.supervisor(t, true, sink)
	require.NoError(t, startOnce(t, l, s))
	pid := s.PID()
	require.NotZero(t, pid)
	// Start returned: dnsmasq holds DHCP and TFTP already, and told so
	// before mayu's "serving".
	held, err := heldUDPPorts(pid)
	require.NoError(t, err)
	assert.True(t, held[67] && held[69], "Start returned before dnsmasq bound 67 and 69: %v", held)
	bound := sink.index("sockets bound exclusively to interface br0")
	require.NotEqual(t, -1, bound)
	assert.Less(t, bound, sink.index("dnsmasq serving"))
	assert.Less(t, sink.index("TFTP root is"), sink.index("dnsmasq serving"))

	// Cleanups run last first: this one after runUntilCleanup's stop.
	t.Cleanup(func() { assert.Empty(t, l.NSPIDs(t), "processes left in the provisioning namespace") })
	runUntilCleanup(t, s)
	require.NotNil(t, l.DHCP(t, "c1", 10), "no DHCP right after Start")

	t.Run("reload with a bad interface keeps dnsmasq", func(t *testing.T) {
		n := l.Network(true)
		n.Interface = "br9"
		err := s.Reload(n)
		require.ErrorIs(t, err, ErrStart)
		assert.Contains(t, err.Error(), `network.interface "br9": no such network interface`)
		assert.Equal(t, pid, s.PID())
		assert.Equal(t, 0, s.Restarts())
		assert.NotNil(t, l.DHCP(t, "c2", 5), "no DHCP after the refused reload")
		assert.Equal(t, pid, s.PID())
	})

	t.Run("reload that dnsmasq cannot start with brings the old configuration back", func(t *testing.T) {
		// An address on another interface whose DNS port another server
		// holds: every check passes (the address exists), dnsmasq fails to
		// bind it. (Not an address of br0: the old configuration listens
		// on every address of br0 and would fail as well.)
		l.Run(t, "ip", "-n", l.Prov, "link", "add", "dm0", "type", "bridge")
		l.Run(t, "ip", "-n", l.Prov, "addr", "add", "192.168.5.1/24", "dev", "dm0")
		l.Run(t, "ip", "-n", l.Prov, "link", "set", "dm0", "up")
		l.HoldUDP(t, "192.168.5.1:53")
		n := l.Network(true)
		n.BindAddr = "192.168.5.1"
		err := s.Reload(n)
		require.ErrorIs(t, err, ErrStart)
		assert.Contains(t, err.Error(), "failed to create listening socket for 192.168.5.1: Address already in use")
		assert.Contains(t, err.Error(), "hint: another process already holds port 53 (DNS) or 69 (TFTP) on 192.168.5.1 (network.bind_addr)")
		assert.Contains(t, err.Error(), "dnsmasq runs with the previous configuration again")
		back := s.PID()
		require.NotZero(t, back)
		assert.NotEqual(t, pid, back)
		conf, _, _ := s.Paths()
		b, err := os.ReadFile(conf)
		require.NoError(t, err)
		assert.Contains(t, string(b), "listen-address="+netlab.ProvAddr+"\n")
		ls := l.DHCP(t, "c1", 10)
		require.NotNil(t, ls, "no DHCP after falling back")
		assert.Equal(t, "undionly.kpxe", ls["boot_file"])
		pid = back
	})

	t.Run("a crash later is restarted with backoff as before", func(t *testing.T) {
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		next := waitPID(t, s, pid)
		held, err := heldUDPPorts(next)
		require.NoError(t, err)
		assert.True(t, held[67] && held[69])
		_, ok := sink.find("exited unexpectedly")
		assert.True(t, ok)
		assert.NotNil(t, l.DHCP(t, "c2", 10))
	})
}
