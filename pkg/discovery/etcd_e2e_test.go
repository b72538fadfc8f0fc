//go:build linux

package discovery

// These tests run real etcd members (Debian's etcd-server 3.4) as separate
// processes on loopback ports and let them bootstrap through our discovery
// service, checked with the real etcdctl. They skip loudly when the
// binaries are missing and fail instead under MAYU_E2E=required (CI).

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/proctest"
)

type etcdBins struct{ etcd, etcdctl string }

// needEtcd returns the real etcd and etcdctl (proctest.RequireCommand:
// skipped loudly when missing, a failure under MAYU_E2E=required).
func needEtcd(t *testing.T) etcdBins {
	t.Helper()
	return etcdBins{
		etcd:    proctest.RequireCommand(t, "etcd", "etcd-server"),
		etcdctl: proctest.RequireCommand(t, "etcdctl", "etcd-client"),
	}
}

// freeAddr returns a loopback address nothing listens on, never the same
// twice in this test binary (etcd binds it later).
func freeAddr(t *testing.T) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(proctest.FreePort(t)))
}

// waitFor polls cond until it holds, failing after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		if time.Now().After(deadline) {
			t.Fatalf("%s: not done within %s (last: %s)", what, timeout, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func etcdctl(bins etcdBins, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.etcdctl, append([]string{"--command-timeout=5s"}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "ETCDCTL_API=3"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// discoveryServer serves a Service on a fixed loopback address so that it
// can be stopped and started again where the members expect it.
type discoveryServer struct {
	srv    *http.Server
	served chan struct{}
}

func startDiscovery(t *testing.T, ln net.Listener, svc Service) *discoveryServer {
	t.Helper()
	e := echo.New()
	svc.Register(e.Group("/etcd"))
	d := &discoveryServer{
		srv:    &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second},
		served: make(chan struct{}),
	}
	// The wiring mayu uses: a graceful stop ends the waits at once.
	if sd, ok := svc.(interface{ Shutdown() }); ok {
		d.srv.RegisterOnShutdown(sd.Shutdown)
	}
	go func() {
		defer close(d.served)
		_ = d.srv.Serve(ln)
	}()
	t.Cleanup(d.stop)
	return d
}

func (d *discoveryServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = d.srv.Shutdown(ctx)
	_ = d.srv.Close()
	<-d.served
}

// listenAgain binds addr again after a stop; the port was ours a moment
// ago, but give the kernel a little time.
func listenAgain(t *testing.T, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	waitFor(t, 10*time.Second, "listen on "+addr+" again", func() (bool, string) {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil, fmt.Sprint(err)
	})
	return ln
}

// registered lists the member values in a registry, first-registered first.
func registered(t *testing.T, discoveryURL string) []string {
	t.Helper()
	resp, err := http.Get(discoveryURL)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var r Response
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	nodes := slices.Clone(r.Node.Nodes)
	slices.SortFunc(nodes, func(a, b *Node) int { return int(a.CreatedIndex) - int(b.CreatedIndex) })
	var vals []string
	for _, n := range nodes {
		vals = append(vals, *n.Value)
	}
	return vals
}

// checkCluster waits until every member is healthy, then checks that they
// form one cluster of exactly these members, and logs etcdctl's table.
func checkCluster(t *testing.T, bins etcdBins, members ...*proctest.Etcd) {
	t.Helper()
	var eps []string
	for _, m := range members {
		eps = append(eps, m.ClientURL)
	}
	endpoints := "--endpoints=" + strings.Join(eps, ",")
	waitFor(t, 2*time.Minute, "all members healthy", func() (bool, string) {
		for _, m := range members {
			if m.Exited() {
				t.Fatalf("etcd %s exited: %v\n%s", m.Name, m.Err(), proctest.TailLines(m.Log(), 40))
			}
		}
		out, err := etcdctl(bins, endpoints, "endpoint", "health")
		return err == nil, strings.TrimSpace(out)
	})
	health, err := etcdctl(bins, endpoints, "endpoint", "health")
	require.NoError(t, err, health)
	t.Logf("etcdctl endpoint health:\n%s", health)

	table, err := etcdctl(bins, endpoints, "member", "list", "-w", "table")
	require.NoError(t, err, table)
	t.Logf("etcdctl member list:\n%s", table)

	// Every member sees the same membership: the three names with their
	// peer URLs, all started.
	want := map[string]string{}
	for _, m := range members {
		want[m.Name] = m.PeerURL
	}
	for _, m := range members {
		out, err := etcdctl(bins, "--endpoints="+m.ClientURL, "member", "list")
		require.NoError(t, err, out)
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Split(line, ", ")
			require.Len(t, f, 6, "member list line %q", line)
			assert.Equal(t, "started", f[1], line)
			got[f[2]] = f[3]
		}
		assert.Equal(t, want, got, "membership as seen by %s", m.Name)
	}
}

// checkFull starts a member beyond the token's size and checks it is told
// the cluster is full: with --discovery-fallback=exit it exits non-zero
// saying so, without having registered.
func checkFull(t *testing.T, bins etcdBins, discoveryURL string, size int) {
	t.Helper()
	m := proctest.StartEtcd(t, "m4", "--discovery="+discoveryURL, "--discovery-fallback=exit")
	select {
	case <-m.Done():
	case <-time.After(time.Minute):
		t.Fatalf("fourth member still running after 1m:\n%s", proctest.TailLines(m.Log(), 20))
	}
	var exitErr *exec.ExitError
	require.ErrorAs(t, m.Err(), &exitErr, "fourth member must fail")
	log := m.Log()
	require.Contains(t, log, "cluster is full", proctest.TailLines(log, 20))
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "cluster is full") {
			t.Logf("fourth member (exit %d): %s", exitErr.ExitCode(), line)
			break
		}
	}
	assert.Len(t, registered(t, discoveryURL), size, "the fourth member did not register")
}

// TestEtcdClusterThroughInternalDiscovery: three etcd members bootstrap one
// cluster through mayu's own discovery; mayu's discovery is restarted
// (new Internal, same directory, same address) after the first member
// registered and while it waits for its peers; a fourth member is told the
// cluster is full.
func TestEtcdClusterThroughInternalDiscovery(t *testing.T) {
	bins := needEtcd(t)
	out, err := exec.Command(bins.etcd, "--version").CombinedOutput()
	require.NoError(t, err)
	t.Logf("%s", strings.TrimSpace(string(out)))

	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	cfg := InternalConfig{Dir: dir, BaseURL: "http://" + addr, DefaultSize: 3}
	svc, err := NewInternal(cfg)
	require.NoError(t, err)
	ds := startDiscovery(t, ln, svc)

	token, err := svc.NewToken(context.Background(), 0)
	require.NoError(t, err)
	durl := svc.URL(token)
	t.Logf("discovery URL %s", durl)

	m1 := proctest.StartEtcd(t, "m1", "--discovery="+durl, "--discovery-fallback=exit")
	waitFor(t, time.Minute, "m1 registered and waiting for peers", func() (bool, string) {
		if m1.Exited() {
			t.Fatalf("m1 exited: %v\n%s", m1.Err(), proctest.TailLines(m1.Log(), 40))
		}
		return strings.Contains(m1.Log(), "waiting for more"), proctest.TailLines(m1.Log(), 1)
	})
	before := registered(t, durl)
	require.Equal(t, []string{"m1=" + m1.PeerURL}, before)

	// Restart mayu's discovery between registrations.
	ds.stop()
	svc2, err := NewInternal(cfg)
	require.NoError(t, err)
	startDiscovery(t, listenAgain(t, addr), svc2)
	assert.Equal(t, before, registered(t, durl), "registrations survive the restart")

	m2 := proctest.StartEtcd(t, "m2", "--discovery="+durl, "--discovery-fallback=exit")
	m3 := proctest.StartEtcd(t, "m3", "--discovery="+durl, "--discovery-fallback=exit")
	checkCluster(t, bins, m1, m2, m3)
	assert.Equal(t, "m1="+m1.PeerURL, registered(t, durl)[0], "m1 stays first across the restart")
	// m1 was waiting for its peers when the discovery service went away;
	// m2 and m3 registered only with the new one, so m1 finding them means
	// its wait crossed the restart. Whether its client logs a retry depends
	// on timing: Go's transport may re-send the interrupted wait on a fresh
	// connection to the new server by itself.
	var m1Discovery []string
	for _, line := range strings.Split(m1.Log(), "\n") {
		var l struct{ Msg, Peer, Reason string }
		if json.Unmarshal([]byte(line), &l) == nil && strings.Contains(l.Msg, "discovery") {
			m1Discovery = append(m1Discovery, strings.TrimSpace(l.Msg+" "+l.Peer+" "+l.Reason))
		}
	}
	t.Logf("m1's discovery log:\n%s", strings.Join(m1Discovery, "\n"))

	checkFull(t, bins, durl, 3)
}

// TestEtcdClusterThroughProxyDiscovery: the same through proxy mode, the
// registry kept in a real etcd serving the v2 API (--enable-v2).
func TestEtcdClusterThroughProxyDiscovery(t *testing.T) {
	bins := needEtcd(t)

	// A static single-member cluster of its own holds the registries.
	store := proctest.StartEtcd(t, "registry", "--enable-v2", "--initial-cluster", "registry={peer}")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p, err := NewProxy(ProxyConfig{
		Endpoint:    strings.TrimPrefix(store.ClientURL, "http://"),
		BaseURL:     "http://" + ln.Addr().String(),
		DefaultSize: 3,
	})
	require.NoError(t, err)
	waitFor(t, time.Minute, "registry etcd serves the v2 API", func() (bool, string) {
		if store.Exited() {
			t.Fatalf("registry etcd exited: %v\n%s", store.Err(), proctest.TailLines(store.Log(), 40))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := p.Check(ctx)
		return err == nil, fmt.Sprint(err)
	})
	startDiscovery(t, ln, p)

	token, err := p.NewToken(context.Background(), 3)
	require.NoError(t, err)
	durl := p.URL(token)
	t.Logf("discovery URL %s (registry in etcd %s)", durl, store.ClientURL)

	var ms []*proctest.Etcd
	for _, name := range []string{"m1", "m2", "m3"} {
		ms = append(ms, proctest.StartEtcd(t, name, "--discovery="+durl, "--discovery-fallback=exit"))
	}
	checkCluster(t, bins, ms...)

	// The registry really lives in that etcd, under /_etcd/registry.
	resp, err := http.Get(store.ClientURL + "/v2/keys/_etcd/registry/" + token)
	require.NoError(t, err)
	var r Response
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	resp.Body.Close()
	assert.Len(t, r.Node.Nodes, 3)

	checkFull(t, bins, durl, 3)
}
