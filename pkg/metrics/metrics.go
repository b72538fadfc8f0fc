// Package metrics is mayu's Prometheus instrumentation, served at GET
// /metrics in the text exposition format (github.com/prometheus/client_golang).
//
// Names follow Prometheus' conventions: the mayu_ prefix, base units
// (seconds), _total for counters. What is counted on the request path is
// only counters and histograms, looked up without allocating; everything
// that describes the records (machines by state and profile, the address
// pool, the profiles' free slots) is computed when /metrics is scraped,
// from one pass over the host table, so that it costs nothing between
// scrapes. The other packages know nothing of Prometheus: they keep plain
// counters (provision.Counts, the dnsmasq supervisor's Restarts and
// Reloads) or call a hook (gitdir.Options.OnBatch, ObserveRequest,
// CountEvent through timeline.Timeline.Observe) that this package reads or
// implements.
//
// The families:
//
//	mayu_build_info{version,commit,goversion}               gauge, always 1
//	mayu_http_requests_total{route,method,code}            counter; route is echo's route pattern ("/images/:serial/vmlinuz", "/*" for static files)
//	mayu_http_request_duration_seconds{route,method}       histogram
//	mayu_machines{state,profile}                           gauge, every state of every known profile
//	mayu_ip_range_addresses                                gauge: addresses of ip_range that may be handed out
//	mayu_ip_range_free_addresses                           gauge: of those, held by no record
//	mayu_profile_free_slots{profile}                       gauge: quantity less machines, for profiles with a quantity
//	mayu_registrations_total, mayu_final_configs_total,
//	mayu_installs_total, mayu_boot_completions_total        counters (provision.Counts)
//	mayu_dnsmasq_restarts_total, mayu_dnsmasq_reloads_total counters (the supervisor's)
//	mayu_dnsmasq_events_total{kind}                        counter: DHCP and TFTP events read from dnsmasq's log (timeline kinds: dhcp-ack, tftp-sent, ...)
//	mayu_store_commit_duration_seconds                     histogram: one group commit, applied and durable
//	mayu_store_commit_batch_size                           histogram: write requests per group commit
//
// plus the Go runtime's go_* and the process' process_* families.
package metrics

import (
	"net/http"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"mayu/pkg/provision"
	"mayu/pkg/timeline"
)

// Dnsmasq is what the metrics read of the dnsmasq supervisor
// (dnsmasq.Supervisor is one).
type Dnsmasq interface {
	// Restarts is how often dnsmasq was started again after its first
	// start; Reloads how often it was told to re-read its hosts file.
	Restarts() int
	Reloads() int
}

// Sources are what the scrape-time families are read from.
type Sources struct {
	// Version and Commit are mayu's (mayu_build_info).
	Version, Commit string
	// Provisioner gives the records' counts, the pool and the life-cycle
	// counters. Nil leaves those families out.
	Provisioner *provision.Provisioner
	// Dnsmasq gives the restart and reload counters; nil (--no-dnsmasq)
	// leaves them out.
	Dnsmasq Dnsmasq
}

// EventKinds are the timeline kinds CountEvent counts (those read from
// dnsmasq's log), each exported from the start with 0 so that rate() sees
// the first one.
var EventKinds = func() []timeline.Kind {
	var ks []timeline.Kind
	for _, k := range timeline.Kinds {
		if k.IsDHCP() || k.IsTFTP() {
			ks = append(ks, k)
		}
	}
	return ks
}()

// Metrics holds mayu's registry and the families fed on the request path.
type Metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	durations *prometheus.HistogramVec
	batchTime prometheus.Histogram
	batchSize prometheus.Histogram
	events    *prometheus.CounterVec
}

// New builds the registry with every family of the package comment.
func New(src Sources) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mayu_build_info",
		Help: "Always 1; the labels name mayu's version, the commit it was built from and the Go version.",
	}, []string{"version", "commit", "goversion"})
	build.WithLabelValues(src.Version, src.Commit, runtime.Version()).Set(1)

	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mayu_http_requests_total",
		Help: "HTTP requests answered, by echo route pattern, method and status code.",
	}, []string{"route", "method", "code"})
	m.durations = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "mayu_http_request_duration_seconds",
		Help: "Time from a request's arrival to its answer, by echo route pattern and method (image downloads take as long as the transfer).",
		// From a cached boot script (well under 1 ms) to a final config
		// waiting for a group commit in a storm, and image transfers.
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 120},
	}, []string{"route", "method"})
	m.batchTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "mayu_store_commit_duration_seconds",
		Help:    "Time to apply one group commit of the cluster directory and make it durable (files, git objects, fsyncs, branch update).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "mayu_store_commit_batch_size",
		Help:    "Write requests that shared one group commit of the cluster directory.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
	})
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mayu_dnsmasq_events_total",
		Help: "DHCP and TFTP events read from dnsmasq's log, by kind.",
	}, []string{"kind"})
	for _, k := range EventKinds {
		m.events.WithLabelValues(string(k))
	}
	m.reg.MustRegister(build, m.requests, m.durations, m.batchTime, m.batchSize, m.events)
	if src.Provisioner != nil {
		m.AddProvisioner(src.Provisioner)
	}
	if src.Dnsmasq != nil {
		m.AddDnsmasq(src.Dnsmasq)
	}
	return m
}

// AddDnsmasq adds the restart and reload counters of d, for a supervisor
// made after New (its log events reach CountEvent from its first start).
// Call it once.
func (m *Metrics) AddDnsmasq(d Dnsmasq) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mayu_dnsmasq_restarts_total",
			Help: "dnsmasq started again after its first start (a crash, a changed configuration).",
		}, func() float64 { return float64(d.Restarts()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mayu_dnsmasq_reloads_total",
			Help: "dnsmasq told (SIGHUP) to re-read its hosts file without a restart.",
		}, func() float64 { return float64(d.Reloads()) }),
	)
}

// AddProvisioner adds the families read from p (machines, pool, life-cycle
// counters), for a provisioner made after New: the store it writes to
// reports to ObserveBatch from its first commit on. Call it once.
func (m *Metrics) AddProvisioner(p *provision.Provisioner) {
	m.reg.MustRegister(&recordCollector{prov: p})
	m.reg.MustRegister(lifeCycleCounters(p)...)
}

// Registry is the registry, for tests and for adding collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler answers a scrape in the text exposition format (or protobuf,
// as the scraper asks). Errors of a collector are logged by the scrape
// answer as HTTP 500.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ObserveRequest counts an answered request: route is echo's route
// pattern (never the raw path, which would make one series per serial),
// code the status sent, took the time from arrival to answer. It does not
// allocate once a (route, method, code) has been seen.
func (m *Metrics) ObserveRequest(route, method string, code int, took time.Duration) {
	if route == "" {
		route = "none" // nothing matched: the router's 404 or 405
	}
	method = methodLabel(method)
	m.requests.WithLabelValues(route, method, codeLabel(code)).Inc()
	m.durations.WithLabelValues(route, method).Observe(took.Seconds())
}

// ObserveBatch records one group commit (gitdir.Options.OnBatch).
func (m *Metrics) ObserveBatch(requests int, took time.Duration) {
	m.batchSize.Observe(float64(requests))
	m.batchTime.Observe(took.Seconds())
}

// CountEvent counts e if it is a DHCP or TFTP event of dnsmasq's log;
// other kinds are not counted here. mayu passes it to Timeline.Observe,
// which calls it for every event published, under the timeline's lock:
// it only increments a counter.
func (m *Metrics) CountEvent(e timeline.Event) {
	if e.Kind.IsDHCP() || e.Kind.IsTFTP() {
		m.events.WithLabelValues(string(e.Kind)).Inc()
	}
}

// methodLabel bounds the method label to the methods HTTP defines: a
// client's invented method must not make a series of its own.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete,
		http.MethodPatch, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// codes are the status codes' labels, made once so that a request does
// not format one.
var codes = func() [600]string {
	var c [600]string
	for i := 100; i < len(c); i++ {
		c[i] = strconv.Itoa(i)
	}
	return c
}()

func codeLabel(code int) string {
	if code >= 100 && code < len(codes) {
		return codes[code]
	}
	return "other"
}

func lifeCycleCounters(p *provision.Provisioner) []prometheus.Collector {
	counter := func(name, help string, v func(provision.Counts) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v(p.Counts())) })
	}
	return []prometheus.Collector{
		counter("mayu_registrations_total", "New machine records (first sight of a serial).",
			func(c provision.Counts) uint64 { return c.Registrations }),
		counter("mayu_final_configs_total", "Final configs answered to installing machines (facts recorded, state installing).",
			func(c provision.Counts) uint64 { return c.FinalConfigs }),
		counter("mayu_installs_total", "Machines marked installed (set_installed).",
			func(c provision.Counts) uint64 { return c.Installs }),
		counter("mayu_boot_completions_total", "boot_complete reports of installed machines (state running).",
			func(c provision.Counts) uint64 { return c.BootCompletions }),
	}
}

// recordCollector computes the families that describe the records at
// scrape time, from one provision.Pool.
type recordCollector struct {
	prov *provision.Provisioner
}

var (
	machinesDesc = prometheus.NewDesc("mayu_machines",
		"Machine records by state and profile (every state of every known profile, zeros included).",
		[]string{"state", "profile"}, nil)
	addressesDesc = prometheus.NewDesc("mayu_ip_range_addresses",
		"Addresses of network.ip_range that may be handed out as static addresses (not in bootstrap_range, not reserved).", nil, nil)
	freeAddressesDesc = prometheus.NewDesc("mayu_ip_range_free_addresses",
		"Addresses of network.ip_range that may be handed out and no record holds.", nil, nil)
	freeSlotsDesc = prometheus.NewDesc("mayu_profile_free_slots",
		"New machines a profile with a quantity still takes (quantity less its machines).", []string{"profile"}, nil)
)

func (c *recordCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- machinesDesc
	ch <- addressesDesc
	ch <- freeAddressesDesc
	ch <- freeSlotsDesc
}

func (c *recordCollector) Collect(ch chan<- prometheus.Metric) {
	pool := c.prov.Pool()
	for _, m := range pool.Machines {
		ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(m.Count), string(m.State), m.Profile)
	}
	ch <- prometheus.MustNewConstMetric(addressesDesc, prometheus.GaugeValue, float64(pool.Addresses))
	ch <- prometheus.MustNewConstMetric(freeAddressesDesc, prometheus.GaugeValue, float64(pool.Free))
	for _, p := range pool.Profiles {
		if p.Limited {
			ch <- prometheus.MustNewConstMetric(freeSlotsDesc, prometheus.GaugeValue, float64(p.Free), p.Name)
		}
	}
}
