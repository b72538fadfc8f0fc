// Command bootstorm simulates a boot storm against a running Mayu (or any
// server speaking Mayu's HTTP API): M machines, C at a time, each walking
// the real life cycle over HTTP, mixed with operator listings and image
// range requests. It prints machines/s, per-route latency percentiles and
// errors by kind, then checks the end state: every machine running, no
// address held twice, profile quantities exact (-config), every audit
// message in git log (-cluster-dir).
//
//	bootstorm -url http://127.0.0.1:4080 -machines 2000 -concurrency 32 \
//	  -config config.yaml -cluster-dir ./cluster -mix hosts=0.01,range=1
//
// It exits 1 when any request failed or a check did not hold.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"mayu/pkg/auth"
	"mayu/pkg/config"
	"mayu/tools/storm"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type options struct {
	url          string
	token        string
	machines     int
	concurrency  int
	prefix       string
	clusterDir   string
	configPath   string
	mix          string
	rangeBytes   int64
	preload      int
	preloadConc  int
	jsonOut      bool
	timeout      time.Duration
	deadline     time.Duration
	retry        time.Duration
	ignition     bool
	noCheck      bool
	allowRemote  bool
	imageClients int
	imageCompare string
	imageResume  bool
	imageSerial  string
}

// report is the -json output.
type report struct {
	Preload        int                 `json:"preload,omitempty"`
	PreloadSeconds float64             `json:"preload_seconds,omitempty"`
	Storm          *storm.Result       `json:"storm,omitempty"`
	Check          *storm.Check        `json:"check,omitempty"`
	Image          *storm.ImageResult  `json:"image,omitempty"`
	ImageCompare   *storm.ImageResult  `json:"image_compare,omitempty"`
	ImageRatio     float64             `json:"image_ratio,omitempty"`
	Resume         *storm.ResumeResult `json:"resume,omitempty"`
	Failures       []string            `json:"failures,omitempty"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bootstorm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.url, "url", "http://127.0.0.1:4080", "base URL of mayu")
	fs.StringVar(&o.token, "token", os.Getenv("MAYU_TOKEN"), "admin token of mayu, for GET /admin/hosts (default $MAYU_TOKEN)")
	fs.IntVar(&o.machines, "machines", 100, "simulated machines")
	fs.IntVar(&o.concurrency, "concurrency", 8, "machines in flight at once")
	fs.StringVar(&o.prefix, "serial-prefix", "", "serial prefix (default storm-<random>-); serials are <prefix><6 digits>")
	fs.StringVar(&o.clusterDir, "cluster-dir", "", "mayu's cluster directory: check every audit message in its git log")
	fs.StringVar(&o.configPath, "config", "", "mayu's config.yaml: check the profile quantities")
	fs.StringVar(&o.mix, "mix", "", "extra requests per machine, e.g. hosts=0.05,range=2")
	fs.Int64Var(&o.rangeBytes, "range-bytes", 64<<10, "length of each image range request")
	fs.IntVar(&o.preload, "preload", 0, "register this many hosts first (untimed)")
	fs.IntVar(&o.preloadConc, "preload-concurrency", 16, "concurrency of -preload")
	fs.BoolVar(&o.jsonOut, "json", false, "print the report as JSON")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "bound of one request")
	fs.DurationVar(&o.deadline, "deadline", 30*time.Minute, "bound of the whole run")
	fs.DurationVar(&o.retry, "retry", 0, "retry failed steps (transport errors, 5xx) for this long; 0 counts them as failures")
	fs.BoolVar(&o.ignition, "ignition", false, "post to /final-ignition-config.json (mayu --use-ignition)")
	fs.BoolVar(&o.noCheck, "no-check", false, "skip the end-state check")
	fs.BoolVar(&o.allowRemote, "allow-remote", false, "allow a URL that is not on loopback (the storm writes host records)")
	fs.IntVar(&o.imageClients, "image-clients", 0, "after the storm, download the install image with this many concurrent clients")
	fs.StringVar(&o.imageCompare, "image-compare-url", "", "URL of the same image on another server (nginx): measured in the same run for a ratio")
	fs.BoolVar(&o.imageResume, "image-resume", false, "cut an image download mid-file and resume it with a Range request")
	fs.StringVar(&o.imageSerial, "image-serial", "", "serial whose install image is downloaded (default: the storm's first machine)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bootstorm: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := checkURL(o.url, o.allowRemote); err != nil {
		fmt.Fprintln(stderr, "bootstorm:", err)
		return 2
	}
	if o.prefix == "" {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		o.prefix = "storm-" + hex.EncodeToString(b) + "-"
	}
	mix, err := parseMix(o.mix)
	if err != nil {
		fmt.Fprintln(stderr, "bootstorm:", err)
		return 2
	}
	mix.RangeBytes = o.rangeBytes
	var cluster *config.Config
	if o.configPath != "" {
		if cluster, err = config.Load(o.configPath); err != nil {
			fmt.Fprintln(stderr, "bootstorm:", err)
			return 2
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.deadline)
	defer cancel()

	rep := &report{}
	client := storm.NewClient(max(o.concurrency, o.preloadConc, o.imageClients))
	client.Transport = auth.WithToken(client.Transport, o.token)
	if o.preload > 0 {
		d, err := storm.Preload(ctx, o.url, o.prefix+"pre-", o.preload, o.preloadConc, client)
		rep.Preload, rep.PreloadSeconds = o.preload, d.Seconds()
		if err != nil {
			rep.Failures = append(rep.Failures, err.Error())
			return finish(rep, o, stdout, stderr)
		}
		if !o.jsonOut {
			fmt.Fprintf(stdout, "preloaded %d hosts in %.1fs (%.0f/s, concurrency %d)\n", o.preload, d.Seconds(), float64(o.preload)/d.Seconds(), o.preloadConc)
		}
	}
	if o.machines > 0 {
		res, err := storm.Run(ctx, storm.Config{
			BaseURL: o.url, Machines: o.machines, Concurrency: o.concurrency, SerialPrefix: o.prefix,
			Mix: mix, Ignition: o.ignition, Client: client, Timeout: o.timeout, Retry: o.retry,
		})
		if res == nil {
			fmt.Fprintln(stderr, "bootstorm:", err)
			return 2
		}
		rep.Storm = res
		if err != nil {
			rep.Failures = append(rep.Failures, "storm cut short: "+err.Error())
		}
		if res.Failed > 0 {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%d of %d machines did not finish the life cycle", res.Failed, res.Machines))
		}
		for k, n := range res.Errors {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%d× %s", n, k))
		}
		if !o.noCheck && ctx.Err() == nil {
			chk, err := storm.CheckEndState(ctx, storm.CheckConfig{
				BaseURL: o.url, Client: client, Serials: res.Serials, Cluster: cluster, ClusterDir: o.clusterDir,
			})
			if err != nil {
				rep.Failures = append(rep.Failures, "check: "+err.Error())
			} else {
				rep.Check = chk
				rep.Failures = append(rep.Failures, chk.Problems...)
			}
		}
	}
	if o.imageClients > 0 || o.imageResume {
		serial := o.imageSerial
		if serial == "" {
			serial = storm.Serial(o.prefix, 0)
		}
		imgURL := strings.TrimRight(o.url, "/") + "/images/" + serial + "/install_image.bin.bz2"
		imageRun(ctx, rep, o, client, imgURL)
	}
	return finish(rep, o, stdout, stderr)
}

func imageRun(ctx context.Context, rep *report, o options, client *http.Client, imgURL string) {
	// Large downloads get a generous bound of their own.
	timeout := max(o.timeout, 10*time.Minute)
	if o.imageClients > 0 {
		// Interleave the two servers so neither gets a warmer cache or a
		// quieter machine: ours, theirs, ours, theirs; the better of each
		// pair is reported.
		rounds := 1
		if o.imageCompare != "" {
			if err := checkURL(o.imageCompare, o.allowRemote); err != nil {
				rep.Failures = append(rep.Failures, err.Error())
				return
			}
			rounds = 2
		}
		for r := 0; r < rounds; r++ {
			ours := storm.ImageDownload(ctx, client, imgURL, o.imageClients, -1, timeout)
			if rep.Image == nil || ours.MBps > rep.Image.MBps {
				rep.Image = &ours
			}
			if o.imageCompare != "" {
				theirs := storm.ImageDownload(ctx, client, o.imageCompare, o.imageClients, -1, timeout)
				if rep.ImageCompare == nil || theirs.MBps > rep.ImageCompare.MBps {
					rep.ImageCompare = &theirs
				}
			}
		}
		for _, e := range rep.Image.Errors {
			rep.Failures = append(rep.Failures, "image: "+e)
		}
		if rep.ImageCompare != nil {
			for _, e := range rep.ImageCompare.Errors {
				rep.Failures = append(rep.Failures, "image compare: "+e)
			}
			if rep.ImageCompare.MBps > 0 {
				rep.ImageRatio = rep.Image.MBps / rep.ImageCompare.MBps
			}
		}
	}
	if o.imageResume {
		r := storm.ResumeDownload(ctx, client, imgURL, timeout)
		rep.Resume = &r
		if r.Error != "" {
			rep.Failures = append(rep.Failures, "resume: "+r.Error)
		}
	}
}

func finish(rep *report, o options, stdout, stderr io.Writer) int {
	sort.Strings(rep.Failures)
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "bootstorm:", err)
			return 2
		}
	} else {
		printReport(stdout, rep)
	}
	if len(rep.Failures) > 0 {
		return 1
	}
	return 0
}

func printReport(w io.Writer, rep *report) {
	if r := rep.Storm; r != nil {
		fmt.Fprintf(w, "%d machines, concurrency %d, against %s\n", r.Machines, r.Concurrency, r.BaseURL)
		fmt.Fprintf(w, "completed %d, failed %d in %.2fs: %.1f machines/s (retries %d)\n",
			r.Completed, r.Failed, time.Duration(r.Duration).Seconds(), r.PerSecond, r.Retries)
		routes := make([]string, 0, len(r.Routes))
		for k := range r.Routes {
			routes = append(routes, k)
		}
		order := map[string]int{}
		for i, s := range append(append([]string{}, storm.Steps...), storm.RouteHosts, storm.RouteImageRange) {
			order[s] = i
		}
		sort.Slice(routes, func(i, j int) bool { return order[routes[i]] < order[routes[j]] })
		fmt.Fprintf(w, "%-24s %7s %6s %9s %9s %9s %9s\n", "route", "count", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms")
		for _, k := range routes {
			s := r.Routes[k]
			fmt.Fprintf(w, "%-24s %7d %6d %9.2f %9.2f %9.2f %9.2f\n", k, s.Count, s.Errors, s.P50ms, s.P90ms, s.P99ms, s.MaxMs)
		}
	}
	if c := rep.Check; c != nil {
		fmt.Fprintf(w, "end state: %d hosts, %d storm machines not running, %d missing, %d duplicate addresses, profiles %v",
			c.Hosts, c.NotInWantState, c.Missing, c.DuplicateAddrs, c.Profiles)
		if c.Commits > 0 {
			fmt.Fprintf(w, ", %d commits, %d audit messages missing", c.Commits, c.MissingAudit)
		}
		fmt.Fprintln(w)
	}
	if i := rep.Image; i != nil {
		fmt.Fprintf(w, "image: %d clients, %.0f MB in %.2fs: %.0f MB/s (slowest client %.0f MB/s)\n",
			i.Clients, float64(i.Bytes)/1e6, time.Duration(i.Elapsed).Seconds(), i.MBps, i.SlowestMBps)
	}
	if i := rep.ImageCompare; i != nil {
		fmt.Fprintf(w, "image compare (%s): %.0f MB/s (slowest client %.0f MB/s); ratio ours/theirs %.2f\n",
			i.URL, i.MBps, i.SlowestMBps, rep.ImageRatio)
	}
	if r := rep.Resume; r != nil {
		fmt.Fprintf(w, "resume at byte %d of %d: status %d, %s, identical %v\n", r.CutAt, r.Size, r.Status, r.ContentRange, r.Identical)
	}
	if len(rep.Failures) > 0 {
		fmt.Fprintf(w, "FAILED:\n  %s\n", strings.Join(rep.Failures, "\n  "))
	} else {
		fmt.Fprintln(w, "OK")
	}
}

// parseMix reads "hosts=0.05,range=2".
func parseMix(s string) (storm.Mix, error) {
	var m storm.Mix
	if strings.TrimSpace(s) == "" {
		return m, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return m, fmt.Errorf("-mix %q: want name=rate", part)
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 100 {
			return m, fmt.Errorf("-mix %q: rate must be a number from 0 to 100", part)
		}
		switch k {
		case "hosts":
			m.Hosts = f
		case "range":
			m.Range = f
		default:
			return m, fmt.Errorf("-mix %q: unknown request kind (hosts, range)", k)
		}
	}
	return m, nil
}

// checkURL refuses URLs that do not resolve to loopback unless allowed: a
// storm writes thousands of host records.
func checkURL(raw string, allowRemote bool) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("-url %q: want http(s)://host:port", raw)
	}
	if allowRemote {
		return nil
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return errors.New("refusing " + raw + ": not a loopback address (add -allow-remote to storm another machine)")
	}
	return nil
}
