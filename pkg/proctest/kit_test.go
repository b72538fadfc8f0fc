package proctest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPickPortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p := FreePort(t)
		require.False(t, seen[p], "port %d handed out twice", p)
		seen[p] = true
	}
}

func TestRepoRootHoldsTheWorkspace(t *testing.T) {
	root, err := RepoRoot()
	require.NoError(t, err)
	assert.FileExists(t, filepath.Join(root, "go.work"))
	assert.FileExists(t, RepoPath(t, "templates", "first_stage_script.sh"))
}

func TestFlagsArgs(t *testing.T) {
	dir := t.TempDir()
	f, args, err := Flags{Dir: dir, ConfigText: "x: 1\n", Port: 4321}.Args()
	require.NoError(t, err)
	root, err := RepoRoot()
	require.NoError(t, err)
	assert.Equal(t, root, f.Repo)
	assert.Equal(t, "127.0.0.1", f.Host)
	assert.Contains(t, args, "--config="+filepath.Join(dir, "config.yaml"))
	assert.Contains(t, args, "--cluster-directory="+filepath.Join(dir, "cluster"))
	assert.Contains(t, args, "--http-port=4321")
	assert.Contains(t, args, "--tftproot="+filepath.Join(root, "tftproot"))
	assert.Contains(t, args, "--no-dnsmasq")
	assert.Contains(t, args, "--anonymous-limit=0", "tests play many machines from one address")
	b, err := os.ReadFile(filepath.Join(dir, "config.yaml"))
	require.NoError(t, err)
	assert.Equal(t, "x: 1\n", string(b))
	fi, err := os.Stat(filepath.Join(dir, "static_html", "infopusher"))
	require.NoError(t, err)
	assert.NotZero(t, fi.Mode()&0o100, "the stand-in infopusher is executable")
	// Every path the repository provides exists.
	repoFlags := map[string]bool{"--first-stage-script": true, "--last-stage-cloudconfig": true, "--ignition-config": true,
		"--dnsmasq-template": true, "--template-snippets": true, "--tftproot": true}
	n := 0
	for _, a := range args {
		if k, v, _ := strings.Cut(a, "="); repoFlags[k] {
			_, err := os.Stat(v)
			assert.NoError(t, err, k)
			n++
		}
	}
	assert.Equal(t, len(repoFlags), n)

	f, args, err = Flags{Dir: dir, Host: "192.168.2.2", Dnsmasq: "/usr/sbin/dnsmasq"}.Args()
	require.NoError(t, err)
	assert.NotZero(t, f.Port, "a free port is picked")
	assert.Contains(t, args, "--dnsmasq=/usr/sbin/dnsmasq")
	assert.NotContains(t, args, "--no-dnsmasq")
	assert.Contains(t, args, "--http-bind-address=192.168.2.2")

	_, _, err = Flags{}.Args()
	assert.ErrorContains(t, err, "Dir is required")
}

func TestProcStopAndKill(t *testing.T) {
	p, err := Start(exec.Command("sh", "-c", "trap 'echo term; exit 3' TERM; echo started; while :; do sleep 0.05; done"), nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.Out.Count("started") == 1 }, 10*time.Second, 10*time.Millisecond)
	err = p.Stop(10 * time.Second)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 3, ee.ExitCode())
	assert.Contains(t, p.Out.String(), "term")
	assert.Equal(t, err, p.Stop(time.Second), "stopping again returns the same exit")

	// A child that ignores SIGTERM is killed after the grace period.
	p, err = Start(exec.Command("sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"), nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.Out.Count("ready") == 1 }, 10*time.Second, 10*time.Millisecond)
	assert.ErrorContains(t, p.Stop(200*time.Millisecond), "did not stop within 200ms")

	p, err = Start(exec.Command("sleep", "60"), nil)
	require.NoError(t, err)
	require.NoError(t, p.Kill(10*time.Second))
	<-p.Done()
	assert.Error(t, p.Err())
}

func TestWaitHTTP(t *testing.T) {
	var ready bool
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ready {
			ready = true
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer ts.Close()
	p, err := Start(exec.Command("sleep", "60"), nil)
	require.NoError(t, err)
	defer func() { _ = p.Kill(10 * time.Second) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, p.WaitHTTP(ctx, ts.Client(), ts.URL+"/"))

	// A process that exits is reported, not waited for.
	q, err := Start(exec.Command("true"), nil)
	require.NoError(t, err)
	assert.ErrorContains(t, q.WaitHTTP(ctx, ts.Client(), "http://127.0.0.1:1/"), "exited before it answered")

	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	assert.ErrorContains(t, p.WaitHTTP(short, ts.Client(), "http://127.0.0.1:1/"), "did not answer")
}

// TestRequireE2E runs itself as a child: without MAYU_E2E the check
// skips, with MAYU_E2E=required it fails, naming the reason both times.
func TestRequireE2E(t *testing.T) {
	if os.Getenv("PROCTEST_CHILD") == "1" {
		RequireE2E(t, "the reason given")
		t.Fatal("RequireE2E returned")
	}
	for _, tc := range []struct {
		env  string
		fail bool
		want string
	}{
		{"", false, "SKIPPED: the reason given"},
		{"required", true, "MAYU_E2E=required but the reason given"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRequireE2E$", "-test.v")
		cmd.Env = append(os.Environ(), "PROCTEST_CHILD=1", "MAYU_E2E="+tc.env)
		out, err := cmd.CombinedOutput()
		assert.Equal(t, tc.fail, err != nil, "%s", out)
		assert.Contains(t, string(out), tc.want)
		assert.NotContains(t, string(out), "RequireE2E returned")
	}
}

func TestRequireCommandFindsOrSkips(t *testing.T) {
	assert.NotEmpty(t, RequireCommand(t, "sh", "dash"))
	t.Run("missing", func(t *testing.T) {
		if os.Getenv("MAYU_E2E") == "required" {
			t.Skip("would fail by design under MAYU_E2E=required")
		}
		RequireCommand(t, "no-such-command-mayu", "none")
		t.Fatal("RequireCommand returned for a missing command")
	})
}

func TestConfigOnABridge(t *testing.T) {
	c := Config(LoopConfig{Interface: "br0", BindAddr: "192.168.2.2", Gateway: "192.168.2.2",
		BootstrapStart: "192.168.2.100", BootstrapEnd: "192.168.2.200", IPStart: "192.168.2.21", IPEnd: "192.168.2.99",
		Profiles: []Profile{{Name: "default", Tags: []string{"role-worker=true"}}}})
	for _, want := range []string{"interface: br0", "bind_addr: 192.168.2.2", "bootstrap_range: {start: 192.168.2.100, end: 192.168.2.200}",
		"dns: [192.168.2.2]", "router: 192.168.2.2", `mayu_http_endpoint: "http://192.168.2.2:4080"`} {
		assert.Contains(t, c, want)
	}
}
