package dnsmasq

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
)

// fakeDnsmasq behaves like dnsmasq as far as the supervisor can tell:
// --test accepts a configuration unless it holds "broken-option", a run
// prints "started", re-reads (here: counts the lines of) the hosts file on
// SIGHUP and exits on SIGTERM (unless told to ignore it).
const fakeDnsmasq = `#!/bin/sh
conf= hosts= test=
for a in "$@"; do
  case "$a" in
    --test) test=1 ;;
    --conf-file=*) conf=${a#--conf-file=} ;;
    --dhcp-hostsfile=*) hosts=${a#--dhcp-hostsfile=} ;;
  esac
done
if [ -n "$test" ]; then
  n=$(grep -n broken-option "$conf" | cut -d: -f1 | head -n1)
  if [ -n "$n" ]; then echo "dnsmasq: bad option at line $n of $conf" >&2; exit 1; fi
  echo "dnsmasq: syntax check OK."; exit 0
fi
if grep -q ignore-term "$conf"; then trap '' TERM; else trap 'echo "dnsmasq: exiting on receipt of SIGTERM"; exit 0' TERM; fi
trap 'echo "dnsmasq-dhcp: read $hosts - $(grep -vc "^#" "$hosts") addresses"' HUP
echo "dnsmasq: started, version fake"
while :; do sleep 1 & wait $!; done
`

// logSink collects log records so tests can wait for dnsmasq's output.
type logSink struct {
	mu    sync.Mutex
	lines []string
	attrs []map[string]string
	at    []time.Time
}

func (l *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (l *logSink) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logSink) WithGroup(string) slog.Handler            { return l }
func (l *logSink) Handle(_ context.Context, r slog.Record) error {
	a := map[string]string{}
	r.Attrs(func(at slog.Attr) bool { a[at.Key] = at.Value.String(); return true })
	l.mu.Lock()
	l.lines = append(l.lines, r.Message)
	l.attrs = append(l.attrs, a)
	l.at = append(l.at, time.Now())
	l.mu.Unlock()
	return nil
}

// count returns how many messages contain sub.
func (l *logSink) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

// find returns the attributes of the last message containing sub.
func (l *logSink) find(sub string) (map[string]string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.lines) - 1; i >= 0; i-- {
		if strings.Contains(l.lines[i], sub) {
			return l.attrs[i], true
		}
	}
	return nil, false
}

// nth returns when the n-th (1-based) message containing sub was logged.
func (l *logSink) nth(sub string, n int) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, s := range l.lines {
		if strings.Contains(s, sub) {
			n--
			if n == 0 {
				return l.at[i], true
			}
		}
	}
	return time.Time{}, false
}

// tail returns the last n messages, for failure reports.
func (l *logSink) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	from := max(0, len(l.lines)-n)
	return strings.Join(l.lines[from:], "\n")
}

// waitCount waits (bounded) until at least n messages contain sub.
func (l *logSink) waitCount(t *testing.T, sub string, n int, timeout time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return l.count(sub) >= n }, timeout, 2*time.Millisecond,
		"waited %s for %d log lines containing %q (have %d)", timeout, n, sub, l.count(sub))
}

type fakeEnv struct {
	dir  string
	bin  string
	tmpl string
	sink *logSink
}

func newFakeEnv(t *testing.T, template string) *fakeEnv {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Fatalf("no /bin/sh: %v", err)
	}
	dir := t.TempDir()
	e := &fakeEnv{dir: dir, bin: filepath.Join(dir, "dnsmasq"), tmpl: filepath.Join(dir, "template.conf"), sink: &logSink{}}
	require.NoError(t, os.WriteFile(e.bin, []byte(fakeDnsmasq), 0o755))
	require.NoError(t, os.WriteFile(e.tmpl, []byte(template), 0o644))
	return e
}

func (e *fakeEnv) supervisor(t *testing.T) *Supervisor {
	t.Helper()
	s, err := New(Config{
		Binary: e.bin, Template: e.tmpl, RuntimeDir: filepath.Join(e.dir, "run"), Network: seedNetwork(),
		TFTPRoot: e.dir, HTTPPort: 4080, Logger: slog.New(e.sink),
		RestartBackoff: 20 * time.Millisecond, MaxRestartBackoff: 100 * time.Millisecond, StopTimeout: 300 * time.Millisecond,
	})
	require.NoError(t, err)
	// The fake dnsmasq serves a made-up machine with seedNetwork's
	// interface and addresses, from a TFTP root that has the boot loader.
	s.sys = seedMachine(t)
	require.NoError(t, os.WriteFile(filepath.Join(e.dir, BIOSBootFile), []byte("boot"), 0o644))
	return s
}

// run starts Run and returns a stop function that cancels it and returns
// its result, bounded.
func run(t *testing.T, s *Supervisor) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return within 10s of cancel")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func waitPID(t *testing.T, s *Supervisor, not int) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool { pid = s.PID(); return pid != 0 && pid != not }, 10*time.Second, 5*time.Millisecond,
		"no dnsmasq pid (other than %d)", not)
	return pid
}

// alive reports whether pid is a live process (a zombie waiting for a
// reaper that is not us counts as dead).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// TestMain doubles as a stand-in for mayu: with MAYU_DNSMASQ_HELPER set,
// the test binary runs a Supervisor and prints dnsmasq's PID, so a test can
// kill "mayu" and watch what happens to dnsmasq.
func TestMain(m *testing.M) {
	if os.Getenv("MAYU_DNSMASQ_HELPER") != "" {
		os.Exit(supervisorHelper())
	}
	os.Exit(m.Run())
}

func supervisorHelper() int {
	dir := os.Getenv("MAYU_DNSMASQ_HELPER")
	s, err := New(Config{Binary: filepath.Join(dir, "dnsmasq"), Template: filepath.Join(dir, "template.conf"),
		RuntimeDir: filepath.Join(dir, "run"), Network: seedNetwork(), TFTPRoot: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	go func() {
		for s.PID() == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Printf("PID %d\n", s.PID())
	}()
	if err := s.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return 1
}

// TestDnsmasqDiesWithKilledMayu: SIGKILL to the process running the
// supervisor takes dnsmasq with it (parent death signal), so no orphan keeps
// answering DHCP.
func TestDnsmasqDiesWithKilledMayu(t *testing.T) {
	e := newFakeEnv(t, "ok\n")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MAYU_DNSMASQ_HELPER="+e.dir)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pidLine := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "PID ") {
				pidLine <- sc.Text()
			}
		}
	}()
	var pid int
	select {
	case l := <-pidLine:
		_, err := fmt.Sscanf(l, "PID %d", &pid)
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("helper did not report a dnsmasq PID")
	}
	require.True(t, alive(pid))
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	require.Eventually(t, func() bool { return !alive(pid) }, 10*time.Second, 10*time.Millisecond,
		"dnsmasq pid %d outlived the killed supervisor", pid)
}

func installed(mac string, st host.State) []host.Host {
	return []host.Host{{Serial: "s1", State: st, MacAddresses: []string{mac}, InternalAddr: net.ParseIP("192.168.2.21")}}
}

func TestSupervisorSyncSignalsWithoutRestart(t *testing.T) {
	e := newFakeEnv(t, "listen-address={{.Network.BindAddr}}\n")
	s := e.supervisor(t)
	stop := run(t, s)
	pid := waitPID(t, s, 0)
	e.sink.waitCount(t, "started, version fake", 1, 10*time.Second)
	_, hostsPath, _ := s.Paths()

	states := []host.State{host.Installed, host.Configured, host.Running, host.Installing}
	for i := 0; i < 40; i++ {
		st := states[i%len(states)]
		s.Sync(installed("00:11:22:33:44:55", st))
		e.sink.waitCount(t, "dnsmasq-dhcp: read "+hostsPath, i+1, 10*time.Second)
		b, err := os.ReadFile(hostsPath)
		require.NoError(t, err)
		if st == host.Installed || st == host.Running {
			assert.Contains(t, string(b), "00:11:22:33:44:55,ignore\n")
		} else {
			assert.NotContains(t, string(b), "00:11:22:33:44:55")
		}
	}
	assert.Equal(t, pid, s.PID(), "dnsmasq was restarted by a host change")
	assert.Equal(t, 0, s.Restarts())
	attrs, ok := e.sink.find("hosts file rewritten")
	require.True(t, ok)
	assert.NotEmpty(t, attrs["latency"])

	// A Sync that changes nothing dnsmasq sees (another host's unrelated
	// field) does not signal at all.
	s.Sync(installed("00:11:22:33:44:55", host.Installing))
	s.Sync(installed("00:11:22:33:44:55", host.Configured))
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, 40, e.sink.count("dnsmasq-dhcp: read "))

	require.NoError(t, stop())
	assert.Equal(t, 0, s.PID())
	assert.False(t, alive(pid), "dnsmasq pid %d still alive after stop", pid)
	assert.Equal(t, 1, e.sink.count("exiting on receipt of SIGTERM"))
}

func TestSyncWarnsOnceAboutBadMAC(t *testing.T) {
	e := newFakeEnv(t, "ok\n")
	s := e.supervisor(t)
	bad := []host.Host{{Serial: "b", State: host.Installed, MacAddresses: []string{"zz:zz"}}}
	for i := 0; i < 3; i++ {
		s.Sync(bad)
	}
	assert.Equal(t, 1, e.sink.count("invalid MAC address"))
	attrs, _ := e.sink.find("invalid MAC address")
	assert.Equal(t, `b: "zz:zz"`, attrs["mac"])
}

func TestSupervisorCoalescesBursts(t *testing.T) {
	e := newFakeEnv(t, "listen-address={{.Network.BindAddr}}\n")
	s := e.supervisor(t)
	run(t, s)
	pid := waitPID(t, s, 0)
	e.sink.waitCount(t, "started, version fake", 1, 10*time.Second)
	_, hostsPath, _ := s.Paths()
	for i := 0; i < 200; i++ {
		s.Sync(installed(fmt.Sprintf("00:11:22:33:44:%02x", i), host.Installed))
	}
	// The last state wins, whatever happened in between: only the last
	// MAC is ignored.
	want := "00:11:22:33:44:c7,ignore\n"
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(hostsPath)
		return strings.HasSuffix(string(b), "Do not edit.\n"+want)
	}, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, pid, s.PID())
	t.Logf("200 Syncs in a burst caused %d hosts file rewrites", e.sink.count("hosts file rewritten"))
	assert.Less(t, e.sink.count("hosts file rewritten"), 200)
}

func TestSupervisorRestartsCrashedChild(t *testing.T) {
	e := newFakeEnv(t, "listen-address={{.Network.BindAddr}}\n")
	s := e.supervisor(t)
	s.Sync(installed("00:11:22:33:44:55", host.Installed))
	stop := run(t, s)
	for i := 1; i <= 3; i++ {
		pid := waitPID(t, s, 0)
		e.sink.waitCount(t, "started, version fake", i, 10*time.Second)
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		waitPID(t, s, pid)
		assert.Equal(t, i, s.Restarts())
	}
	attrs, ok := e.sink.find("exited unexpectedly")
	require.True(t, ok)
	assert.Equal(t, "signal: killed", attrs["status"])
	assert.Contains(t, attrs["last_output"], "started, version fake")
	// The restarted child still gets host changes by SIGHUP.
	pid := waitPID(t, s, 0)
	e.sink.waitCount(t, "started, version fake", 4, 10*time.Second)
	s.Sync(installed("00:11:22:33:44:55", host.Configured))
	e.sink.waitCount(t, "dnsmasq-dhcp: read ", 1, 10*time.Second)
	assert.Equal(t, pid, s.PID())
	require.NoError(t, stop())
	assert.False(t, alive(pid))
}

func TestSupervisorLegacyTemplateRestarts(t *testing.T) {
	e := newFakeEnv(t, legacyTemplate)
	s := e.supervisor(t)
	run(t, s)
	pid := waitPID(t, s, 0)
	confPath, _, _ := s.Paths()
	s.Sync(installed("00:11:22:33:44:55", host.Installed))
	pid2 := waitPID(t, s, pid)
	assert.False(t, alive(pid))
	assert.Equal(t, 1, s.Restarts())
	b, err := os.ReadFile(confPath)
	require.NoError(t, err)
	assert.Contains(t, string(b), "dhcp-mac=set:installed,00:11:22:33:44:55\n")
	s.Sync(installed("00:11:22:33:44:55", host.Configured))
	waitPID(t, s, pid2)
	b, err = os.ReadFile(confPath)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "dhcp-mac=")
}

func TestSupervisorReload(t *testing.T) {
	e := newFakeEnv(t, "listen-address={{.Network.BindAddr}}\n")
	s := e.supervisor(t)
	run(t, s)
	pid := waitPID(t, s, 0)
	confPath, _, _ := s.Paths()

	// A broken template is refused with dnsmasq's complaint; dnsmasq keeps
	// running with the old configuration.
	require.NoError(t, os.WriteFile(e.tmpl, []byte("listen-address={{.Network.BindAddr}}\nbroken-option\n"), 0o644))
	err := s.Reload(seedNetwork())
	require.ErrorIs(t, err, ErrConfigRejected)
	assert.Contains(t, err.Error(), "bad option at line 2")
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, pid, s.PID())

	// Same rendering: nothing to do.
	require.NoError(t, os.WriteFile(e.tmpl, []byte("listen-address={{.Network.BindAddr}}\n"), 0o644))
	require.NoError(t, s.Reload(seedNetwork()))
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, pid, s.PID())

	// A new bind address changes the configuration: restart.
	n := seedNetwork()
	n.BindAddr = "192.168.3.2"
	require.NoError(t, s.Reload(n))
	waitPID(t, s, pid)
	b, err := os.ReadFile(confPath)
	require.NoError(t, err)
	assert.Equal(t, "listen-address=192.168.3.2\n", string(b))
}

// TestSupervisorRetriesFailedApply: a legacy template whose re-rendering
// dnsmasq rejects keeps the old dnsmasq running with an up-to-date hosts
// file, and the change is retried without another Sync once the cause is
// gone.
func TestSupervisorRetriesFailedApply(t *testing.T) {
	e := newFakeEnv(t, "{{range .Network.IgnoredHosts}}broken-option {{.}}{{end}}\n")
	s := e.supervisor(t)
	run(t, s)
	pid := waitPID(t, s, 0)
	s.Sync(installed("00:11:22:33:44:55", host.Installed))
	e.sink.waitCount(t, "cannot apply change", 1, 10*time.Second)
	assert.Equal(t, pid, s.PID())
	assert.Equal(t, 0, s.Restarts())
	// The hosts file still took the change: the machine is ignored.
	_, hostsPath, _ := s.Paths()
	e.sink.waitCount(t, "dnsmasq-dhcp: read "+hostsPath, 1, 10*time.Second)
	b, err := os.ReadFile(hostsPath)
	require.NoError(t, err)
	assert.Contains(t, string(b), "00:11:22:33:44:55,ignore\n")
	// Now dnsmasq accepts it; replace the fake by rename so the running
	// shell keeps reading the old file.
	fixed := e.bin + ".new"
	require.NoError(t, os.WriteFile(fixed, []byte(strings.Replace(fakeDnsmasq, "grep -n broken-option", "grep -n never-matches", 1)), 0o755))
	require.NoError(t, os.Rename(fixed, e.bin))
	// MaxRestartBackoff is 100ms here: the retry comes without a Sync.
	waitPID(t, s, pid)
	assert.Equal(t, 1, s.Restarts())
}

func TestSupervisorKillsChildIgnoringSIGTERM(t *testing.T) {
	e := newFakeEnv(t, "# ignore-term\n")
	s := e.supervisor(t)
	stop := run(t, s)
	pid := waitPID(t, s, 0)
	e.sink.waitCount(t, "started, version fake", 1, 10*time.Second)
	require.NoError(t, stop())
	assert.False(t, alive(pid))
	assert.Equal(t, 1, e.sink.count("did not stop after SIGTERM"))
}

func TestSupervisorFirstStartErrors(t *testing.T) {
	e := newFakeEnv(t, "broken-option\n")
	s := e.supervisor(t)
	err := s.Run(context.Background())
	require.ErrorIs(t, err, ErrConfigRejected)

	e2 := newFakeEnv(t, "ok\n")
	s2, err := New(Config{Binary: filepath.Join(e2.dir, "missing"), Template: e2.tmpl, RuntimeDir: e2.dir, Network: seedNetwork(), TFTPRoot: e2.dir})
	require.NoError(t, err)
	err = s2.Run(context.Background())
	require.Error(t, err)
	assert.False(t, errors.Is(err, ErrConfigRejected))
}

func TestSupervisorRunTwice(t *testing.T) {
	e := newFakeEnv(t, "ok\n")
	s := e.supervisor(t)
	run(t, s)
	waitPID(t, s, 0)
	require.ErrorIs(t, s.Run(context.Background()), ErrAlreadyRunning)
}

func TestOutputLogSplitsLines(t *testing.T) {
	sink := &logSink{}
	o := &outputLog{log: slog.New(sink), tail: lastLines{n: 2}}
	for _, chunk := range []string{"dnsmasq: one\ndnsm", "asq: two\r\n\n", "dnsmasq: failed to bind\n", "tail"} {
		_, err := o.Write([]byte(chunk))
		require.NoError(t, err)
	}
	o.flush()
	assert.Equal(t, []string{"dnsmasq: one", "dnsmasq: two", "dnsmasq: failed to bind", "tail"}, sink.lines)
	assert.Equal(t, "dnsmasq: failed to bind\ntail", o.last())
}
