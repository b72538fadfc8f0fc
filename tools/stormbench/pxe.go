package main

// The full-stack storm: N machines boot as PXE firmware and iPXE do,
// through real dnsmasq started by real mayu, then walk the HTTP life cycle
// from their leased addresses, then DHCP once more and must be ignored.
// Two network namespaces of our own, joined by one veth pair and routed
// nowhere else: the server's (mayu, dnsmasq on s0, 10.77.0.1/16) and the
// clients' (c0, 10.77.0.2/16), where this program runs. Root only.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"mayu/pkg/config"
	"mayu/pkg/proctest"
	"mayu/tools/storm"
)

// PXEStorm is what one full-stack storm measured.
type PXEStorm struct {
	Machines    int              `json:"machines"`
	Concurrency int              `json:"concurrency"`
	Result      *storm.Result    `json:"result,omitempty"` // the HTTP life cycle
	PXE         *storm.PXEResult `json:"pxe,omitempty"`    // DHCP, TFTP, boot script, ignored DHCP
	Check       *storm.Check     `json:"check,omitempty"`
	Restarts    int              `json:"dnsmasq_restarts"`
	LoadAvg     string           `json:"loadavg"`
	Error       string           `json:"error,omitempty"`
}

// OK reports 0 failures and the end state held.
func (r *PXEStorm) OK() bool {
	return r.Error == "" && r.Result != nil && r.Result.Failed == 0 && r.PXE != nil && len(r.PXE.Errors) == 0 &&
		r.PXE.Answered == 0 && r.Check != nil && r.Check.OK()
}

// The segment of the full-stack storm. The bootstrap range is a /20 that
// the clients' namespace routes to itself (AnyIP: "ip route add local"),
// so every machine's HTTP requests leave from its own leased address
// without an address per machine.
const (
	pxeServer    = "10.77.0.1"
	pxeClient    = "10.77.0.2"
	pxeBootCIDR  = "10.77.16.0/20"
	pxeBootStart = "10.77.16.1"
	pxeBootEnd   = "10.77.31.254"
)

func pxeConfig() string {
	c := benchLoop
	c.Interface, c.BindAddr, c.Gateway = "s0", pxeServer, pxeServer
	c.BootstrapStart, c.BootstrapEnd = pxeBootStart, pxeBootEnd
	return proctest.Config(c)
}

// pxeOuter creates both namespaces, runs this program in the clients' one
// with -pxe-inner, and removes them (and whatever runs in them, by PID)
// whatever happens.
func (b *bench) pxeOuter(ctx context.Context, machines int) (*PXEStorm, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the full-stack storm needs root (network namespaces)")
	}
	for _, bin := range []string{"/usr/sbin/dnsmasq", "busybox", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("the full-stack storm needs %s: %w", bin, err)
		}
	}
	tag := nsTag()
	srv, cli := "pxes-"+tag, "pxec-"+tag
	for _, ns := range []string{srv, cli} {
		remove, err := addNetns(ctx, ns)
		if err != nil {
			return nil, err
		}
		defer remove()
	}
	for _, args := range [][]string{
		{"-n", srv, "link", "set", "lo", "up"},
		{"-n", cli, "link", "set", "lo", "up"},
		{"-n", srv, "link", "add", "s0", "type", "veth", "peer", "name", "c0", "netns", cli},
		{"-n", srv, "addr", "add", pxeServer + "/16", "dev", "s0"},
		{"-n", cli, "addr", "add", pxeClient + "/16", "dev", "c0"},
		{"-n", srv, "link", "set", "s0", "up"},
		{"-n", cli, "link", "set", "c0", "up"},
		{"-n", cli, "route", "add", "local", pxeBootCIDR, "dev", "lo"},
		// dnsmasq pings an address before it offers it (dnsmasq(8),
		// --no-ping); the AnyIP route would answer for every one.
		{"netns", "exec", cli, "sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_all=1"},
		// Past 1,024 neighbour entries (gc_thresh3, a limit of the whole
		// host, not of a namespace) the kernel drops packets to new
		// machines: mayu warns of it at start, and an operator raises it.
		// A storm on a shared machine may not, so the server reaches the
		// machines' addresses through one next hop (one entry); DHCP
		// answers are broadcasts and need none.
		{"-n", srv, "route", "add", pxeBootCIDR, "via", pxeClient, "dev", "s0"},
	} {
		if err := runIP(ctx, args...); err != nil {
			return nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(b.o.work, "pxe-")
	if err != nil {
		return nil, err
	}
	out := filepath.Join(work, "result.json")
	cctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, "ip", "netns", "exec", cli, self, "-pxe-inner", "-pxe-server-ns", srv,
		"-work", work, "-mayu", b.o.mayu, "-repo", b.o.repo, "-machines", fmt.Sprint(machines), "-out", out)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("full-stack storm in namespaces %s, %s: %w", srv, cli, err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	var r PXEStorm
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// pxeInner runs in the clients' namespace: mayu (with dnsmasq) in the
// server's, the storm here.
func (b *bench) pxeInner(ctx context.Context, serverNS string, machines int) (r *PXEStorm) {
	const conc = 32
	r = &PXEStorm{Machines: machines, Concurrency: conc}
	fail := func(err error) *PXEStorm { r.Error = err.Error(); return r }
	cfgText := pxeConfig()
	if err := os.WriteFile(b.cfgPath, []byte(cfgText), 0o644); err != nil {
		return fail(err)
	}
	cfg, err := config.Parse([]byte(cfgText))
	if err != nil {
		return fail(err)
	}
	b.cfg = cfg
	runDir, err := os.MkdirTemp(b.o.work, "run-")
	if err != nil {
		return fail(err)
	}
	// dnsmasq drops to nobody: the tftproot and its parents must be
	// readable by it.
	for d := runDir; d != filepath.Dir(d) && strings.HasPrefix(d, b.o.work); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	cluster := filepath.Join(runDir, "cluster")
	// mayu's default runtime directory, /run/mayu, is a tmpfs on most
	// systems: dnsmasq fsyncs its lease file at every lease, which on a
	// disk shared with the git store's fsyncs stalled all DHCP here for
	// seconds. /dev/shm plays /run.
	rt := filepath.Join(runDir, "runtime")
	if shm, err := os.MkdirTemp("/dev/shm", "stormbench-rt-"); err == nil {
		defer os.RemoveAll(shm)
		rt = shm
	}
	b.mayuExtra = []string{"--runtime-dir=" + rt}
	b.mayuHost, b.mayuDnsmasq = pxeServer, "/usr/sbin/dnsmasq"
	b.mayuWrap = []string{"ip", "netns", "exec", serverNS}
	images := filepath.Join(runDir, "images", b.cfg.DefaultCoreOSVersion)
	if err := os.MkdirAll(images, 0o755); err != nil {
		return fail(err)
	}
	if err := writePattern(filepath.Join(images, "coreos_production_image.bin.bz2"), 4<<20); err != nil {
		return fail(err)
	}
	d, err := b.startMayu(ctx, runDir, cluster, filepath.Dir(images))
	if err != nil {
		return fail(err)
	}
	defer d.stop()
	var pid int
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && pid == 0; time.Sleep(20 * time.Millisecond) {
		pid = dnsmasqPID(d.Cmd.Process.Pid)
	}
	if pid == 0 {
		return fail(errors.New("dnsmasq did not start within 60s"))
	}
	tftpDir := filepath.Join(runDir, "tftp-got")
	if err := os.MkdirAll(tftpDir, 0o755); err != nil {
		return fail(err)
	}
	prefix := fmt.Sprintf("pxe%d-", machines)
	p, err := storm.NewPXE(storm.PXEConfig{
		Iface: "c0", Prefix: prefix, BootFile: "undionly.kpxe", BootScriptURL: d.base + "/ipxebootscript", TFTPDir: tftpDir,
	})
	if err != nil {
		return fail(err)
	}
	defer p.Close()
	res, err := storm.Run(ctx, storm.Config{
		BaseURL: d.base, Machines: machines, Concurrency: conc, SerialPrefix: prefix, Timeout: time.Minute,
		Retry: 0, Mix: storm.Mix{Range: 2}, Client: d.client(conc), Prepare: p.Boot, Done: p.Installed,
	})
	r.Result = res
	r.PXE = p.Result()
	r.LoadAvg = loadavg()
	if err != nil {
		return fail(err)
	}
	chk, err := storm.CheckEndState(ctx, storm.CheckConfig{BaseURL: d.base, Client: d.client(1), Serials: res.Serials, Cluster: b.cfg, ClusterDir: cluster})
	if err != nil {
		return fail(err)
	}
	r.Check = chk
	logText, _ := os.ReadFile(d.log.Name())
	r.Restarts = max(strings.Count(string(logText), "msg=\"dnsmasq started\"")-1, 0)
	printPXE(os.Stderr, r)
	return r
}

// printPXE writes one line per stage: count, rate over the storm, p50/p99,
// failures.
func printPXE(w io.Writer, r *PXEStorm) {
	if r.Result == nil || r.PXE == nil {
		fmt.Fprintf(w, "full-stack storm of %d machines: %s\n", r.Machines, r.Error)
		return
	}
	secs := time.Duration(r.Result.Duration).Seconds()
	fmt.Fprintf(w, "full-stack storm: %d machines at C=%d, %d completed, %d failed, %.1f machines/s, DHCP retries %d, dnsmasq restarts %d, installed machines answered %d (load %s)\n",
		r.Machines, r.Concurrency, r.Result.Completed, r.Result.Failed, r.Result.PerSecond, r.PXE.Retries, r.Restarts, r.PXE.Answered, r.LoadAvg)
	line := func(name string, s storm.Stats) {
		fmt.Fprintf(w, "  %-26s %6d  %7.1f/s  p50 %7.1f ms  p99 %7.1f ms  failures %d\n", name, s.Count, float64(s.Count)/secs, s.P50ms, s.P99ms, s.Errors)
	}
	for _, st := range storm.PXEStages {
		if s, ok := r.PXE.Stages[st]; ok {
			line(st, s)
		}
	}
	routes := make([]string, 0, len(r.Result.Routes))
	for k := range r.Result.Routes {
		routes = append(routes, k)
	}
	sort.Strings(routes)
	for _, k := range routes {
		line(k, r.Result.Routes[k])
	}
	for k, v := range r.PXE.Errors {
		fmt.Fprintf(w, "  error %s: %d\n", k, v)
	}
	for k, v := range r.Result.Errors {
		fmt.Fprintf(w, "  error %s: %d\n", k, v)
	}
	if r.Check != nil && !r.Check.OK() {
		fmt.Fprintf(w, "  end state: %v\n", r.Check.Problems)
	}
}
