package api

import (
	"encoding/json"
	"fmt"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/metrics"
	"mayu/pkg/provision"
	"mayu/pkg/store/gitdir"
)

// fakeDnsmasq stands for the supervisor's counters (their own tests are
// in package dnsmasq).
type fakeDnsmasq struct{ restarts, reloads int }

func (f fakeDnsmasq) Restarts() int { return f.restarts }
func (f fakeDnsmasq) Reloads() int  { return f.reloads }

// metricsEnv is the real server and rules over a git cluster directory,
// with the metrics wired as mayu wires them.
func metricsEnv(t *testing.T, opts ...func(*envConfig)) (*env, *metrics.Metrics) {
	t.Helper()
	m := metrics.New(metrics.Sources{Version: "1.2.3", Commit: "abc1234", Dnsmasq: fakeDnsmasq{restarts: 2, reloads: 7}})
	st, err := gitdir.Open(t.TempDir(), gitdir.Options{OnBatch: m.ObserveBatch})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	e := newEnv(t, append([]func(*envConfig){func(c *envConfig) {
		c.prov.Store = st
		c.api.Metrics = m
	}}, opts...)...)
	m.AddProvisioner(e.srv.prov)
	return e, m
}

// scrape answers GET /metrics as the families it holds.
func scrape(t *testing.T, e *env) map[string]*dto.MetricFamily {
	t.Helper()
	rec := e.do("GET", "/metrics", "")
	require.Equal(t, 200, rec.Code, rec.Body.String())
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	require.NoError(t, err)
	return fams
}

// sample is the value of the series of family name with exactly labels
// (name, value pairs): a counter's or gauge's value, a histogram's count.
// found is false when there is no such series.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (v float64, found bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(labels)/2 {
			continue
		}
		for i := 0; i+1 < len(labels); i += 2 {
			ok := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					ok = true
				}
			}
			if !ok {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	v, ok := sample(fams, name, labels...)
	require.True(t, ok, "no series %s%v", name, labels)
	return v
}

// machineFacts is a facts report of serial with one card.
func machineFacts(serial string, i int) string {
	return fmt.Sprintf(`{"Serial":%q,"NetDevs":[{"Name":"eth0","MacAddress":"08:00:27:00:00:%02x"}],"ConnectedNIC":"eth0"}`, serial, i)
}

// Every family after real requests: five machines register (three take
// core-services' quantity), four get their final config, three report
// installed, two boot, an operator reinstalls one.
func TestMetricsAfterRealActions(t *testing.T) {
	e, _ := metricsEnv(t)
	serials := []string{"m-0", "m-1", "m-2", "m-3", "m-4"}
	for _, s := range serials {
		require.Equal(t, 200, e.do("GET", "/first-stage-script/"+s, "").Code)
	}
	require.Equal(t, 200, e.do("GET", "/first-stage-script/m-0", "").Code, "a known serial registers nothing")
	for i, s := range serials[:4] {
		rec := e.do("POST", "/final-cloud-config.yaml", machineFacts(s, i))
		require.Equal(t, 200, rec.Code, rec.Body.String())
	}
	for _, s := range serials[:3] {
		require.Equal(t, 202, e.do("PUT", "/admin/host/"+s+"/set_installed", "").Code)
	}
	for _, s := range serials[:2] {
		require.Equal(t, 202, e.do("PUT", "/admin/host/"+s+"/boot_complete", "").Code)
	}
	require.Equal(t, 409, e.do("PUT", "/admin/host/m-4/set_installed", "").Code, "refused: counts no install")
	require.Equal(t, 202, e.do("PUT", "/admin/host/m-0/set_state", `{"State":"configured"}`).Code)
	require.Equal(t, 404, e.do("GET", "/no/such/file", "").Code)

	fams := scrape(t, e)
	assert.Equal(t, 1.0, value(t, fams, "mayu_build_info", "version", "1.2.3", "commit", "abc1234", "goversion", runtimeVersion()))

	// Life-cycle counters count what was made durable.
	assert.Equal(t, 5.0, value(t, fams, "mayu_registrations_total"))
	assert.Equal(t, 4.0, value(t, fams, "mayu_final_configs_total"))
	assert.Equal(t, 3.0, value(t, fams, "mayu_installs_total"))
	assert.Equal(t, 2.0, value(t, fams, "mayu_boot_completions_total"))

	// Machines by state and profile: zeros included for every state.
	for _, c := range []struct {
		state, profile string
		n              float64
	}{
		{"configured", "core-services", 1}, {"running", "core-services", 1}, {"installed", "core-services", 1},
		{"installing", "default", 1}, {"configured", "default", 1}, {"running", "default", 0}, {"unknown", "core-services", 0},
	} {
		assert.Equal(t, c.n, value(t, fams, "mayu_machines", "state", c.state, "profile", c.profile), "%s/%s", c.state, c.profile)
	}
	// ip_range .21-.99 less bind_addr's neighbours: 79 addresses, none
	// reserved in testConfig's range; five taken.
	assert.Equal(t, 79.0, value(t, fams, "mayu_ip_range_addresses"))
	assert.Equal(t, 74.0, value(t, fams, "mayu_ip_range_free_addresses"))
	assert.Equal(t, 0.0, value(t, fams, "mayu_profile_free_slots", "profile", "core-services"))
	_, ok := sample(fams, "mayu_profile_free_slots", "profile", "default")
	assert.False(t, ok, "the default profile has no quantity")

	// Requests by route pattern, never by raw path.
	assert.Equal(t, 6.0, value(t, fams, "mayu_http_requests_total", "route", "/first-stage-script/:serial", "method", "GET", "code", "200"))
	assert.Equal(t, 4.0, value(t, fams, "mayu_http_requests_total", "route", "/final-cloud-config.yaml", "method", "POST", "code", "200"))
	assert.Equal(t, 3.0, value(t, fams, "mayu_http_requests_total", "route", "/admin/host/:serial/set_installed", "method", "PUT", "code", "202"))
	assert.Equal(t, 1.0, value(t, fams, "mayu_http_requests_total", "route", "/admin/host/:serial/set_installed", "method", "PUT", "code", "409"))
	assert.Equal(t, 1.0, value(t, fams, "mayu_http_requests_total", "route", "/*", "method", "GET", "code", "404"))
	assert.Equal(t, 6.0, value(t, fams, "mayu_http_request_duration_seconds", "route", "/first-stage-script/:serial", "method", "GET"))
	for _, f := range fams["mayu_http_requests_total"].Metric {
		for _, l := range f.Label {
			assert.False(t, l.GetName() == "route" && strings.Contains(l.GetValue(), "m-"), "a raw path as route: %s", l.GetValue())
		}
	}

	// Store: every write went through a group commit. The writes here
	// are sequential, so each batch holds one request.
	batches := value(t, fams, "mayu_store_commit_duration_seconds")
	assert.GreaterOrEqual(t, batches, 5.0+4+3+2+1)
	assert.Equal(t, batches, value(t, fams, "mayu_store_commit_batch_size"))
	h := fams["mayu_store_commit_batch_size"].Metric[0].Histogram
	assert.Equal(t, batches, h.GetSampleSum(), "one request per batch")

	// dnsmasq's counters are the supervisor's; the log events start at 0.
	assert.Equal(t, 2.0, value(t, fams, "mayu_dnsmasq_restarts_total"))
	assert.Equal(t, 7.0, value(t, fams, "mayu_dnsmasq_reloads_total"))
	for _, k := range metrics.EventKinds {
		assert.Equal(t, 0.0, value(t, fams, "mayu_dnsmasq_events_total", "kind", string(k)))
	}
	// The Go runtime's and the process's families are there too.
	assert.Contains(t, fams, "go_goroutines")
}

// The pool route answers what the gauges say, as JSON.
func TestPoolRoute(t *testing.T) {
	e, _ := metricsEnv(t)
	for _, s := range []string{"p-0", "p-1", "p-2", "p-3"} {
		require.Equal(t, 200, e.do("GET", "/first-stage-script/"+s, "").Code)
	}
	rec := e.do("GET", "/admin/pool", "")
	require.Equal(t, 200, rec.Code, rec.Body.String())
	assert.Equal(t, "application/json", strings.Split(rec.Header().Get("Content-Type"), ";")[0])
	var pool provision.Pool
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &pool))
	assert.Equal(t, provision.Range{Start: "192.168.2.21", End: "192.168.2.99"}, pool.IPRange)
	assert.Contains(t, rec.Body.String(), `"ip_range":{"start":"192.168.2.21","end":"192.168.2.99"}`)
	assert.Equal(t, uint64(79), pool.Addresses)
	assert.Equal(t, uint64(4), pool.Used)
	assert.Equal(t, uint64(75), pool.Free)
	assert.Equal(t, 4, pool.Total)
	assert.Equal(t, []provision.ProfileSlots{
		{Name: "core-services", Limited: true, Quantity: 3, Used: 3, Free: 0},
		{Name: "default", Used: 1},
	}, pool.Profiles)
	assert.Equal(t, 401, e.do("GET", "/admin/pool", "", "Authorization", "").Code)
	assert.Equal(t, 200, e.do("GET", "/admin/pool", "", "Authorization", "Bearer "+e.tokens.readOnly).Code)
}

// /metrics needs a credential (read-only will do) unless the operator
// said otherwise.
func TestMetricsNeedACredential(t *testing.T) {
	e, _ := metricsEnv(t)
	rec := e.do("GET", "/metrics", "", "Authorization", "")
	assert.Equal(t, 401, rec.Code)
	assert.NotContains(t, rec.Body.String(), "mayu_")
	assert.Equal(t, 401, e.do("GET", "/metrics", "", "Authorization", "Bearer nope-nope-nope-nope-nope-nope-nope-nope").Code)
	assert.Equal(t, 200, e.do("GET", "/metrics", "", "Authorization", "Bearer "+e.tokens.readOnly).Code)

	open, _ := metricsEnv(t, func(c *envConfig) { c.api.MetricsNoAuth = true })
	rec = open.do("GET", "/metrics", "", "Authorization", "")
	assert.Equal(t, 200, rec.Code)
	assert.Contains(t, rec.Body.String(), "mayu_build_info")
	assert.Equal(t, 401, open.do("GET", "/admin/hosts", "", "Authorization", "").Code, "only /metrics is opened")

	none := newEnv(t)
	assert.Equal(t, 404, none.do("GET", "/metrics", "").Code, "no metrics configured: a static file nobody has")
}

// Counting a request on the hot path allocates nothing once its series
// exists.
func TestObserveRequestDoesNotAllocate(t *testing.T) {
	m := metrics.New(metrics.Sources{})
	m.ObserveRequest("/images/:serial/vmlinuz", "GET", 200, time.Millisecond)
	allocs := testing.AllocsPerRun(1000, func() {
		m.ObserveRequest("/images/:serial/vmlinuz", "GET", 200, time.Millisecond)
	})
	assert.Zero(t, allocs)
}

func runtimeVersion() string { return goruntime.Version() }
