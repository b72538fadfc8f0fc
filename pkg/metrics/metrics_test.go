package metrics_test

import (
	"bufio"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/dnsmasq"
	"mayu/pkg/metrics"
	"mayu/pkg/timeline"
)

// The DHCP and TFTP events of a real dnsmasq 2.90 log (--log-dhcp, as the
// supervisor runs it), parsed as the supervisor parses them, are counted
// by kind; the other kinds of the timeline are not dnsmasq's.
func TestDnsmasqLogEventsCounted(t *testing.T) {
	f, err := os.Open("../dnsmasq/testdata/log-dhcp-2.90.log")
	require.NoError(t, err)
	defer f.Close()
	m := metrics.New(metrics.Sources{})
	parser := dnsmasq.LogParser{TFTPRoot: "/tmp/tmp.zX5KDz6CR0/tftp"}
	parsed := map[timeline.Kind]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if e, ok := parser.Parse(sc.Text()); ok {
			parsed[e.Kind]++
			m.CountEvent(e)
		}
	}
	require.NoError(t, sc.Err())
	m.CountEvent(timeline.Event{Kind: timeline.HTTP, Route: "/ipxebootscript", Status: 200})
	m.CountEvent(timeline.Event{Kind: timeline.State, From: "configured", To: "installing"})

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 200, rec.Code)
	body := rec.Body.String()
	assert.Equal(t, 2, parsed[timeline.DHCPAck], "the log holds two DHCPACKs")
	assert.Equal(t, 1, parsed[timeline.TFTPSent], "and one TFTP transfer")
	assert.Equal(t, 1, parsed[timeline.TFTPFailed], "and one missing file")
	for _, k := range metrics.EventKinds {
		assert.Equal(t, float64(parsed[k]), eventCount(t, m, string(k)), "kind %s", k)
	}
	assert.NotContains(t, body, `kind="http"`)
	assert.NotContains(t, body, `kind="state"`)
	n, err := testutil.GatherAndCount(m.Registry(), "mayu_dnsmasq_events_total")
	require.NoError(t, err)
	assert.Equal(t, len(metrics.EventKinds), n, "one series per dnsmasq kind, no more")
}

// eventCount is the value of mayu_dnsmasq_events_total{kind=kind}.
func eventCount(t *testing.T, m *metrics.Metrics, kind string) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != "mayu_dnsmasq_events_total" {
			continue
		}
		for _, s := range f.Metric {
			for _, l := range s.Label {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return s.Counter.GetValue()
				}
			}
		}
	}
	t.Fatalf("no series kind=%q", kind)
	return 0
}

// A scrape of a registry without a provisioner or dnsmasq still holds
// the families fed on the request path and the build info.
func TestScrapeWithoutSources(t *testing.T) {
	m := metrics.New(metrics.Sources{Version: "v", Commit: "c"})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 200, rec.Code)
	for _, name := range []string{"mayu_build_info{", "mayu_dnsmasq_events_total{"} {
		assert.True(t, strings.Contains(rec.Body.String(), name), name)
	}
	assert.NotContains(t, rec.Body.String(), "mayu_machines")
	assert.NotContains(t, rec.Body.String(), "mayu_dnsmasq_restarts_total")
}

// BenchmarkObserveRequest is what counting costs every request.
func BenchmarkObserveRequest(b *testing.B) {
	m := metrics.New(metrics.Sources{})
	b.ReportAllocs()
	for b.Loop() {
		m.ObserveRequest("/first-stage-script/:serial", "GET", 200, 3*time.Millisecond)
	}
}
