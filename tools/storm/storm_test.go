package storm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/api"
	"mayu/pkg/auth"
	"mayu/pkg/config"
	"mayu/pkg/proctest"
	"mayu/pkg/provision"
	"mayu/pkg/render"
	"mayu/pkg/store"
)

var testConfig = proctest.Config(proctest.LoopConfig{
	Interface: "eth1", IPStart: "10.10.0.1", IPEnd: "10.10.3.254",
	Profiles: []proctest.Profile{
		{Name: "core-services", Quantity: 3, Tags: []string{"role-core=true"}},
		{Name: "workers", Quantity: 10, Tags: []string{"role-worker=true"}},
	},
	SSHKey: "ssh-rsa AAAA test@example",
})

// stormToken is the admin credential of realHandler: the storm lists the
// hosts (GET /admin/hosts), which needs one.
const stormToken = "storm-test-admin-token-0123456789abcdef"

// realHandler is the real API (memory store, real renderer on the
// repository's templates) behind an httptest server.
func realHandler(t *testing.T) (*httptest.Server, *config.Config, *store.Memory) {
	t.Helper()
	cfg, err := config.Parse([]byte(testConfig))
	require.NoError(t, err)
	mem := store.NewMemory()
	t.Cleanup(func() { _ = mem.Close() })
	prov, err := provision.New(provision.Config{Cluster: cfg, Store: mem, HTTPPort: 4080, NoTLS: true})
	require.NoError(t, err)
	require.NoError(t, prov.SetClusterToken("41f07d10ab835b22071a32d5c1b75a6d"))
	rend, err := render.New(render.Config{
		FirstStageScript:     proctest.RepoPath(t, "templates", "first_stage_script.sh"),
		LastStageCloudConfig: proctest.RepoPath(t, "templates", "last_stage_cloudconfig.yaml"),
		IgnitionConfig:       proctest.RepoPath(t, "templates", "ignition", "gs_install.yaml"),
		Snippets:             proctest.RepoPath(t, "template_snippets", "cloudconfig"),
	})
	require.NoError(t, err)
	images := t.TempDir()
	toks, err := auth.Parse([]byte("storm admin " + stormToken + "\n"))
	require.NoError(t, err)
	srv, err := api.New(api.Config{Provisioner: prov, Renderer: rend,
		ImagesDir: images, Version: "test", Access: api.Access{Tokens: toks}})
	require.NoError(t, err)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts, cfg, mem
}

func TestStormAgainstTheRealHandler(t *testing.T) {
	ts, cfg, mem := realHandler(t)
	var events atomic.Int64
	res, err := Run(context.Background(), Config{
		BaseURL: ts.URL, Machines: 60, Concurrency: 8, SerialPrefix: "t-",
		Mix: Mix{Hosts: 0.1}, Client: proctest.WithToken(NewClient(8), stormToken),
		OnEvent: func(Event) { events.Add(1) },
	})
	require.NoError(t, err)
	assert.Equal(t, 60, res.Completed)
	assert.Zero(t, res.Failed)
	assert.Empty(t, res.Errors)
	assert.Positive(t, res.PerSecond)
	for _, r := range Steps {
		assert.Equal(t, 60, res.Routes[r].Count, r)
		s := res.Routes[r]
		assert.True(t, s.P50ms <= s.P90ms && s.P90ms <= s.P99ms && s.P99ms <= s.MaxMs, "%s percentiles ordered: %+v", r, s)
	}
	assert.Equal(t, 6, res.Routes[RouteHosts].Count, "one listing per ten machines")
	assert.EqualValues(t, 4*60+6, events.Load())

	chk, err := CheckEndState(context.Background(), CheckConfig{BaseURL: ts.URL, Client: proctest.WithToken(nil, stormToken), Serials: res.Serials, Cluster: cfg})
	require.NoError(t, err)
	assert.True(t, chk.OK(), chk.Problems)
	assert.Equal(t, map[string]int{"core-services": 3, "workers": 10, "default": 47}, chk.Profiles)
	assert.Equal(t, chk.Profiles, chk.ProfilesWant)

	// What the storm did is what the store holds.
	h, err := mem.Get(Serial("t-", 7))
	require.NoError(t, err)
	assert.Equal(t, "running", string(h.State))
	assert.Equal(t, []string{MACs("t-", 7)[0], MACs("t-", 7)[1]}, h.MacAddresses)
	assert.Equal(t, IPMIAddr(7), h.IPMIAddr.String())
	assert.Equal(t, "bootstorm", h.MayuVersion)

	// A second storm with another prefix never shares MACs.
	assert.NotEqual(t, MACs("t-", 7)[0], MACs("u-", 7)[0])
}

// faulty answers the life cycle like mayu but fails some requests: a 500
// for every third set_installed, a dropped connection for machine 5's
// final config.
func faulty(t *testing.T) *httptest.Server {
	var installs atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/first-stage-script/", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("#!/bin/sh\n")) })
	mux.HandleFunc("/final-cloud-config.yaml", func(w http.ResponseWriter, r *http.Request) {
		var f struct{ Serial string }
		_ = json.NewDecoder(r.Body).Decode(&f)
		if f.Serial == Serial("f-", 5) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		_, _ = w.Write([]byte("#cloud-config\n"))
	})
	mux.HandleFunc("/admin/host/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/set_installed") && installs.Add(1)%3 == 0 {
			http.Error(w, "store: storage failure: disk full", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("/admin/hosts", func(w http.ResponseWriter, r *http.Request) {
		// Two hosts share an address; one storm machine is still installing.
		_, _ = fmt.Fprintf(w, `[{"Serial":%q,"State":"running","InternalAddr":"10.0.0.1","Profile":"default"},`+
			`{"Serial":%q,"State":"installing","InternalAddr":"10.0.0.1","Profile":"default"}]`, Serial("f-", 0), Serial("f-", 1))
	})
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

func TestErrorsAreCountedByKind(t *testing.T) {
	ts := faulty(t)
	res, err := Run(context.Background(), Config{BaseURL: ts.URL, Machines: 30, Concurrency: 1, SerialPrefix: "f-", Timeout: 5 * time.Second})
	require.NoError(t, err)
	// Machine 5 fails at its final config; of the 29 left, every third
	// set_installed fails.
	assert.Equal(t, 1, res.Errors[RouteFinalConfig+": transport: connection closed (EOF)"], res.Errors)
	assert.Equal(t, 9, res.Errors[RouteSetInstalled+": status 500"], res.Errors)
	assert.Equal(t, 10, res.Failed)
	assert.Equal(t, 20, res.Completed)
	assert.Equal(t, 1, res.Progress[5], "machine 5 got only its first-stage script")
	assert.Contains(t, res.LastError[5], "final-config")
}

func TestRetryRidesOutFailures(t *testing.T) {
	ts := faulty(t)
	res, err := Run(context.Background(), Config{BaseURL: ts.URL, Machines: 12, Concurrency: 2, SerialPrefix: "r-",
		Timeout: 5 * time.Second, Retry: 10 * time.Second})
	require.NoError(t, err)
	assert.Equal(t, 12, res.Completed, res.LastError)
	assert.Positive(t, res.Retries)
	assert.Positive(t, res.Errors[RouteSetInstalled+": status 500"], "failures are still counted")
}

func TestCheckFindsWhatIsWrong(t *testing.T) {
	ts := faulty(t)
	cfg, err := config.Parse([]byte(testConfig))
	require.NoError(t, err)
	chk, err := CheckEndState(context.Background(), CheckConfig{BaseURL: ts.URL,
		Serials: []string{Serial("f-", 0), Serial("f-", 1), Serial("f-", 2)}, Cluster: cfg})
	require.NoError(t, err)
	assert.False(t, chk.OK())
	assert.Equal(t, 1, chk.DuplicateAddrs)
	assert.Equal(t, 1, chk.NotInWantState)
	assert.Equal(t, 1, chk.Missing)
	text := strings.Join(chk.Problems, "\n")
	assert.Contains(t, text, "address held by two hosts")
	assert.Contains(t, text, "profile quantity: 2: ")
}

func TestExpectedProfiles(t *testing.T) {
	cfg, err := config.Parse([]byte(testConfig))
	require.NoError(t, err)
	tests := []struct {
		total int
		want  map[string]int
	}{
		{0, map[string]int{"core-services": 0, "workers": 0, "default": 0}},
		{2, map[string]int{"core-services": 2, "workers": 0, "default": 0}},
		{5, map[string]int{"core-services": 3, "workers": 2, "default": 0}},
		{100, map[string]int{"core-services": 3, "workers": 10, "default": 87}},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, ExpectedProfiles(cfg, tt.total), "%d hosts", tt.total)
	}
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := Summarize(ds, 3)
	assert.Equal(t, Stats{Count: 100, Errors: 3, P50ms: 50, P90ms: 90, P99ms: 99, MaxMs: 100, MeanMs: 50.5}, s)
	assert.Equal(t, Stats{Errors: 2}, Summarize(nil, 2))
}

func TestPerMachineSpreadsRates(t *testing.T) {
	for _, rate := range []float64{0, 0.01, 0.3, 1, 2.5} {
		total := 0
		for i := 0; i < 1000; i++ {
			total += perMachine(rate, i)
		}
		assert.Equal(t, int(rate*1000), total, "rate %v", rate)
	}
}

func TestConfigBounds(t *testing.T) {
	for _, c := range []Config{
		{Machines: 1, Concurrency: 1},
		{BaseURL: "http://127.0.0.1:1", Machines: MaxMachines + 1, Concurrency: 1},
		{BaseURL: "http://127.0.0.1:1", Machines: 1, Concurrency: 0},
		{BaseURL: "http://127.0.0.1:1", Machines: 1, Concurrency: MaxConcurrency + 1},
		{BaseURL: "http://127.0.0.1:1", Machines: 1, Concurrency: 1, Mix: Mix{Hosts: -1}},
	} {
		_, err := Run(context.Background(), c)
		assert.Error(t, err, "%+v", c)
	}
}
