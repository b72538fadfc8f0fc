// Package storm simulates a boot storm against a Mayu-compatible HTTP API:
// many machines walking the registration life cycle at once (first-stage
// script, final config with their MACs, set_installed, boot_complete), mixed
// with operator listings and image range requests. It measures throughput
// and per-route latency, classifies errors, and checks the end state the
// storm must leave behind. The bootstorm command, the benchmark driver and
// the crash-safety test all use it.
package storm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Limits that keep a mistyped flag from turning the generator into a
// fork bomb or an unbounded memory sink.
const (
	MaxMachines    = 1_000_000
	MaxConcurrency = 4096
	// maxBody bounds how much of an answer is read: a final config is a
	// few KiB, a host list of 100,000 hosts a few tens of MiB.
	maxBody = 256 << 20
)

// Route names used in reports.
const (
	RouteFirstStage   = "GET /first-stage-script"
	RouteFinalConfig  = "POST /final-config"
	RouteSetInstalled = "PUT set_installed"
	RouteBootComplete = "PUT boot_complete"
	RouteHosts        = "GET /admin/hosts"
	RouteImageRange   = "GET image Range"
)

// Steps of the life cycle, in order. A machine's progress is the number of
// steps that got a 2xx answer.
var Steps = []string{RouteFirstStage, RouteFinalConfig, RouteSetInstalled, RouteBootComplete}

// Mix adds operator and image traffic to the life cycle. Rates are per
// machine: Hosts 0.1 issues one GET /admin/hosts for every tenth machine.
type Mix struct {
	Hosts float64
	Range float64
	// RangeBytes is the length of each image range request (default 64 KiB).
	RangeBytes int64
}

// Config describes one storm.
type Config struct {
	BaseURL      string
	Machines     int
	Concurrency  int
	SerialPrefix string
	// First is the index of the first machine (serials are
	// <prefix><index>), so storms can be split or resumed.
	First int
	Mix   Mix
	// Ignition posts to /final-ignition-config.json instead of
	// /final-cloud-config.yaml.
	Ignition bool
	// Client is used for every request; nil builds one sized for
	// Concurrency.
	Client *http.Client
	// Timeout bounds each request (default 30s).
	Timeout time.Duration
	// Retry keeps retrying a step that failed with a transport error or a
	// 5xx, with backoff, until this long after its first attempt. Zero
	// gives up on the first failure (what a benchmark wants: errors are
	// counted, not hidden).
	Retry time.Duration
	// Gate, when set, wraps every request: the crash test closes it to
	// hold the storm while it inspects the cluster directory.
	Gate *Gate
	// OnEvent, when set, is called after every request (concurrently).
	OnEvent func(Event)
	// Versions are sent with boot_complete.
	Versions map[string]string
	// Prepare, when set, runs before machine i's life cycle (i counts
	// from First) and returns the client its requests use: the full-stack
	// storm boots the machine through DHCP and TFTP there and hands back a
	// client bound to its leased address. An error fails the machine
	// before its first step. The image length is then not learnt (range
	// requests start at offset 0).
	Prepare func(ctx context.Context, i int) (*http.Client, error)
	// Done, when set, is called after a machine finished every step.
	Done func(ctx context.Context, i int)
}

// Event is one request's outcome.
type Event struct {
	Machine  int
	Serial   string
	Route    string
	Status   int // 0 for a transport error
	Err      error
	Duration time.Duration
	// OK: 2xx (206 for ranges).
	OK bool
}

// Result is what a storm measured.
type Result struct {
	BaseURL     string           `json:"base_url"`
	Machines    int              `json:"machines"`
	Concurrency int              `json:"concurrency"`
	Completed   int              `json:"completed"` // machines that finished every step
	Failed      int              `json:"failed"`
	Duration    Duration         `json:"duration"`
	PerSecond   float64          `json:"machines_per_second"`
	Routes      map[string]Stats `json:"routes"`
	// Errors counts failures by kind: "POST /final-config: status 500",
	// "PUT set_installed: transport: connection refused".
	Errors    map[string]int `json:"errors,omitempty"`
	Retries   int            `json:"retries"`
	Serials   []string       `json:"-"`
	Progress  []int          `json:"-"` // per machine: steps that got a 2xx
	LastError []string       `json:"-"` // per machine, when it failed
}

// Duration marshals as seconds.
type Duration time.Duration

// MarshalJSON writes seconds as a number.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).Seconds())
}

// UnmarshalJSON reads seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s float64
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*d = Duration(s * float64(time.Second))
	return nil
}

// Stats are the latencies of one route.
type Stats struct {
	Count  int     `json:"count"`
	Errors int     `json:"errors"`
	P50ms  float64 `json:"p50_ms"`
	P90ms  float64 `json:"p90_ms"`
	P99ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
	MeanMs float64 `json:"mean_ms"`
}

// Serial is the serial of machine i of a storm.
func Serial(prefix string, i int) string { return fmt.Sprintf("%s%06d", prefix, i) }

// MACs are the two MAC addresses of machine i: locally administered,
// with a byte derived from the prefix so storms with different prefixes
// do not share addresses.
func MACs(prefix string, i int) [2]string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(prefix))
	p := byte(h.Sum32())
	mk := func(nic int) string {
		return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", p, byte(i>>16), byte(i>>8), byte(i), nic)
	}
	return [2]string{mk(0), mk(1)}
}

// IPMIAddr is the IPMI address machine i reports.
func IPMIAddr(i int) string {
	return fmt.Sprintf("10.%d.%d.%d", 200+(i>>16)%50, byte(i>>8), byte(i))
}

// Facts is the body machine i posts for its final config, in the wire
// format of the host-info helper.
func Facts(prefix string, i int) []byte {
	macs := MACs(prefix, i)
	type netDev struct{ Name, MacAddress string }
	b, _ := json.Marshal(struct {
		Serial       string
		NetDevs      []netDev
		IPMIAddress  string
		ConnectedNIC string
	}{Serial(prefix, i), []netDev{{"eth0", macs[0]}, {"eth1", macs[1]}}, IPMIAddr(i), "eth0"})
	return b
}

// DefaultVersions is what a machine reports at boot_complete unless told
// otherwise.
var DefaultVersions = map[string]string{
	"CoreOSVersion": "1068.6.0", "MayuVersion": "bootstorm", "DockerVersion": "1.10.3",
	"EtcdVersion": "2.3.1", "FleetVersion": "0.11.7",
}

func (c *Config) validate() error {
	if c.BaseURL == "" {
		return errors.New("storm: no base URL")
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.Machines < 0 || c.Machines > MaxMachines {
		return fmt.Errorf("storm: machines %d out of 0..%d", c.Machines, MaxMachines)
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		return fmt.Errorf("storm: concurrency %d out of 1..%d", c.Concurrency, MaxConcurrency)
	}
	if c.Mix.Hosts < 0 || c.Mix.Range < 0 || c.Mix.Hosts > 100 || c.Mix.Range > 100 {
		return errors.New("storm: mix rates must be between 0 and 100 per machine")
	}
	if c.Mix.RangeBytes <= 0 {
		c.Mix.RangeBytes = 64 << 10
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.Client == nil {
		c.Client = NewClient(c.Concurrency)
	}
	if c.Versions == nil {
		c.Versions = DefaultVersions
	}
	return nil
}

// NewClient returns a client that keeps enough idle connections for
// concurrency workers, as a fleet of machines would hold.
func NewClient(concurrency int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = concurrency * 2
	t.MaxIdleConnsPerHost = concurrency * 2
	t.DisableCompression = true
	return &http.Client{Transport: t}
}

// recorder collects latencies and errors from every worker.
type recorder struct {
	mu      sync.Mutex
	lat     map[string][]time.Duration
	errs    map[string]int
	errRt   map[string]int
	retries int
	on      func(Event)
}

func newRecorder(on func(Event)) *recorder {
	return &recorder{lat: map[string][]time.Duration{}, errs: map[string]int{}, errRt: map[string]int{}, on: on}
}

func (r *recorder) add(ev Event) {
	r.mu.Lock()
	r.lat[ev.Route] = append(r.lat[ev.Route], ev.Duration)
	if !ev.OK {
		r.errs[ev.Route+": "+ErrorKind(ev.Status, ev.Err)]++
		r.errRt[ev.Route]++
	}
	r.mu.Unlock()
	if r.on != nil {
		r.on(ev)
	}
}

// ErrorKind names a failure: "status 500" or "transport: <kind>".
func ErrorKind(status int, err error) string {
	if err == nil {
		return fmt.Sprintf("status %d", status)
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "transport: timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "transport: connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "transport: connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "transport: connection closed (EOF)"
	case errors.Is(err, syscall.EPIPE):
		return "transport: broken pipe"
	case errors.Is(err, errBodyTooLarge):
		return "answer larger than the bound"
	case errors.Is(err, errShortRange):
		return "range answer of the wrong length"
	}
	return "transport: other"
}

var (
	errBodyTooLarge = errors.New("storm: answer larger than the bound")
	errShortRange   = errors.New("storm: range answer of the wrong length")
)

func (r *recorder) stats() map[string]Stats {
	out := map[string]Stats{}
	for route, ds := range r.lat {
		out[route] = Summarize(ds, r.errRt[route])
	}
	return out
}

// Summarize computes count, percentiles and max of durations.
func Summarize(ds []time.Duration, errs int) Stats {
	if len(ds) == 0 {
		return Stats{Errors: errs}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	pct := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.5) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(s) {
			i = len(s) - 1
		}
		return s[i]
	}
	return Stats{Count: len(s), Errors: errs, P50ms: ms(pct(0.50)), P90ms: ms(pct(0.90)), P99ms: ms(pct(0.99)),
		MaxMs: ms(s[len(s)-1]), MeanMs: ms(sum / time.Duration(len(s)))}
}

// Run runs the storm until every machine finished or failed, or ctx ends.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rec := newRecorder(cfg.OnEvent)
	res := &Result{
		BaseURL: cfg.BaseURL, Machines: cfg.Machines, Concurrency: cfg.Concurrency,
		Serials: make([]string, cfg.Machines), Progress: make([]int, cfg.Machines), LastError: make([]string, cfg.Machines),
	}
	for i := range res.Serials {
		res.Serials[i] = Serial(cfg.SerialPrefix, cfg.First+i)
	}
	var imageSize int64 = -1
	if cfg.Mix.Range > 0 && cfg.Machines > 0 && cfg.Prepare == nil {
		// The image length is learnt once, untimed: ranges are spread over
		// the whole file as resuming machines would ask.
		imageSize = headLength(ctx, cfg, res.Serials[0])
	}
	var retries atomic.Int64
	next := atomic.Int64{}
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < cfg.Concurrency && w < cfg.Machines; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.Machines || ctx.Err() != nil {
					return
				}
				m := &machine{cfg: &cfg, rec: rec, idx: cfg.First + i, serial: res.Serials[i], retries: &retries, imageSize: imageSize, client: cfg.Client}
				if cfg.Prepare != nil {
					c, err := cfg.Prepare(ctx, cfg.First+i)
					if err != nil {
						res.LastError[i] = err.Error()
						continue
					}
					m.client = c
				}
				res.Progress[i], res.LastError[i] = m.run(ctx, i)
				if cfg.Prepare != nil {
					m.client.CloseIdleConnections()
				}
				if cfg.Done != nil && res.Progress[i] == len(Steps) {
					cfg.Done(ctx, cfg.First+i)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.Duration = Duration(elapsed)
	for _, p := range res.Progress {
		if p == len(Steps) {
			res.Completed++
		} else {
			res.Failed++
		}
	}
	if elapsed > 0 {
		res.PerSecond = float64(res.Completed) / elapsed.Seconds()
	}
	rec.mu.Lock()
	res.Routes = rec.stats()
	if len(rec.errs) > 0 {
		res.Errors = rec.errs
	}
	rec.mu.Unlock()
	res.Retries = int(retries.Load())
	return res, ctx.Err()
}

type machine struct {
	cfg       *Config
	rec       *recorder
	idx       int
	serial    string
	retries   *atomic.Int64
	imageSize int64
	client    *http.Client
}

// run walks the life cycle; it returns how many steps succeeded and the
// last failure.
func (m *machine) run(ctx context.Context, i int) (int, string) {
	c := m.cfg
	base := c.BaseURL
	final := base + "/final-cloud-config.yaml"
	if c.Ignition {
		final = base + "/final-ignition-config.json"
	}
	vers, _ := json.Marshal(c.Versions)
	steps := []struct {
		route, method, url string
		body               []byte
		want               int
	}{
		{RouteFirstStage, http.MethodGet, base + "/first-stage-script/" + m.serial, nil, http.StatusOK},
		{RouteFinalConfig, http.MethodPost, final, Facts(c.SerialPrefix, m.idx), http.StatusOK},
		{RouteSetInstalled, http.MethodPut, base + "/admin/host/" + m.serial + "/set_installed", nil, http.StatusAccepted},
		{RouteBootComplete, http.MethodPut, base + "/admin/host/" + m.serial + "/boot_complete", vers, http.StatusAccepted},
	}
	done := 0
	for _, s := range steps {
		if err := m.step(ctx, s.route, s.method, s.url, s.body, nil); err != nil {
			return done, err.Error()
		}
		done++
		// The image download happens between the final config and
		// set_installed, as in the first-stage script.
		if s.route == RouteFinalConfig {
			for n := perMachine(c.Mix.Range, i); n > 0; n-- {
				m.rangeRequest(ctx)
			}
		}
	}
	for n := perMachine(c.Mix.Hosts, i); n > 0; n-- {
		m.once(ctx, RouteHosts, http.MethodGet, base+"/admin/hosts", nil, nil)
	}
	return done, ""
}

// perMachine spreads a fractional rate evenly: machine i issues
// floor((i+1)r) - floor(ir) requests.
func perMachine(rate float64, i int) int {
	return int(float64(i+1)*rate) - int(float64(i)*rate)
}

// step runs one life-cycle request, retrying as configured.
func (m *machine) step(ctx context.Context, route, method, url string, body []byte, hdr http.Header) error {
	first := time.Now()
	backoff := 50 * time.Millisecond
	for {
		status, err := m.once(ctx, route, method, url, body, hdr)
		if err == nil && status >= 200 && status < 300 {
			return nil
		}
		retryable := err != nil || status >= 500
		if m.cfg.Retry <= 0 || !retryable || time.Since(first) > m.cfg.Retry || ctx.Err() != nil {
			if err != nil {
				return fmt.Errorf("%s %s: %w", route, m.serial, err)
			}
			return fmt.Errorf("%s %s: status %d", route, m.serial, status)
		}
		m.retries.Add(1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		if backoff < time.Second {
			backoff *= 2
		}
	}
}

// once sends one request and records it.
func (m *machine) once(ctx context.Context, route, method, url string, body []byte, hdr http.Header) (int, error) {
	if m.cfg.Gate != nil {
		m.cfg.Gate.enter()
		defer m.cfg.Gate.leave()
	}
	status, n, d, err := Do(ctx, m.client, m.cfg.Timeout, method, url, body, hdr)
	ok := err == nil && status >= 200 && status < 300
	if err == nil && route == RouteImageRange && ok {
		if want := hdrRangeLen(hdr); status != http.StatusPartialContent || (want > 0 && n != want) {
			err, ok = errShortRange, false
		}
	}
	m.rec.add(Event{Machine: m.idx, Serial: m.serial, Route: route, Status: status, Err: err, Duration: d, OK: ok})
	return status, err
}

func (m *machine) rangeRequest(ctx context.Context) {
	size := m.imageSize
	if size <= 0 {
		size = m.cfg.Mix.RangeBytes
	}
	n := m.cfg.Mix.RangeBytes
	if n > size {
		n = size
	}
	// A deterministic offset per machine spreads ranges over the file.
	off := int64(0)
	if size > n {
		h := fnv.New64a()
		_, _ = h.Write([]byte(m.serial))
		off = int64(h.Sum64() % uint64(size-n))
	}
	hdr := http.Header{"Range": []string{fmt.Sprintf("bytes=%d-%d", off, off+n-1)}}
	_, _ = m.once(ctx, RouteImageRange, http.MethodGet, m.cfg.BaseURL+"/images/"+m.serial+"/install_image.bin.bz2", nil, hdr)
}

func hdrRangeLen(h http.Header) int64 {
	var a, b int64
	if _, err := fmt.Sscanf(h.Get("Range"), "bytes=%d-%d", &a, &b); err != nil {
		return -1
	}
	return b - a + 1
}

func headLength(ctx context.Context, cfg Config, serial string) int64 {
	// The machine must exist for its image route to answer: register it
	// (its first-stage request later finds it registered, as a machine
	// that rebooted would).
	_, _, _, _ = Do(ctx, cfg.Client, cfg.Timeout, http.MethodGet, cfg.BaseURL+"/first-stage-script/"+serial, nil, nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, cfg.BaseURL+"/images/"+serial+"/install_image.bin.bz2", nil)
	if err != nil {
		return -1
	}
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.ContentLength
}

// Do sends one request with its own timeout and reads (at most maxBody
// of) the answer. It returns the status, the bytes read and the time to
// the end of the answer.
func Do(ctx context.Context, client *http.Client, timeout time.Duration, method, url string, body []byte, hdr http.Header) (int, int64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return 0, 0, 0, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, time.Since(start), err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody+1))
	d := time.Since(start)
	if err == nil && n > maxBody {
		err = errBodyTooLarge
	}
	return resp.StatusCode, n, d, err
}

// Gate lets a test hold the storm: Close waits for the requests in flight
// and blocks new ones until Open.
type Gate struct{ mu sync.RWMutex }

func (g *Gate) enter() { g.mu.RLock() }
func (g *Gate) leave() { g.mu.RUnlock() }

// Close blocks new requests and returns once none is in flight.
func (g *Gate) Close() { g.mu.Lock() }

// Open lets requests through again.
func (g *Gate) Open() { g.mu.Unlock() }

// Preload registers n machines (first-stage request only) with
// concurrency c, untimed by the storm's figures. It returns how long it
// took and the first error.
func Preload(ctx context.Context, base, prefix string, n, c int, client *http.Client) (time.Duration, error) {
	if n <= 0 {
		return 0, nil
	}
	if c < 1 {
		c = 1
	}
	if client == nil {
		client = NewClient(c)
	}
	base = strings.TrimRight(base, "/")
	start := time.Now()
	var next atomic.Int64
	var once sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < c && w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				status, _, _, err := Do(ctx, client, time.Minute, http.MethodGet, base+"/first-stage-script/"+Serial(prefix, i), nil, nil)
				if err == nil && status != http.StatusOK {
					err = fmt.Errorf("status %d", status)
				}
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("storm: preload %s: %w", Serial(prefix, i), err) })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return time.Since(start), firstErr
}

// ProcessRSS reads the resident and peak resident memory of a process
// from /proc (Linux), in KiB.
func ProcessRSS(pid int) (rss, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		var v int64
		if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &v); err == nil {
			rss = v
		}
		if _, err := fmt.Sscanf(line, "VmHWM: %d kB", &v); err == nil {
			peak = v
		}
	}
	return rss, peak, nil
}
