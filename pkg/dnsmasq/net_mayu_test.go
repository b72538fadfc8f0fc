//go:build nettest

package dnsmasq

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
)

// The built daemon; make test-net builds it first.
const mayuBin = "../../bin/mayu"

const mayuNetConfig = `default_coreos_version: 1068.6.0
network:
  pxe: true
  interface: br0
  bind_addr: 192.168.2.2
  bootstrap_range: {start: 192.168.2.100, end: 192.168.2.200}
  ip_range: {start: 192.168.2.21, end: 192.168.2.99}
  dns: [192.168.2.2]
  router: 192.168.2.2
profiles:
  - name: default
    tags: ["role-worker=true"]
templates_env:
  ssh_authorized_keys: ["ssh-rsa AAAAB3Nza test@example"]
  mayu_http_endpoint: "http://192.168.2.2:4080"
`

// netnsClient is an HTTP client whose sockets are created inside the
// namespace ns, so the test (in the host's namespace) reaches mayu there
// without any route between the two.
func netnsClient(t *testing.T, ns string) *http.Client {
	t.Helper()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			return nil, err
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			return nil, err
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			return nil, fmt.Errorf("setns %s: %w", ns, err)
		}
		conn, derr := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays locked and in the wrong namespace; the
			// runtime discards it when this goroutine ends.
			if conn != nil {
				conn.Close()
			}
			return nil, fmt.Errorf("setns back: %w", err)
		}
		runtime.UnlockOSThread()
		return conn, derr
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

type mayuProc struct {
	t      *testing.T
	l      *lab
	cmd    *exec.Cmd
	out    *proctest.Output
	done   chan error
	client *http.Client
	base   string
	run    string // runtime dir
}

// startMayu runs bin/mayu inside the provisioning namespace with real
// dnsmasq, from the repository root so the default template paths resolve.
func startMayu(t *testing.T, l *lab, extra ...string) *mayuProc {
	t.Helper()
	bin, err := filepath.Abs(mayuBin)
	require.NoError(t, err)
	if _, err := os.Stat(bin); err != nil {
		skipOrFail(t, "%s missing: run make build first (%v)", mayuBin, err)
	}
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(mayuNetConfig), 0o644))
	m := &mayuProc{t: t, l: l, out: &proctest.Output{}, done: make(chan error, 1),
		client: netnsClient(t, l.prov), base: "http://" + provAddr + ":4080", run: filepath.Join(dir, "run")}
	args := append([]string{"netns", "exec", l.prov, bin,
		"--config", cfg, "--cluster-directory", filepath.Join(dir, "cluster"), "--no-tls",
		"--http-port", "4080", "--http-bind-address", provAddr, "--tftproot", l.tftproot,
		"--runtime-dir", m.run, "--dnsmasq", DefaultBinary,
		"--static-html-path", dir, "--yochu-path", dir, "--images-cache-dir", dir}, extra...)
	m.cmd = exec.Command("ip", args...)
	m.cmd.Dir = root
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	require.NoError(t, m.cmd.Start())
	go func() { m.done <- m.cmd.Wait() }()
	t.Cleanup(func() {
		m.stop()
		if t.Failed() {
			out := m.out.String()
			t.Logf("mayu output (last 6000 bytes):\n%s", out[max(0, len(out)-6000):])
		}
	})
	return m
}

// stop sends SIGTERM and waits (bounded), then SIGKILL.
func (m *mayuProc) stop() error {
	if m.cmd.ProcessState != nil {
		return nil
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-m.done:
		m.done <- err
		return err
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		err := <-m.done
		m.done <- err
		return fmt.Errorf("mayu did not stop within 30s of SIGTERM (killed): %v", err)
	}
}

func (m *mayuProc) req(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	r, err := http.NewRequest(method, m.base+path, strings.NewReader(body))
	require.NoError(t, err)
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	resp, err := m.client.Do(r)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// dnsmasqPID is the process in the namespace that runs dnsmasq -k (not
// mayu, not a passing dnsmasq --test).
func (m *mayuProc) dnsmasqPID(t *testing.T) int {
	t.Helper()
	for _, f := range m.l.nsPIDs(t) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err != nil || pid == m.cmd.Process.Pid {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && slices.Contains(strings.Split(string(b), "\x00"), "-k") {
			return pid
		}
	}
	return 0
}

func (m *mayuProc) waitDnsmasq(t *testing.T, not int) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool { pid = m.dnsmasqPID(t); return pid != 0 && pid != not },
		30*time.Second, 20*time.Millisecond, "no dnsmasq (other than %d) in the namespace", not)
	return pid
}

func TestNetMayuDaemon(t *testing.T) {
	l := newLab(t)
	m := startMayu(t, l)
	require.Eventually(t, func() bool {
		r, err := m.client.Get(m.base + "/")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	}, 60*time.Second, 50*time.Millisecond, "mayu did not answer HTTP")
	pid := m.waitDnsmasq(t, 0)
	hostsPath := filepath.Join(m.run, hostsName)
	readHosts := "read " + hostsPath
	require.Eventually(t, func() bool { return m.out.Count(readHosts) >= 1 }, 30*time.Second, 10*time.Millisecond)
	require.NotNil(t, l.dhcp(t, "c1", 10), "machine client never got a lease")
	require.NotNil(t, l.dhcp(t, "c2", 10), "bystander client never got a lease")

	serial := "mayu-net-1"
	code, body := m.req(t, "GET", "/first-stage-script/"+serial, "")
	require.Equal(t, 200, code, body)
	facts := fmt.Sprintf(`{"Serial":%q,"NetDevs":[{"Name":"eth0","MacAddress":%q}],"IPMIAddress":"","ConnectedNIC":"eth0"}`, serial, macMachine)
	code, body = m.req(t, "POST", "/final-cloud-config.yaml", facts)
	require.Equal(t, 200, code, body)

	// setState drives one state change over HTTP and waits until dnsmasq
	// has re-read its hosts file if the change affects it; it returns the
	// time from the request to that re-read.
	setState := func(t *testing.T, to host.State) time.Duration {
		t.Helper()
		before := m.out.Count(readHosts)
		t0 := time.Now()
		var code int
		var body string
		switch to {
		case host.Installed:
			code, body = m.req(t, "PUT", "/admin/host/"+serial+"/set_installed", "")
		case host.Running:
			code, body = m.req(t, "PUT", "/admin/host/"+serial+"/boot_complete", `{"CoreOSVersion":"1068.6.0"}`)
		case host.Installing:
			code, body = m.req(t, "PUT", "/admin/host/"+serial+"/set_state", `{"State":"installing"}`)
		case host.Configured:
			code, body = m.req(t, "PUT", "/admin/host/"+serial+"/mark_fresh", "")
		}
		require.Equal(t, 202, code, "%s: %s", to, body)
		if to == host.Running || to == host.Installing {
			return 0 // same ignore set as the state before: nothing for dnsmasq
		}
		require.Eventually(t, func() bool { return m.out.Count(readHosts) > before }, 10*time.Second, time.Millisecond,
			"dnsmasq did not re-read its hosts file after %s", to)
		return time.Since(t0)
	}

	t.Run("installing machine PXE-boots", func(t *testing.T) {
		ls := l.dhcp(t, "c1", 5)
		require.NotNil(t, ls)
		inBootstrapRange(t, ls["ip"])
		assert.Equal(t, "undionly.kpxe", ls["boot_file"])
		got := filepath.Join(l.dir, "kpxe-via-mayu")
		l.mustT(t, "ip", "netns", "exec", l.cli, "tftp", "-m", "binary", provAddr, "-c", "get", "undionly.kpxe", got)
		assert.Equal(t, sha(t, "../../tftproot/undionly.kpxe"), sha(t, got))
		ls = l.dhcp(t, "c1", 5, "-x", "0xaf:b10100")
		require.NotNil(t, ls)
		assert.Equal(t, "http://192.168.2.2:4080/ipxebootscript", ls["boot_file"])
	})

	t.Run("set_installed ignores the machine, set_state configured brings it back", func(t *testing.T) {
		d := setState(t, host.Installed)
		t.Logf("FIGURE PUT set_installed -> dnsmasq re-read hosts file (seen in mayu's log): %s", d)
		assert.Nil(t, l.dhcp(t, "c1", 3), "installed machine still answered")
		setState(t, host.Running)
		assert.Nil(t, l.dhcp(t, "c1", 3), "running machine answered")
		before := m.out.Count(readHosts)
		code, body := m.req(t, "PUT", "/admin/host/"+serial+"/set_state", `{"State":"configured"}`)
		require.Equal(t, 202, code, body)
		require.Eventually(t, func() bool { return m.out.Count(readHosts) > before }, 10*time.Second, time.Millisecond)
		assert.NotNil(t, l.dhcp(t, "c1", 5), "configured machine not answered")
		assert.Equal(t, pid, m.dnsmasqPID(t), "dnsmasq restarted")
	})

	t.Run("100 state changes over HTTP: same dnsmasq, TFTP and DHCP undisturbed", func(t *testing.T) {
		data := make([]byte, 64<<20)
		_, _ = rand.NewChaCha8([32]byte{4, 5, 6}).Read(data)
		require.NoError(t, os.WriteFile(filepath.Join(l.tftproot, "big.bin"), data, 0o644))
		want := sha256.Sum256(data)
		data = nil
		got := filepath.Join(l.dir, "big-via-mayu")
		tctx, tcancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer tcancel()
		tftp := exec.CommandContext(tctx, "ip", "netns", "exec", l.cli, "busybox", "tftp", "-g", "-b", "1468", "-r", "big.bin", "-l", got, provAddr)
		var tftpOut bytes.Buffer
		tftp.Stdout, tftp.Stderr = &tftpOut, &tftpOut
		require.NoError(t, tftp.Start())
		tftpDone := make(chan error, 1)
		go func() { tftpDone <- tftp.Wait() }()
		require.Eventually(t, func() bool { fi, err := os.Stat(got); return err == nil && fi.Size() > 0 },
			30*time.Second, 10*time.Millisecond, "TFTP download did not start")

		var (
			mu               sync.Mutex
			probes, failures int
		)
		probeStop, probeDone := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(probeDone)
			for {
				select {
				case <-probeStop:
					return
				default:
				}
				ls, err := l.tryDHCP("c2", 5)
				mu.Lock()
				probes++
				if ls == nil || err != nil {
					failures++
				}
				mu.Unlock()
			}
		}()

		// configured -> installing -> installed -> running -> configured ...
		cycle := []host.State{host.Installing, host.Installed, host.Running, host.Configured}
		var latencies []time.Duration
		duringTransfer := 0
		start := time.Now()
		for i := 0; i < 100; i++ {
			if d := setState(t, cycle[i%len(cycle)]); d > 0 {
				latencies = append(latencies, d)
			}
			select {
			case err := <-tftpDone:
				tftpDone <- err
			default:
				duringTransfer++
			}
		}
		elapsed := time.Since(start)
		mu.Lock()
		n := probes
		mu.Unlock()
		require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return probes >= n+2 }, 30*time.Second, 10*time.Millisecond)
		close(probeStop)
		<-probeDone
		select {
		case err := <-tftpDone:
			require.NoError(t, err, "busybox tftp: %s", tftpOut.String())
		case <-time.After(10 * time.Minute):
			t.Fatal("TFTP download did not finish")
		}
		assert.Equal(t, want, sha(t, got), "TFTP download corrupted")
		assert.Equal(t, pid, m.dnsmasqPID(t), "dnsmasq PID changed across 100 state changes")
		assert.Positive(t, duringTransfer)
		mu.Lock()
		defer mu.Unlock()
		assert.Zero(t, failures, "bystander DHCP unanswered %d of %d times", failures, probes)
		slices.Sort(latencies)
		t.Logf("FIGURE 100 HTTP state changes in %s (%d touched dnsmasq); request -> dnsmasq re-read: min %s, median %s, max %s",
			elapsed.Round(time.Millisecond), len(latencies), latencies[0], latencies[len(latencies)/2], latencies[len(latencies)-1])
		t.Logf("FIGURE bystander DHCP during them: %d exchanges, %d unanswered; TFTP 64 MiB intact, %d of 100 changes during it; dnsmasq PID %d unchanged",
			probes, failures, duringTransfer, pid)
		// The cycle ends in configured: answered.
		assert.NotNil(t, l.dhcp(t, "c1", 5))
	})

	t.Run("killed dnsmasq is brought back", func(t *testing.T) {
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		pid = m.waitDnsmasq(t, pid)
		assert.NotNil(t, l.dhcp(t, "c2", 10), "no DHCP after the restart")
		assert.Contains(t, m.out.String(), "exited unexpectedly")
	})

	t.Run("stopping mayu leaves no dnsmasq", func(t *testing.T) {
		require.NoError(t, m.stop())
		assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "dnsmasq pid %d still exists", pid)
		assert.Empty(t, l.nsPIDs(t))
	})

	t.Run("broken template stops mayu at start with dnsmasq's complaint", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "broken.conf")
		require.NoError(t, os.WriteFile(bad, []byte("interface={{.Network.Interface}}\nno-such-option=1\n"), 0o644))
		m2 := startMayu(t, l, "--dnsmasq-template", bad)
		m2.requireFailedExit(t, "a broken dnsmasq template")
		assert.Contains(t, m2.out.String(), "bad option at line 2")
		assert.Empty(t, l.nsPIDs(t))
	})
}
