package dnsmasq

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
)

// startFake is the fake dnsmasq with start-up behaviours a configuration
// line picks: die-at-start=NAME exits like dnsmasq on an unknown interface
// (after its "started" line, as the real one does with a TFTP directory it
// cannot read); late-hup installs the SIGHUP handler only after half a
// second; no-hup never does.
var startFake = strings.Replace(fakeDnsmasq, hupTrap, `d=$(sed -n 's/^die-at-start=//p' "$conf")
if [ -n "$d" ]; then
  echo "dnsmasq: started, version fake"
  echo "dnsmasq: unknown interface $d" >&2; echo "dnsmasq: FAILED to start up" >&2; exit 2
fi
if grep -q no-hup "$conf"; then
  trap '' HUP
elif grep -q late-hup "$conf"; then
  trap '' HUP; sleep 0.5
  `+hupTrap+`  echo "dnsmasq: handler installed"
else
  `+hupTrap+`fi
`, 1)

// hupTrap is the fake's SIGHUP handler line. startFake replaces it rather
// than overriding it later, so that no-hup and late-hup never have a
// moment, however short on a loaded machine, in which the handler is
// already installed.
const hupTrap = "trap 'echo \"dnsmasq-dhcp: read $hosts - $(grep -vc \"^#\" \"$hosts\") addresses\"' HUP\n"

func newStartEnv(t *testing.T, template string) (*fakeEnv, *Supervisor) {
	t.Helper()
	require.NotEqual(t, fakeDnsmasq, startFake, "the fake's start line moved")
	e := newFakeEnv(t, template)
	require.NoError(t, os.WriteFile(e.bin, []byte(startFake), 0o755))
	return e, e.supervisor(t)
}

// startedPIDs are the PIDs of every dnsmasq the supervisor started.
func startedPIDs(t *testing.T, sink *logSink) []int {
	t.Helper()
	sink.mu.Lock()
	defer sink.mu.Unlock()
	var pids []int
	for i, l := range sink.lines {
		if l == "dnsmasq started" {
			pid, err := strconv.Atoi(sink.attrs[i]["pid"])
			require.NoError(t, err)
			pids = append(pids, pid)
		}
	}
	return pids
}

// index is the position of the first message containing sub, -1 if none.
func (l *logSink) index(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, s := range l.lines {
		if strings.Contains(s, sub) {
			return i
		}
	}
	return -1
}

func TestStartFailsWithDnsmasqReasonAndHint(t *testing.T) {
	e, s := newStartEnv(t, "interface={{.Network.Interface}}\ndie-at-start={{.Network.Interface}}\n")
	err := s.Start(context.Background())
	require.ErrorIs(t, err, ErrStart)
	assert.Equal(t, "dnsmasq: cannot start: dnsmasq exited during start-up (exit status 2): "+
		"dnsmasq: unknown interface eth1 / dnsmasq: FAILED to start up; "+
		`hint: network.interface "eth1" is not a network interface of this machine (see `+"`ip link`)", err.Error())
	assert.Zero(t, s.PID())
	pids := startedPIDs(t, e.sink)
	require.Len(t, pids, 1)
	assert.False(t, alive(pids[0]))
	assert.Zero(t, e.sink.count("dnsmasq serving"))
	// Run without Start reports the same on the first start, and does not
	// retry.
	err = s.Run(context.Background())
	require.ErrorIs(t, err, ErrStart)
	assert.Len(t, startedPIDs(t, e.sink), 2)
}

func TestStartWaitsUntilDnsmasqServes(t *testing.T) {
	e, s := newStartEnv(t, "listen-address={{.Network.BindAddr}}\n# late-hup\n")
	t0 := time.Now()
	require.NoError(t, s.Start(context.Background()))
	took := time.Since(t0)
	pid := s.PID()
	require.NotZero(t, pid)
	assert.True(t, alive(pid))
	ready, serving := e.sink.index("handler installed"), e.sink.index("dnsmasq serving")
	require.NotEqual(t, -1, ready, "Start returned before dnsmasq could take SIGHUP")
	assert.Less(t, ready, serving)
	assert.GreaterOrEqual(t, took, 500*time.Millisecond+startSettle)
	attrs, _ := e.sink.find("dnsmasq serving")
	assert.Equal(t, strconv.Itoa(pid), attrs["pid"])
	require.ErrorIs(t, s.Start(context.Background()), ErrAlreadyRunning)

	// Run supervises the dnsmasq Start started.
	stop := run(t, s)
	s.Sync(installed("00:11:22:33:44:55", host.Installed))
	e.sink.waitCount(t, "dnsmasq-dhcp: read ", 1, 10*time.Second)
	assert.Equal(t, pid, s.PID())
	require.NoError(t, stop())
	assert.False(t, alive(pid))
	assert.Equal(t, 0, s.Restarts())
	assert.Len(t, startedPIDs(t, e.sink), 1)
}

func TestStartGivesUpOnDnsmasqThatNeverGetsReady(t *testing.T) {
	e := newFakeEnv(t, "# no-hup\n")
	require.NoError(t, os.WriteFile(e.bin, []byte(startFake), 0o755))
	s, err := New(Config{Binary: e.bin, Template: e.tmpl, RuntimeDir: e.dir, Network: seedNetwork(), TFTPRoot: e.dir,
		Logger: slog.New(e.sink), StartTimeout: 700 * time.Millisecond, StopTimeout: 300 * time.Millisecond})
	require.NoError(t, err)
	s.sys = seedMachine(t)
	err = s.Start(context.Background())
	require.ErrorIs(t, err, ErrStart)
	pids := startedPIDs(t, e.sink)
	require.Len(t, pids, 1)
	assert.Contains(t, err.Error(), fmt.Sprintf("dnsmasq (pid %d) did not install its SIGHUP handler within 700ms; its last output: dnsmasq: started, version fake", pids[0]))
	assert.False(t, alive(pids[0]), "the dnsmasq that never got ready is still running")
	assert.Zero(t, s.PID())
}

func TestStartRefusesWhatPreflightFinds(t *testing.T) {
	e, s := newStartEnv(t, "interface={{.Network.Interface}}\nlisten-address={{.Network.BindAddr}}\n")
	s.mu.Lock()
	s.network.Interface = "eht1"
	s.mu.Unlock()
	err := s.Start(context.Background())
	require.ErrorIs(t, err, ErrStart)
	assert.Contains(t, err.Error(), `network.interface "eht1": no such network interface`)
	assert.Empty(t, startedPIDs(t, e.sink), "dnsmasq started although the check failed")
}

// runServing runs s until the test ends and returns the PID of the dnsmasq
// that serves, the path of its configuration and the configuration.
func runServing(t *testing.T, s *Supervisor) (int, string, []byte) {
	t.Helper()
	run(t, s)
	pid := waitPID(t, s, 0)
	confPath, _, _ := s.Paths()
	conf, err := os.ReadFile(confPath)
	require.NoError(t, err)
	return pid, confPath, conf
}

// TestReloadThatFailsChecksKeepsDnsmasq: a reload naming an interface the
// machine lacks is refused before the running dnsmasq is touched.
func TestReloadThatFailsChecksKeepsDnsmasq(t *testing.T) {
	e, s := newStartEnv(t, "interface={{.Network.Interface}}\nlisten-address={{.Network.BindAddr}}\n")
	pid, confPath, before := runServing(t, s)
	n := seedNetwork()
	n.Interface = "eth9"
	n.BindAddr = "192.168.9.2"
	err := s.Reload(n)
	require.ErrorIs(t, err, ErrStart)
	assert.Contains(t, err.Error(), `network.interface "eth9": no such network interface`)
	assert.Contains(t, err.Error(), "network.bind_addr 192.168.9.2: not an address of any network interface")
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, pid, s.PID())
	assert.True(t, alive(pid))
	assert.Equal(t, 0, s.Restarts())
	after, err := os.ReadFile(confPath)
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after))
	assert.Len(t, startedPIDs(t, e.sink), 1)
}

// TestReloadThatFailsToStartBringsOldConfigBack: a reload that passes the
// checks but that dnsmasq cannot start with (here: it exits at start-up)
// is reported, and dnsmasq serves again with the previous configuration.
// Host changes afterwards do not retry the failed configuration.
func TestReloadThatFailsToStartBringsOldConfigBack(t *testing.T) {
	e, s := newStartEnv(t, "listen-address={{.Network.BindAddr}}\n")
	pid, confPath, good := runServing(t, s)

	require.NoError(t, os.WriteFile(e.tmpl, []byte("listen-address={{.Network.BindAddr}}\ndie-at-start=eth1\n"), 0o644))
	err := s.Reload(seedNetwork())
	require.ErrorIs(t, err, ErrStart)
	assert.Contains(t, err.Error(), "unknown interface eth1")
	assert.Contains(t, err.Error(), "dnsmasq runs with the previous configuration again")
	back := s.PID()
	require.NotZero(t, back, "no dnsmasq serves after the failed reload")
	assert.NotEqual(t, pid, back)
	assert.True(t, alive(back))
	b, err := os.ReadFile(confPath)
	require.NoError(t, err)
	assert.Equal(t, string(good), string(b))
	assert.Len(t, startedPIDs(t, e.sink), 3, "old, failed new, old again")

	// The template still holds the failing line; host changes only
	// signal the running dnsmasq.
	s.Sync(installed("00:11:22:33:44:55", host.Installed))
	e.sink.waitCount(t, "dnsmasq-dhcp: read ", 1, 10*time.Second)
	assert.Equal(t, back, s.PID())
	assert.Len(t, startedPIDs(t, e.sink), 3)

	// A fixed template is taken.
	require.NoError(t, os.WriteFile(e.tmpl, []byte("listen-address={{.Network.BindAddr}}\n# fixed\n"), 0o644))
	require.NoError(t, s.Reload(seedNetwork()))
	assert.NotEqual(t, back, s.PID())
	b, err = os.ReadFile(confPath)
	require.NoError(t, err)
	assert.Contains(t, string(b), "# fixed")
}

func TestHeldUDPPortsAreTheProcessOwn(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	held, err := heldUDPPorts(os.Getpid())
	require.NoError(t, err)
	assert.True(t, held[port], "own UDP port %d not found in %v", port, held)

	// Another process in the same namespace does not hold it.
	cmd := exec.Command("sleep", "30")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	other, err := heldUDPPorts(cmd.Process.Pid)
	require.NoError(t, err)
	assert.False(t, other[port])

	pc6, err := net.ListenPacket("udp6", "[::1]:0")
	if err == nil {
		defer pc6.Close()
		held, err = heldUDPPorts(os.Getpid())
		require.NoError(t, err)
		assert.True(t, held[pc6.LocalAddr().(*net.UDPAddr).Port], "IPv6 socket not found")
	}
	_, err = heldUDPPorts(1 << 30)
	assert.Error(t, err)
}

func TestStartHints(t *testing.T) {
	o := origins{network: seedNetwork(), tftpRoot: "/srv/tftp", template: "/t.conf"}
	tests := []struct{ out, want string }{
		{"dnsmasq: failed to create listening socket for 192.168.2.2: Cannot assign requested address",
			"network.bind_addr 192.168.2.2 is not an address of this machine: it must be an address of network.interface (see `ip addr`)"},
		{"dnsmasq: failed to create listening socket for 192.168.2.2: Address already in use",
			"another process already holds port 53 (DNS) or 69 (TFTP) on 192.168.2.2 (network.bind_addr): another dnsmasq, DNS or TFTP server? (see `ss -lunp`)"},
		{"dnsmasq: failed to bind DHCP server socket: Address already in use",
			"another process already holds UDP port 67 (DHCP): another DHCP server runs here; stop it, or run mayu with --no-dnsmasq (see `ss -lunp 'sport = :67'`)"},
		{"dnsmasq[9]: TFTP directory /srv/tftp inaccessible: No such file or directory\ndnsmasq[9]: FAILED to start up",
			"--tftproot /srv/tftp must be an existing directory dnsmasq can read"},
		{"dnsmasq: cannot open or create lease file /run/x: Permission denied", "--runtime-dir must be writable: dnsmasq keeps its lease file there"},
		{"dnsmasq: failed to create listening socket for port 53: Permission denied",
			"dnsmasq needs root (or CAP_NET_BIND_SERVICE, CAP_NET_RAW and CAP_NET_ADMIN) to bind its ports: run mayu as root"},
		{"dnsmasq: unknown interface br7", `interface= in the dnsmasq template /t.conf "br7" is not a network interface of this machine (see ` + "`ip link`)"},
	}
	for _, tt := range tests {
		assert.Equal(t, []string{tt.want}, startHints(tt.out, o), tt.out)
	}
	assert.Empty(t, startHints("dnsmasq: something new", o))
}
