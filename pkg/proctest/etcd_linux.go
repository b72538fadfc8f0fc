package proctest

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Etcd is a real etcd (Debian's etcd-server) started for a test.
type Etcd struct {
	*Proc
	Name      string
	ClientURL string // http://127.0.0.1:<free port>
	PeerURL   string // http://127.0.0.1:<free port>
}

// StartEtcd runs etcd as member name in a temporary data directory, on
// free loopback client and peer ports, with args after its own flags
// ("{peer}" in them becomes its peer URL). No ETCD_* variable of the
// environment reaches it. It is killed by PID when the test ends (and by
// the kernel if the test binary dies first); its log is printed if the
// test failed. Without etcd it is RequireE2E.
func StartEtcd(t testing.TB, name string, args ...string) *Etcd {
	t.Helper()
	bin := RequireCommand(t, "etcd", "etcd-server")
	dir := t.TempDir()
	e := &Etcd{Name: name,
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))}
	all := append([]string{
		"--name", name,
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", e.ClientURL, "--advertise-client-urls", e.ClientURL,
		"--listen-peer-urls", e.PeerURL, "--initial-advertise-peer-urls", e.PeerURL,
		"--logger", "zap", "--log-outputs", "stderr",
	}, args...)
	for i := range all {
		all[i] = strings.ReplaceAll(all[i], "{peer}", e.PeerURL)
	}
	cmd := exec.Command(bin, all...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p, err := Start(cmd, nil)
	if err != nil {
		t.Fatalf("start etcd %s: %v", name, err)
	}
	e.Proc = p
	t.Logf("started etcd %s pid %d client %s peer %s", name, cmd.Process.Pid, e.ClientURL, e.PeerURL)
	t.Cleanup(func() {
		if err := p.Kill(10 * time.Second); err != nil {
			t.Errorf("etcd %s: %v", name, err)
		}
		if t.Failed() {
			t.Logf("log of etcd %s (last 40 lines):\n%s", name, TailLines(e.Log(), 40))
		}
	})
	return e
}

// StartEtcdV2 is StartEtcd for a single-member cluster serving the v2 keys
// API (as Mayu 0.11's etcd did), waiting (1 minute at most) until it
// answers there.
func StartEtcdV2(t testing.TB, name string) *Etcd {
	t.Helper()
	e := StartEtcd(t, name, "--enable-v2", "--initial-cluster", name+"={peer}")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.WaitHTTP(ctx, &http.Client{Timeout: 5 * time.Second}, e.ClientURL+"/v2/keys/"); err != nil {
		t.Fatalf("etcd %s does not serve the v2 API: %v\n%s", name, err, TailLines(e.Log(), 40))
	}
	return e
}

// Exited tells whether the process has exited.
func (e *Etcd) Exited() bool {
	select {
	case <-e.Done():
		return true
	default:
		return false
	}
}

// Log is everything etcd logged so far.
func (e *Etcd) Log() string { return e.Out.String() }

// TailLines returns the last n lines of s.
func TailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
