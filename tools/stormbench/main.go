// Command stormbench measures every figure of docs/PERFORMANCE.md on this
// machine: it starts the real mayu binary on loopback with a fresh cluster
// directory per run (preloaded with 0, 1,000, 10,000 hosts), storms it with
// the bootstorm package at several concurrencies, times GET /admin/hosts,
// reads mayu's resident memory, and serves a 1 GiB install image to
// concurrent clients next to nginx serving the same file in the same run.
// Every process it starts it stops by PID; every wait is bounded.
//
//	stormbench -mayu bin/mayu -repo . -out dist/bench-storm.json
//	stormbench -mayu bin/mayu -repo . -quick            # one small storm
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"mayu/pkg/auth"
	"mayu/pkg/config"
	"mayu/pkg/proctest"
	"mayu/pkg/provision"
	"mayu/pkg/store/gitdir"
	"mayu/tools/storm"
)

// benchConfig gives room for 60,000 hosts and two profiles with
// quantities, so profile allocation is exercised and checked.
var benchLoop = proctest.LoopConfig{
	IPStart: "10.10.0.1", IPEnd: "10.10.250.254",
	Profiles: []proctest.Profile{
		{Name: "core-services", Quantity: 3, Tags: []string{"role-core=true"}},
		{Name: "workers", Quantity: 50, Tags: []string{"role-worker=true"}},
		{Name: "default", Tags: []string{"role-default=true"}},
	},
	SSHKey: "ssh-rsa AAAAB3Nza bench@example",
}

var benchConfig = proctest.Config(benchLoop)

type options struct {
	mayu, repo, work, out, nginx string
	quick                        bool
	preloads, concurrencies      []int
	machines                     int
	machinesFor                  map[int]int
	target                       bool
	image                        bool
	imageSize                    int64
	imageClients                 int
	httpPreload                  int
	hostsSamples                 int
	dnsmasq                      bool
	dnsmasqInner                 bool
	pxe                          []int
	pxeOnly                      bool
	pxeInner                     bool
	pxeServerNS                  string
}

// Results is the JSON the driver writes.
type Results struct {
	Started    time.Time         `json:"started"`
	CPUs       int               `json:"cpus"`
	Kernel     string            `json:"kernel"`
	LoadAvg    string            `json:"loadavg_at_start"`
	Generation []Generation      `json:"generation,omitempty"`
	Runs       []Run             `json:"runs,omitempty"`
	Listing    []Listing         `json:"listing,omitempty"`
	Memory     []Memory          `json:"memory,omitempty"`
	HTTPLoad   *HTTPPreload      `json:"http_preload,omitempty"`
	Image      *ImageComparison  `json:"image,omitempty"`
	Dnsmasq    []DnsmasqStorm    `json:"dnsmasq,omitempty"`
	PXE        []PXEStorm        `json:"pxe,omitempty"`
	Notes      []string          `json:"notes,omitempty"`
	Extra      map[string]string `json:"extra,omitempty"`
}

// Generation is the offline creation of a preloaded cluster directory.
type Generation struct {
	Hosts   int     `json:"hosts"`
	Seconds float64 `json:"seconds"`
}

// Run is one storm.
type Run struct {
	Preload     int           `json:"preload"`
	Concurrency int           `json:"concurrency"`
	Result      *storm.Result `json:"result"`
	Check       *storm.Check  `json:"check,omitempty"`
	LoadAvg     string        `json:"loadavg"`
}

// Listing is GET /admin/hosts timed sequentially.
type Listing struct {
	Hosts int         `json:"hosts"`
	Stats storm.Stats `json:"stats"`
	Bytes int64       `json:"bytes"`
}

// Memory is mayu's resident memory after a storm.
type Memory struct {
	Hosts  int   `json:"hosts"`
	RSSKiB int64 `json:"rss_kib"`
	HWMKiB int64 `json:"peak_rss_kib"`
}

// HTTPPreload is registering hosts over HTTP (git on), timed.
type HTTPPreload struct {
	Hosts       int     `json:"hosts"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"per_second"`
}

// ImageComparison is mayu against nginx on the same file.
type ImageComparison struct {
	SizeBytes int64               `json:"size_bytes"`
	Mayu      []storm.ImageResult `json:"mayu"`
	Nginx     []storm.ImageResult `json:"nginx"`
	Ratio     float64             `json:"ratio_best"`
	Resume    *storm.ResumeResult `json:"resume"`
	Error     string              `json:"error,omitempty"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stormbench:", err)
		os.Exit(1)
	}
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("stormbench", flag.ContinueOnError)
	var o options
	var preloads, concs string
	fs.StringVar(&o.mayu, "mayu", "bin/mayu", "mayu binary")
	fs.StringVar(&o.repo, "repo", ".", "repository root (templates, template_snippets, tftproot)")
	fs.StringVar(&o.work, "work", "", "work directory (default: a new temporary one, removed at the end)")
	fs.StringVar(&o.out, "out", "", "write the figures as JSON here")
	fs.StringVar(&o.nginx, "nginx", "/usr/sbin/nginx", "nginx binary for the image comparison")
	fs.BoolVar(&o.quick, "quick", false, "one storm of 200 machines at concurrency 16, no preload, no image")
	fs.StringVar(&preloads, "preloads", "0,1000,10000", "hosts registered before each storm")
	fs.StringVar(&concs, "concurrency", "1,8,32,128", "storm concurrencies")
	fs.IntVar(&o.machines, "machines", 400, "machines per storm")
	fs.BoolVar(&o.target, "target", true, "also run the target scenario: 2,000 hosts, concurrency 32")
	fs.BoolVar(&o.image, "image", true, "measure image serving against nginx")
	fs.Int64Var(&o.imageSize, "image-size", 1<<30, "install image size in bytes")
	fs.IntVar(&o.imageClients, "image-clients", 16, "concurrent image downloads")
	fs.IntVar(&o.httpPreload, "http-preload", 1000, "also time registering this many hosts over HTTP with git on (0: skip)")
	fs.IntVar(&o.hostsSamples, "hosts-samples", 50, "sequential GET /admin/hosts per listing figure")
	fs.BoolVar(&o.dnsmasq, "dnsmasq", true, "also storm mayu running real dnsmasq in a network namespace (root)")
	fs.BoolVar(&o.dnsmasqInner, "dnsmasq-inner", false, "internal: the part of -dnsmasq that runs inside the namespace")
	var pxe string
	fs.StringVar(&pxe, "pxe", "500,2000", "full-stack storms (DHCP, TFTP, iPXE, HTTP, ignored DHCP) of these many machines through real dnsmasq in network namespaces (root; empty: none)")
	fs.BoolVar(&o.pxeOnly, "pxe-only", false, "run only the full-stack storms of -pxe; exit 1 unless each had 0 failures and the end state held")
	fs.BoolVar(&o.pxeInner, "pxe-inner", false, "internal: the part of -pxe that runs inside the clients' namespace")
	fs.StringVar(&o.pxeServerNS, "pxe-server-ns", "", "internal: the server namespace of -pxe-inner")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if pxe != "" {
		var err error
		if o.pxe, err = intList(pxe); err != nil {
			return err
		}
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.preloads, err = intList(preloads); err != nil {
		return err
	}
	if o.concurrencies, err = intList(concs); err != nil {
		return err
	}
	if o.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["machines"] {
			o.machines = 200
		}
		if !set["concurrency"] {
			o.concurrencies = []int{16}
		}
		if !set["preloads"] {
			o.preloads = []int{0}
		}
		o.target, o.image, o.httpPreload = false, false, 0
	}
	if o.mayu, err = filepath.Abs(o.mayu); err != nil {
		return err
	}
	if o.repo, err = filepath.Abs(o.repo); err != nil {
		return err
	}
	if o.work == "" {
		if o.work, err = os.MkdirTemp("", "stormbench-"); err != nil {
			return err
		}
		defer os.RemoveAll(o.work)
	}
	cfgPath := filepath.Join(o.work, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(benchConfig), 0o644); err != nil {
		return err
	}
	cfg, err := config.Parse([]byte(benchConfig))
	if err != nil {
		return err
	}
	res := &Results{Started: time.Now().UTC(), CPUs: cpus(), Kernel: kernel(), LoadAvg: loadavg()}
	defer func() {
		if o.out != "" {
			b, _ := json.MarshalIndent(res, "", "  ")
			if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "stormbench:", err)
			}
		}
	}()

	b := &bench{o: o, cfg: cfg, cfgPath: cfgPath, res: res}
	if o.dnsmasqInner {
		r := b.dnsmasqInner(ctx, o.preloads[0])
		data, _ := json.MarshalIndent(r, "", "  ")
		o.out = "" // the outer process writes the figures
		return os.WriteFile(b.o.out, data, 0o644)
	}
	if o.pxeInner {
		r := b.pxeInner(ctx, o.pxeServerNS, o.machines)
		data, _ := json.MarshalIndent(r, "", "  ")
		o.out = ""
		return os.WriteFile(b.o.out, data, 0o644)
	}
	if o.pxeOnly {
		var failed []string
		for _, n := range o.pxe {
			r, err := b.pxeOuter(ctx, n)
			if err != nil {
				r = &PXEStorm{Machines: n, Error: err.Error()}
			}
			res.PXE = append(res.PXE, *r)
			if !r.OK() {
				printPXE(os.Stdout, r)
				failed = append(failed, fmt.Sprint(n))
			}
		}
		printSummary(os.Stdout, res)
		if len(failed) > 0 {
			return fmt.Errorf("full-stack storms of %s machines had failures or a wrong end state", strings.Join(failed, ", "))
		}
		return nil
	}
	if o.quick {
		for _, c := range o.concurrencies {
			if err := b.storm(ctx, o.preloads[0], c, o.machines, true); err != nil {
				return err
			}
		}
		printSummary(os.Stdout, res)
		return nil
	}
	if o.httpPreload > 0 {
		if err := b.httpPreload(ctx, o.httpPreload); err != nil {
			return err
		}
	}
	fleet := append([]int(nil), o.preloads...)
	if o.target && !containsInt(fleet, 2000) {
		fleet = append(fleet, 2000)
	}
	sort.Ints(fleet)
	for _, p := range fleet {
		concs := o.concurrencies
		if p == 2000 && !containsInt(o.preloads, 2000) {
			concs = []int{32}
		}
		for i, c := range concs {
			// Listing and memory figures after the last storm.
			if err := b.storm(ctx, p, c, o.machines, i == len(concs)-1); err != nil {
				return err
			}
		}
	}
	if o.dnsmasq {
		for _, p := range []int{0, 1000} {
			r, err := b.dnsmasqOuter(ctx, p)
			if err != nil {
				r = &DnsmasqStorm{Preload: p, Error: err.Error()}
				fmt.Fprintln(os.Stderr, "stormbench: dnsmasq:", err)
			}
			res.Dnsmasq = append(res.Dnsmasq, *r)
		}
	}
	for _, n := range o.pxe {
		r, err := b.pxeOuter(ctx, n)
		if err != nil {
			r = &PXEStorm{Machines: n, Error: err.Error()}
			fmt.Fprintln(os.Stderr, "stormbench: full-stack storm:", err)
		}
		res.PXE = append(res.PXE, *r)
	}
	if o.image {
		if err := b.imageBench(ctx); err != nil {
			res.Image = &ImageComparison{Error: err.Error()}
			fmt.Fprintln(os.Stderr, "stormbench: image:", err)
		}
	}
	printSummary(os.Stdout, res)
	return nil
}

type bench struct {
	o       options
	cfg     *config.Config
	cfgPath string
	res     *Results
	// templates[p] is a cluster directory with p hosts, copied per run.
	templates map[int]string
	// mayuHost is the address mayu binds to (127.0.0.1 unless in the
	// dnsmasq namespace), mayuDnsmasq the dnsmasq it runs (none if
	// empty), mayuExtra added flags.
	mayuHost    string
	mayuDnsmasq string
	mayuExtra   []string
	// mayuWrap runs mayu through another command (ip netns exec <ns>),
	// which execs it in place: the PID is mayu's.
	mayuWrap []string
}

func containsInt(l []int, n int) bool {
	for _, x := range l {
		if x == n {
			return true
		}
	}
	return false
}

// clusterTemplate returns a cluster directory with n registered hosts,
// generated offline once: the store without git (one file write per host)
// through the real provisioning rules, then opened once with git, which
// commits them all in one commit. Registering 10,000 hosts over HTTP with
// a commit each is measured separately (httpPreload).
func (b *bench) clusterTemplate(n int) (string, error) {
	if b.templates == nil {
		b.templates = map[int]string{}
	}
	if d, ok := b.templates[n]; ok {
		return d, nil
	}
	dir := filepath.Join(b.o.work, fmt.Sprintf("template-%d", n))
	start := time.Now()
	st, err := gitdir.Open(dir, gitdir.Options{NoGit: true})
	if err != nil {
		return "", err
	}
	prov, err := provision.New(provision.Config{Cluster: b.cfg, Store: st})
	if err != nil {
		return "", err
	}
	if err := prov.SetClusterToken("41f07d10ab835b22071a32d5c1b75a6d"); err != nil {
		return "", err
	}
	// Registration is serialised by the provisioner anyway; a few
	// goroutines keep the disk busy while one renders.
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				if _, _, err := prov.Register(storm.Serial("pre-", i)); err != nil {
					errc <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return "", err
	}
	if err := st.Close(); err != nil {
		return "", err
	}
	st, err = gitdir.Open(dir, gitdir.Options{})
	if err != nil {
		return "", err
	}
	if err := st.Close(); err != nil {
		return "", err
	}
	b.res.Generation = append(b.res.Generation, Generation{Hosts: n, Seconds: time.Since(start).Seconds()})
	fmt.Fprintf(os.Stderr, "generated a cluster directory with %d hosts in %.1fs\n", n, time.Since(start).Seconds())
	b.templates[n] = dir
	return dir, nil
}

// daemon is a running mayu, logging to log.
type daemon struct {
	*proctest.Proc
	base  string
	log   *os.File
	token string // its admin token, for GET /admin/hosts
}

// client is a storm client for n concurrent requests that sends d's admin
// token.
func (d *daemon) client(n int) *http.Client {
	return proctest.WithToken(storm.NewClient(n), d.token)
}

// startMayu starts mayu on a free port with its own cluster, images and
// static directories under runDir, and waits (5 minutes at most) until
// it answers.
func (b *bench) startMayu(ctx context.Context, runDir, cluster, images string) (*daemon, error) {
	f, args, err := proctest.Flags{Repo: b.o.repo, Dir: runDir, Config: b.cfgPath, Cluster: cluster, Images: images,
		Host: b.mayuHost, Dnsmasq: b.mayuDnsmasq}.Args()
	if err != nil {
		return nil, err
	}
	args = append(append(args, "--no-tls"), b.mayuExtra...)
	logf, err := os.Create(filepath.Join(runDir, "mayu.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(b.o.mayu, args...)
	if len(b.mayuWrap) > 0 {
		cmd = exec.Command(b.mayuWrap[0], append(append(b.mayuWrap[1:len(b.mayuWrap):len(b.mayuWrap)], b.o.mayu), args...)...)
	}
	p, err := proctest.Start(cmd, logf)
	if err != nil {
		logf.Close()
		return nil, err
	}
	token, err := auth.ClientToken(f.TokenFile)
	if err != nil {
		_ = p.Stop(30 * time.Second)
		logf.Close()
		return nil, err
	}
	d := &daemon{Proc: p, base: fmt.Sprintf("http://%s", net.JoinHostPort(f.Host, strconv.Itoa(f.Port))), log: logf, token: token}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := p.WaitHTTP(wctx, &http.Client{Timeout: 2 * time.Second}, d.base+"/"); err != nil {
		d.stop()
		out, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	return d, nil
}

// stop sends SIGTERM to mayu's PID, then SIGKILL after 30s.
func (d *daemon) stop() {
	defer d.log.Close()
	_ = d.Stop(30 * time.Second)
}

// copyDir copies a cluster directory template (cp -a keeps modes and
// times, so git's index stays valid).
func copyDir(ctx context.Context, src, dst string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "cp", "-a", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("cp -a %s %s: %w: %s", src, dst, err, out)
	}
	return nil
}

// storm runs one storm against a fresh copy of the preloaded cluster
// directory; with extra set it also times GET /admin/hosts and reads RSS.
func (b *bench) storm(ctx context.Context, preload, c, machines int, extra bool) error {
	runDir, err := os.MkdirTemp(b.o.work, fmt.Sprintf("run-p%d-c%d-", preload, c))
	if err != nil {
		return err
	}
	defer os.RemoveAll(runDir)
	cluster := filepath.Join(runDir, "cluster")
	if preload > 0 {
		tmpl, err := b.clusterTemplate(preload)
		if err != nil {
			return err
		}
		if err := copyDir(ctx, tmpl, cluster); err != nil {
			return err
		}
	}
	images := filepath.Join(runDir, "images", b.cfg.DefaultCoreOSVersion)
	if err := os.MkdirAll(images, 0o755); err != nil {
		return err
	}
	// A small image: the storm's range requests, not the big transfer.
	if err := writePattern(filepath.Join(images, "coreos_production_image.bin.bz2"), 4<<20); err != nil {
		return err
	}
	d, err := b.startMayu(ctx, runDir, cluster, filepath.Dir(images))
	if err != nil {
		return err
	}
	defer d.stop()
	la := loadavg()
	r, err := storm.Run(ctx, storm.Config{
		BaseURL: d.base, Machines: machines, Concurrency: c, SerialPrefix: fmt.Sprintf("s%d-c%d-", preload, c),
		Mix: storm.Mix{Hosts: 0.01, Range: 1}, Timeout: time.Minute,
		Client: d.client(c),
	})
	if err != nil {
		return err
	}
	chk, err := storm.CheckEndState(ctx, storm.CheckConfig{BaseURL: d.base, Client: d.client(1), Serials: r.Serials, Cluster: b.cfg, ClusterDir: cluster})
	if err != nil {
		return err
	}
	b.res.Runs = append(b.res.Runs, Run{Preload: preload, Concurrency: c, Result: r, Check: chk, LoadAvg: la})
	fmt.Fprintf(os.Stderr, "preload %5d  C=%3d  %6.1f machines/s  errors %v  check ok %v  (load %s)\n",
		preload, c, r.PerSecond, r.Errors, chk.OK(), la)
	if extra {
		l, err := listing(ctx, d.client(1), d.base, b.o.hostsSamples)
		if err != nil {
			return err
		}
		l.Hosts = chk.Hosts
		b.res.Listing = append(b.res.Listing, l)
		rss, hwm, err := storm.ProcessRSS(d.Cmd.Process.Pid)
		if err == nil {
			b.res.Memory = append(b.res.Memory, Memory{Hosts: chk.Hosts, RSSKiB: rss, HWMKiB: hwm})
		}
	}
	return nil
}

// listing times n sequential GET /admin/hosts.
func listing(ctx context.Context, client *http.Client, base string, n int) (Listing, error) {
	var ds []time.Duration
	var size int64
	for i := 0; i < n; i++ {
		status, nb, d, err := storm.Do(ctx, client, time.Minute, http.MethodGet, base+"/admin/hosts", nil, nil)
		if err != nil {
			return Listing{}, err
		}
		if status != http.StatusOK {
			return Listing{}, fmt.Errorf("GET /admin/hosts: %d", status)
		}
		ds = append(ds, d)
		size = nb
	}
	return Listing{Stats: storm.Summarize(ds, 0), Bytes: size}, nil
}

// httpPreload registers n hosts over HTTP with git on, as -preload does.
func (b *bench) httpPreload(ctx context.Context, n int) error {
	runDir, err := os.MkdirTemp(b.o.work, "http-preload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(runDir)
	d, err := b.startMayu(ctx, runDir, filepath.Join(runDir, "cluster"), filepath.Join(runDir, "images"))
	if err != nil {
		return err
	}
	defer d.stop()
	const c = 16
	took, err := storm.Preload(ctx, d.base, "pre-", n, c, nil)
	if err != nil {
		return err
	}
	b.res.HTTPLoad = &HTTPPreload{Hosts: n, Concurrency: c, Seconds: took.Seconds(), PerSecond: float64(n) / took.Seconds()}
	fmt.Fprintf(os.Stderr, "registered %d hosts over HTTP in %.1fs (%.1f/s)\n", n, took.Seconds(), float64(n)/took.Seconds())
	return nil
}

// writePattern writes size bytes of a non-repeating pattern (not sparse:
// the file is read from the page cache like a real image).
func writePattern(path string, size int64) error {
	if fi, err := os.Stat(path); err == nil && fi.Size() == size {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	var x uint64 = 0x9e3779b97f4a7c15
	for written := int64(0); written < size; {
		for i := 0; i+8 <= len(buf); i += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			for j := 0; j < 8; j++ {
				buf[i+j] = byte(x >> (8 * j))
			}
		}
		n := int64(len(buf))
		if size-written < n {
			n = size - written
		}
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		written += n
	}
	return f.Close()
}

const nginxConf = `daemon off;
master_process on;
worker_processes auto;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  types { application/octet-stream bz2; }
  server {
    listen 127.0.0.1:%[2]d;
    root %[3]s;
    location / { }
  }
}
`

// imageBench serves one big install image from mayu and from nginx, same
// file, same run, interleaved, then resumes a cut download.
func (b *bench) imageBench(ctx context.Context) error {
	runDir, err := os.MkdirTemp(b.o.work, "image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(runDir)
	imagesDir := filepath.Join(runDir, "images")
	versionDir := filepath.Join(imagesDir, b.cfg.DefaultCoreOSVersion)
	if err := os.MkdirAll(versionDir, 0o755); err != nil {
		return err
	}
	img := filepath.Join(versionDir, "coreos_production_image.bin.bz2")
	fmt.Fprintf(os.Stderr, "writing a %d MiB image\n", b.o.imageSize>>20)
	if err := writePattern(img, b.o.imageSize); err != nil {
		return err
	}
	d, err := b.startMayu(ctx, runDir, filepath.Join(runDir, "cluster"), imagesDir)
	if err != nil {
		return err
	}
	defer d.stop()
	serial := "image-bench-0"
	if status, _, _, err := storm.Do(ctx, storm.NewClient(1), time.Minute, http.MethodGet, d.base+"/first-stage-script/"+serial, nil, nil); err != nil || status != 200 {
		return fmt.Errorf("registering %s: %d %v", serial, status, err)
	}
	ours := d.base + "/images/" + serial + "/install_image.bin.bz2"

	nginxDir := filepath.Join(runDir, "nginx")
	if err := os.MkdirAll(nginxDir, 0o755); err != nil {
		return err
	}
	port, err := proctest.PickPort()
	if err != nil {
		return err
	}
	conf := filepath.Join(nginxDir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, nginxDir, port, imagesDir)), 0o644); err != nil {
		return err
	}
	ng := exec.Command(b.o.nginx, "-c", conf, "-p", nginxDir)
	// Its own process group, so its workers go with it; stopped by that
	// PID only.
	ng.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	nlog, err := os.Create(filepath.Join(nginxDir, "stderr.log"))
	if err != nil {
		return err
	}
	defer nlog.Close()
	ng.Stdout, ng.Stderr = nlog, nlog
	if err := ng.Start(); err != nil {
		return fmt.Errorf("nginx: %w", err)
	}
	ngDone := make(chan struct{})
	go func() { _ = ng.Wait(); close(ngDone) }()
	defer func() {
		_ = syscall.Kill(-ng.Process.Pid, syscall.SIGQUIT)
		select {
		case <-ngDone:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-ng.Process.Pid, syscall.SIGKILL)
			<-ngDone
		}
	}()
	theirs := fmt.Sprintf("http://127.0.0.1:%d/%s/coreos_production_image.bin.bz2", port, b.cfg.DefaultCoreOSVersion)
	client := &http.Client{Timeout: 5 * time.Second}
	ready := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodHead, theirs, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			ready = resp.StatusCode == 200
			if ready {
				break
			}
		}
	}
	if !ready {
		out, _ := os.ReadFile(filepath.Join(nginxDir, "error.log"))
		return fmt.Errorf("nginx did not serve %s within 30s: %s", theirs, out)
	}

	ic := &ImageComparison{SizeBytes: b.o.imageSize}
	b.res.Image = ic
	dl := storm.NewClient(b.o.imageClients)
	// Warm the page cache, then alternate: ours, theirs, three times.
	_ = storm.ImageDownload(ctx, dl, theirs, 1, b.o.imageSize, 10*time.Minute)
	bestOurs, bestTheirs := 0.0, 0.0
	for round := 0; round < 3; round++ {
		m := storm.ImageDownload(ctx, dl, ours, b.o.imageClients, b.o.imageSize, 30*time.Minute)
		n := storm.ImageDownload(ctx, dl, theirs, b.o.imageClients, b.o.imageSize, 30*time.Minute)
		ic.Mayu, ic.Nginx = append(ic.Mayu, m), append(ic.Nginx, n)
		bestOurs, bestTheirs = max(bestOurs, m.MBps), max(bestTheirs, n.MBps)
		fmt.Fprintf(os.Stderr, "image round %d: mayu %.0f MB/s, nginx %.0f MB/s (errors %d/%d)\n", round, m.MBps, n.MBps, len(m.Errors), len(n.Errors))
	}
	if bestTheirs > 0 {
		ic.Ratio = bestOurs / bestTheirs
	}
	r := storm.ResumeDownload(ctx, storm.NewClient(1), ours, 10*time.Minute)
	ic.Resume = &r
	return nil
}

func printSummary(w io.Writer, r *Results) {
	fmt.Fprintf(w, "\n%d CPUs, %s, load at start %s\n\n", r.CPUs, r.Kernel, r.LoadAvg)
	fmt.Fprintln(w, "| hosts before | C | machines/s | first-stage p50/p99 ms | final-config p50/p99 ms | set_installed p50/p99 ms | boot_complete p50/p99 ms | errors | end state |")
	fmt.Fprintln(w, "|---:|---:|---:|---|---|---|---|---|---|")
	for _, run := range r.Runs {
		s := run.Result
		pp := func(route string) string {
			st := s.Routes[route]
			return fmt.Sprintf("%.1f / %.1f", st.P50ms, st.P99ms)
		}
		errs := 0
		for _, n := range s.Errors {
			errs += n
		}
		state := "ok"
		if !run.Check.OK() {
			state = strings.Join(run.Check.Problems, "; ")
		}
		fmt.Fprintf(w, "| %d | %d | %.1f | %s | %s | %s | %s | %d | %s |\n", run.Preload, run.Concurrency, s.PerSecond,
			pp(storm.RouteFirstStage), pp(storm.RouteFinalConfig), pp(storm.RouteSetInstalled), pp(storm.RouteBootComplete), errs, state)
	}
	for _, l := range r.Listing {
		fmt.Fprintf(w, "GET /admin/hosts with %d hosts (%d bytes): p50 %.1f ms, p99 %.1f ms\n", l.Hosts, l.Bytes, l.Stats.P50ms, l.Stats.P99ms)
	}
	for _, m := range r.Memory {
		fmt.Fprintf(w, "mayu RSS with %d hosts: %d MiB (peak %d MiB)\n", m.Hosts, m.RSSKiB>>10, m.HWMKiB>>10)
	}
	if h := r.HTTPLoad; h != nil {
		fmt.Fprintf(w, "registering %d hosts over HTTP (C=%d, git on): %.1fs, %.1f/s\n", h.Hosts, h.Concurrency, h.Seconds, h.PerSecond)
	}
	for _, g := range r.Generation {
		fmt.Fprintf(w, "offline generation of %d hosts: %.1fs\n", g.Hosts, g.Seconds)
	}
	for _, d := range r.Dnsmasq {
		if d.Error != "" {
			fmt.Fprintf(w, "dnsmasq storm with %d hosts before: %s\n", d.Preload, d.Error)
			continue
		}
		fmt.Fprintf(w, "dnsmasq storm with %d hosts before: %d machines at %.1f/s, dnsmasq restarts %d (pid %d -> %d), hosts-file reloads %d, MACs ignored after set_installed: p50 %.1f ms, p99 %.1f ms, max %.1f ms, never %d\n",
			d.Preload, d.Result.Completed, d.Result.PerSecond, d.Restarts, d.PIDBefore, d.PIDAfter, d.Reloads, d.IgnoredAfter.P50ms, d.IgnoredAfter.P99ms, d.IgnoredAfter.MaxMs, d.NotIgnored)
	}
	for i := range r.PXE {
		printPXE(w, &r.PXE[i])
	}
	if i := r.Image; i != nil {
		if i.Error != "" {
			fmt.Fprintf(w, "image: %s\n", i.Error)
		} else {
			for k := range i.Mayu {
				fmt.Fprintf(w, "image %d MiB x %d clients, round %d: mayu %.0f MB/s (slowest client %.0f), nginx %.0f MB/s (slowest client %.0f)\n",
					i.SizeBytes>>20, i.Mayu[k].Clients, k, i.Mayu[k].MBps, i.Mayu[k].SlowestMBps, i.Nginx[k].MBps, i.Nginx[k].SlowestMBps)
			}
			fmt.Fprintf(w, "best mayu / best nginx: %.2f\n", i.Ratio)
			if i.Resume != nil {
				fmt.Fprintf(w, "resume: %+v\n", *i.Resume)
			}
		}
	}
}

func cpus() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
