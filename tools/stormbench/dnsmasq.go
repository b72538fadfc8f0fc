package main

// The dnsmasq figures: a storm against mayu running real dnsmasq, inside a
// network namespace of our own (a bridge with no route anywhere). It
// counts dnsmasq restarts and hosts-file reloads during the storm, and
// times, for every machine, how long after its set_installed answer its
// MACs appear as "ignore" in dnsmasq's hosts file. Root only.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"mayu/pkg/config"
	"mayu/pkg/proctest"
	"mayu/tools/storm"
)

// DnsmasqStorm is what the dnsmasq storm measured.
type DnsmasqStorm struct {
	Preload   int           `json:"preload"`
	Result    *storm.Result `json:"result"`
	Starts    int           `json:"dnsmasq_starts"`   // "dnsmasq started" lines: 1 is the initial start
	Restarts  int           `json:"dnsmasq_restarts"` // Starts - 1
	Reloads   int           `json:"hosts_file_reloads"`
	PIDBefore int           `json:"pid_before"`
	PIDAfter  int           `json:"pid_after"`
	// IgnoredAfter: set_installed answer -> the machine's MACs in the
	// hosts file as ignore (negative: the file was rewritten before the
	// answer reached the client).
	IgnoredAfter storm.Stats `json:"ignored_after"`
	NotIgnored   int         `json:"not_ignored"`
	Error        string      `json:"error,omitempty"`
}

const nsAddr = "10.77.0.1"

func dnsmasqConfig() string {
	c := benchLoop
	c.Interface, c.BindAddr, c.Gateway = "br0", nsAddr, nsAddr
	c.BootstrapStart, c.BootstrapEnd = "10.77.0.100", "10.77.0.200"
	return proctest.Config(c)
}

// dnsmasqOuter creates the namespace, runs this program inside it with
// -dnsmasq-inner, and removes the namespace whatever happens.
func (b *bench) dnsmasqOuter(ctx context.Context, preload int) (*DnsmasqStorm, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the dnsmasq storm needs root (network namespace)")
	}
	if _, err := os.Stat("/usr/sbin/dnsmasq"); err != nil {
		return nil, fmt.Errorf("dnsmasq is not installed: %w", err)
	}
	ns := "stormb-" + nsTag()
	remove, err := addNetns(ctx, ns)
	if err != nil {
		return nil, err
	}
	defer remove()
	// A bridge with a veth pair on it (so it has carrier), and loopback;
	// nothing connects the namespace to anything else.
	for _, args := range [][]string{
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "add", "br0", "type", "bridge"},
		{"-n", ns, "addr", "add", nsAddr + "/24", "dev", "br0"},
		{"-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"},
		{"-n", ns, "link", "set", "v0", "master", "br0"},
		{"-n", ns, "link", "set", "v0", "up"},
		{"-n", ns, "link", "set", "v1", "up"},
		{"-n", ns, "link", "set", "br0", "up"},
	} {
		if err := runIP(ctx, args...); err != nil {
			return nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(b.o.work, "dnsmasq-")
	if err != nil {
		return nil, err
	}
	out := filepath.Join(work, "result.json")
	cctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, "ip", "netns", "exec", ns, self, "-dnsmasq-inner", "-work", work,
		"-mayu", b.o.mayu, "-repo", b.o.repo, "-machines", fmt.Sprint(b.o.machines), "-out", out,
		"-preloads", fmt.Sprint(preload))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("dnsmasq storm in namespace %s: %w", ns, err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	var r DnsmasqStorm
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// dnsmasqInner runs inside the namespace: mayu with dnsmasq on the
// bridge, a storm, a poller of the hosts file.
func (b *bench) dnsmasqInner(ctx context.Context, preload int) (r *DnsmasqStorm) {
	r = &DnsmasqStorm{Preload: preload}
	fail := func(err error) *DnsmasqStorm { r.Error = err.Error(); return r }
	cfgText := dnsmasqConfig()
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
	cluster := filepath.Join(runDir, "cluster")
	if preload > 0 {
		tmpl, err := b.clusterTemplate(preload)
		if err != nil {
			return fail(err)
		}
		if err := copyDir(ctx, tmpl, cluster); err != nil {
			return fail(err)
		}
	}
	rt := filepath.Join(runDir, "runtime")
	// Its machines do no DHCP (HTTP only, all from nsAddr), so no lease of
	// dnsmasq's names them and machine identity (--machine-auth=lease)
	// would refuse their first-stage script with 403; what this storm
	// measures is dnsmasq's hosts-file reloads. The full-stack storm
	// (-pxe) covers the identity check with real leases.
	b.mayuExtra = []string{"--runtime-dir=" + rt, "--machine-auth=off"}
	b.mayuHost, b.mayuDnsmasq = nsAddr, "/usr/sbin/dnsmasq"
	d, err := b.startMayu(ctx, runDir, cluster, filepath.Join(runDir, "images"))
	if err != nil {
		return fail(err)
	}
	defer d.stop()
	hostsFile := filepath.Join(rt, "dnsmasq.hosts")
	logPath := d.log.Name()
	// dnsmasq must be up before the storm.
	var pid int
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && pid == 0; time.Sleep(20 * time.Millisecond) {
		pid = dnsmasqPID(d.Cmd.Process.Pid)
	}
	if pid == 0 {
		return fail(errors.New("dnsmasq did not start within 60s"))
	}
	r.PIDBefore = pid

	prefix := fmt.Sprintf("dns%d-", preload)
	var mu sync.Mutex
	acked := map[string]time.Time{}
	seen := map[string]time.Time{}
	macOf := map[string]string{}
	for i := 0; i < b.o.machines; i++ {
		macOf[storm.MACs(prefix, i)[0]] = storm.Serial(prefix, i)
	}
	stop := make(chan struct{})
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			f, err := os.Open(hostsFile)
			if err != nil {
				continue
			}
			now := time.Now()
			sc := bufio.NewScanner(f)
			mu.Lock()
			for sc.Scan() {
				mac, rest, _ := strings.Cut(sc.Text(), ",")
				if rest != "ignore" {
					continue
				}
				if s, ok := macOf[mac]; ok {
					if _, done := seen[s]; !done {
						seen[s] = now
					}
				}
			}
			mu.Unlock()
			f.Close()
		}
	}()
	res, err := storm.Run(ctx, storm.Config{
		BaseURL: d.base, Machines: b.o.machines, Concurrency: 32, SerialPrefix: prefix, Timeout: time.Minute,
		OnEvent: func(ev storm.Event) {
			if ev.OK && ev.Route == storm.RouteSetInstalled {
				mu.Lock()
				acked[ev.Serial] = time.Now()
				mu.Unlock()
			}
		},
	})
	if err != nil {
		close(stop)
		<-pollDone
		return fail(err)
	}
	r.Result = res
	if res.Failed > 0 {
		// Say so instead of printing a rate of the machines that made it.
		r.Error = fmt.Sprintf("%d of %d machines failed: %v", res.Failed, res.Machines, res.Errors)
	}
	// Give the last reload a bounded moment.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= len(acked) {
			break
		}
	}
	close(stop)
	<-pollDone
	var ds []time.Duration
	neg := 0
	mu.Lock()
	for s, t := range acked {
		st, ok := seen[s]
		if !ok {
			r.NotIgnored++
			continue
		}
		d := st.Sub(t)
		if d < 0 {
			neg++
			d = 0
		}
		ds = append(ds, d)
	}
	mu.Unlock()
	r.IgnoredAfter = storm.Summarize(ds, r.NotIgnored)
	r.PIDAfter = dnsmasqPID(d.Cmd.Process.Pid)
	logText, _ := os.ReadFile(logPath)
	r.Starts = strings.Count(string(logText), "msg=\"dnsmasq started\"")
	r.Restarts = max(r.Starts-1, 0)
	r.Reloads = strings.Count(string(logText), "hosts file rewritten")
	fmt.Fprintf(os.Stderr, "dnsmasq storm (%d preloaded): %.1f machines/s, dnsmasq starts %d, reloads %d, pid %d -> %d, ignored after p50 %.1f ms p99 %.1f ms max %.1f ms (%d before the answer arrived), %d never ignored\n",
		preload, res.PerSecond, r.Starts, r.Reloads, r.PIDBefore, r.PIDAfter, r.IgnoredAfter.P50ms, r.IgnoredAfter.P99ms, r.IgnoredAfter.MaxMs, neg, r.NotIgnored)
	return r
}

// dnsmasqPID finds the dnsmasq child of mayu.
func dnsmasqPID(mayu int) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || !strings.Contains(s[:i], "(dnsmasq") {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == fmt.Sprint(mayu) {
			return pid
		}
	}
	return 0
}
