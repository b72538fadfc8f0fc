package proctest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
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
	e := &Etcd{Name: name,
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))}
	e.start(t, args...)
	return e
}

// start runs etcd as e (its name and URLs set) with args.
func (e *Etcd) start(t testing.TB, args ...string) {
	t.Helper()
	bin := RequireCommand(t, "etcd", "etcd-server")
	dir := t.TempDir()
	all := append([]string{
		"--name", e.Name,
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
		t.Fatalf("start etcd %s: %v", e.Name, err)
	}
	e.Proc = p
	t.Logf("started etcd %s pid %d client %s peer %s", e.Name, cmd.Process.Pid, e.ClientURL, e.PeerURL)
	t.Cleanup(func() {
		if err := p.Kill(10 * time.Second); err != nil {
			t.Errorf("etcd %s: %v", e.Name, err)
		}
		if t.Failed() {
			t.Logf("log of etcd %s (last 40 lines):\n%s", e.Name, TailLines(e.Log(), 40))
		}
	})
}

// StartEtcdCluster runs an etcd cluster of n members named
// <name>-0 ... <name>-<n-1> on loopback (each as StartEtcd: its own data
// directory and free ports, killed by PID at the end of the test) and
// waits (1 minute at most) until every member answers /health with a
// leader elected.
func StartEtcdCluster(t testing.TB, name string, n int) []*Etcd {
	t.Helper()
	members := make([]*Etcd, n)
	var initial []string
	for i := range members {
		members[i] = &Etcd{Name: fmt.Sprintf("%s-%d", name, i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))}
		initial = append(initial, members[i].Name+"="+members[i].PeerURL)
	}
	token := fmt.Sprintf("%s-%d-%d", name, os.Getpid(), time.Now().UnixNano())
	for _, m := range members {
		m.start(t, "--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, m := range members {
		if err := m.WaitHealthy(ctx); err != nil {
			t.Fatalf("etcd cluster %s: %v\n%s", name, err, TailLines(m.Log(), 40))
		}
	}
	return members
}

// WaitHealthy polls the member's /health until it answers
// {"health":"true"} (a leader is known and the member serves), until ctx
// ends or the member exits.
func (e *Etcd) WaitHealthy(ctx context.Context) error {
	client := &http.Client{Timeout: 3 * time.Second}
	var last string
	for {
		if e.Exited() {
			return fmt.Errorf("etcd %s exited: %v", e.Name, e.Err())
		}
		resp, err := client.Get(e.ClientURL + "/health")
		if err == nil {
			var h struct{ Health string }
			err = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&h)
			resp.Body.Close()
			if err == nil && h.Health == "true" {
				return nil
			}
			last = fmt.Sprintf("%s health %q %v", resp.Status, h.Health, err)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd %s not healthy: %s", e.Name, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// EtcdStatus is what a member says of itself through etcd's JSON gateway
// (POST /v3/maintenance/status): its member ID and the leader's.
type EtcdStatus struct {
	Member string // decimal member ID
	Leader string // decimal member ID of the leader
}

// Status asks the member for its status (5 s at most).
func (e *Etcd) Status() (EtcdStatus, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Post(e.ClientURL+"/v3/maintenance/status", "application/json", strings.NewReader("{}"))
	if err != nil {
		return EtcdStatus{}, fmt.Errorf("etcd %s status: %w", e.Name, err)
	}
	defer resp.Body.Close()
	var st struct {
		Header struct {
			MemberID string `json:"member_id"`
		}
		Leader string
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&st); err != nil || resp.StatusCode != http.StatusOK {
		return EtcdStatus{}, fmt.Errorf("etcd %s status: %s: %v", e.Name, resp.Status, err)
	}
	return EtcdStatus{Member: st.Header.MemberID, Leader: st.Leader}, nil
}

// Leader returns the member the members agree leads, asking each live
// one (10 s at most).
func Leader(members []*Etcd) (*Etcd, error) {
	deadline := time.Now().Add(10 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		byID := map[string]*Etcd{}
		leaders := map[string]int{}
		for _, m := range members {
			if m.Exited() {
				continue
			}
			st, err := m.Status()
			if err != nil {
				last = err
				continue
			}
			byID[st.Member] = m
			if st.Leader != "0" && st.Leader != "" {
				leaders[st.Leader]++
			}
		}
		for id := range leaders {
			if l, ok := byID[id]; ok && len(leaders) == 1 {
				return l, nil
			}
		}
		last = fmt.Errorf("no agreed leader among %v", leaders)
		time.Sleep(100 * time.Millisecond)
	}
	return nil, last
}

// Endpoints are the members' client addresses as host:port, comma-separated.
func Endpoints(members []*Etcd) string {
	var eps []string
	for _, m := range members {
		eps = append(eps, strings.TrimPrefix(m.ClientURL, "http://"))
	}
	return strings.Join(eps, ",")
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
