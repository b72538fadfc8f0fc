// Package dnsmasq runs dnsmasq (DHCP, PXE, TFTP, DNS) as a supervised child
// of mayu.
//
// The main configuration is rendered from the operator's template into
// mayu's runtime directory, checked with `dnsmasq --test` and only then
// used. Per-host changes (the MACs of installed machines that must be
// ignored, the addresses hosts own) go to a --dhcp-hostsfile that is
// rewritten atomically and re-read by dnsmasq on SIGHUP: the process keeps
// running, so the DHCP exchanges and TFTP transfers of other machines that
// are booting at that moment are never cut (Mayu 0.11 killed and restarted
// dnsmasq for every installed machine). dnsmasq is restarted only when the
// rendered main configuration changes, and with backoff when it dies.
package dnsmasq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"mayu/pkg/config"
	"mayu/pkg/host"
)

// Errors callers can match with errors.Is.
var (
	// ErrTemplate: the template does not parse or does not execute.
	ErrTemplate = errors.New("dnsmasq: template")
	// ErrConfigRejected: dnsmasq --test refused the rendered configuration;
	// the message carries dnsmasq's own complaint.
	ErrConfigRejected = errors.New("dnsmasq: configuration rejected")
	// ErrSettings: the supervisor's Config is incomplete.
	ErrSettings = errors.New("dnsmasq: invalid settings")
	// ErrAlreadyRunning: Run was called twice.
	ErrAlreadyRunning = errors.New("dnsmasq: supervisor already running")
)

// Defaults for the optional Config fields.
const (
	DefaultBinary            = "/usr/sbin/dnsmasq"
	DefaultRestartBackoff    = 500 * time.Millisecond
	DefaultMaxRestartBackoff = 30 * time.Second
	DefaultStopTimeout       = 5 * time.Second
)

// Files in the runtime directory.
const (
	confName   = "dnsmasq.conf"
	hostsName  = "dnsmasq.hosts"
	leasesName = "dnsmasq.leases"
)

// stableAfter is how long a child must run before a later crash starts the
// backoff from the beginning again.
const stableAfter = 30 * time.Second

// readyTimeout bounds the wait for a fresh child to install its SIGHUP
// handler; a SIGHUP before that would kill it.
const readyTimeout = 10 * time.Second

// Config is what the supervisor needs.
type Config struct {
	// Binary is the dnsmasq executable (--dnsmasq); DefaultBinary if empty.
	Binary string
	// Template is the main configuration template (--dnsmasq-template).
	Template string
	// RuntimeDir holds the rendered configuration, the hosts file and the
	// lease file. It is created if missing. Keep it across restarts of mayu
	// if leases should survive those too.
	RuntimeDir string
	// Network is the network section of config.yaml.
	Network config.Network
	// TFTPRoot is the directory dnsmasq serves over TFTP; made absolute.
	TFTPRoot string
	// NoTLS and HTTPPort make the iPXE boot-script URL.
	NoTLS    bool
	HTTPPort int
	// Logger receives the supervisor's messages and every line dnsmasq
	// prints, all with component=dnsmasq. Nil discards.
	Logger *slog.Logger

	// RestartBackoff is the first delay before restarting a dnsmasq that
	// exited unexpectedly; it doubles on each further crash up to
	// MaxRestartBackoff. StopTimeout bounds the wait after SIGTERM before
	// SIGKILL. Zero means the Default* value.
	RestartBackoff    time.Duration
	MaxRestartBackoff time.Duration
	StopTimeout       time.Duration
}

// Supervisor renders dnsmasq's configuration and keeps one dnsmasq running.
type Supervisor struct {
	cfg       Config
	log       *slog.Logger
	confPath  string
	hostsPath string
	leasePath string
	kick      chan struct{} // capacity 1: pending changes, coalesced

	mu         sync.Mutex
	tmpl       *template.Template
	network    config.Network
	desired    hostSet
	dirtySince time.Time // first Sync not yet applied, for the latency log
	running    bool
	pid        int
	starts     int
	testedConf []byte // last configuration dnsmasq --test accepted
	warnedMACs map[string]bool

	// Owned by the Run goroutine.
	appliedConf  []byte // main configuration the current child runs with
	appliedHosts []byte
}

// New checks the settings, creates the runtime directory and parses the
// template. It does not start anything.
func New(cfg Config) (*Supervisor, error) {
	if cfg.Binary == "" {
		cfg.Binary = DefaultBinary
	}
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = DefaultRestartBackoff
	}
	if cfg.MaxRestartBackoff <= 0 {
		cfg.MaxRestartBackoff = DefaultMaxRestartBackoff
	}
	if cfg.MaxRestartBackoff < cfg.RestartBackoff {
		cfg.MaxRestartBackoff = cfg.RestartBackoff
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	var problems []string
	if cfg.Template == "" {
		problems = append(problems, "no template")
	}
	if cfg.RuntimeDir == "" {
		problems = append(problems, "no runtime directory")
	}
	if cfg.Network.PXE && cfg.TFTPRoot == "" {
		problems = append(problems, "network.pxe is on but there is no tftproot")
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrSettings, strings.Join(problems, "; "))
	}
	if cfg.TFTPRoot != "" {
		abs, err := filepath.Abs(cfg.TFTPRoot)
		if err != nil {
			return nil, fmt.Errorf("%w: tftproot: %w", ErrSettings, err)
		}
		cfg.TFTPRoot = abs
	}
	dir, err := filepath.Abs(cfg.RuntimeDir)
	if err != nil {
		return nil, fmt.Errorf("%w: runtime directory: %w", ErrSettings, err)
	}
	cfg.RuntimeDir = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("dnsmasq: runtime directory: %w", err)
	}
	tmpl, err := parseTemplate(cfg.Template)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Supervisor{
		cfg:        cfg,
		log:        log.With("component", "dnsmasq"),
		confPath:   filepath.Join(dir, confName),
		hostsPath:  filepath.Join(dir, hostsName),
		leasePath:  filepath.Join(dir, leasesName),
		kick:       make(chan struct{}, 1),
		tmpl:       tmpl,
		network:    cfg.Network,
		warnedMACs: map[string]bool{},
	}, nil
}

// Paths returns the rendered configuration, hosts file and lease file.
func (s *Supervisor) Paths() (conf, hosts, leases string) {
	return s.confPath, s.hostsPath, s.leasePath
}

// Check renders the configuration and has dnsmasq check it. The error of a
// rejected configuration carries dnsmasq's complaint and the offending
// rendered line.
func (s *Supervisor) Check() error {
	conf, err := s.render()
	if err != nil {
		return err
	}
	return s.testOnce(conf)
}

// Sync takes the current host records and applies what dnsmasq must know
// about them: MACs of installed and running hosts are ignored, hosts with
// an InternalAddr get it. It only records the wish and returns; the Run
// loop rewrites the hosts file and sends SIGHUP, so a burst of calls costs
// one reload. If the template itself depends on host state (it ranges over
// .Network.IgnoredHosts or .StaticHosts, as Mayu 0.11 templates do), the
// configuration is re-rendered and dnsmasq restarted instead.
func (s *Supervisor) Sync(hosts []host.Host) {
	set, bad := computeHostSet(hosts)
	s.mu.Lock()
	for _, b := range bad {
		// Sync runs on every change of any host: say it once per MAC.
		if !s.warnedMACs[b] {
			s.warnedMACs[b] = true
			s.log.Warn("invalid MAC address of host left out of dnsmasq's configuration", "mac", b)
		}
	}
	changed := !set.equal(s.desired)
	if changed {
		s.desired = set
		if s.dirtySince.IsZero() {
			s.dirtySince = time.Now()
		}
	}
	s.mu.Unlock()
	if changed {
		s.poke()
	}
}

// Reload re-reads the template and takes a new network section (config
// reload). The result is checked with dnsmasq --test first: if it is
// rejected, the error says why and the running dnsmasq keeps its old
// configuration. If the rendered configuration changed, Run restarts
// dnsmasq with it.
func (s *Supervisor) Reload(network config.Network) error {
	tmpl, err := parseTemplate(s.cfg.Template)
	if err != nil {
		return err
	}
	s.mu.Lock()
	ctx := s.contextLocked()
	s.mu.Unlock()
	ctx.Network.Network = network
	ctx.Global = s.global(network)
	conf, err := renderConfig(tmpl, ctx)
	if err != nil {
		return err
	}
	if err := s.testOnce(conf); err != nil {
		return err
	}
	s.mu.Lock()
	s.tmpl = tmpl
	s.network = network
	s.mu.Unlock()
	s.poke()
	return nil
}

// PID returns the process id of the running dnsmasq, 0 if none.
func (s *Supervisor) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid
}

// Restarts returns how often dnsmasq was started again after its first
// start, for whatever reason (crash, configuration change).
func (s *Supervisor) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.starts == 0 {
		return 0
	}
	return s.starts - 1
}

// Run starts dnsmasq and keeps it running until ctx is done, then stops it
// (SIGTERM, then SIGKILL after StopTimeout) and returns nil. It returns an
// error only if dnsmasq cannot be started at all the first time (the
// configuration does not render or is rejected); later failures are logged
// and retried with backoff.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return ErrAlreadyRunning
	}
	s.running = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()

	backoff := s.cfg.RestartBackoff
	for first := true; ; first = false {
		if ctx.Err() != nil {
			return nil
		}
		ch, err := s.prepareAndStart()
		if err != nil {
			if first {
				return err
			}
			s.log.Error("cannot start dnsmasq", "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, s.cfg.MaxRestartBackoff)
			continue
		}
		switch s.supervise(ctx, ch) {
		case outcomeStopped:
			return nil
		case outcomeRestart:
			backoff = s.cfg.RestartBackoff
		case outcomeCrashed:
			ran := time.Since(ch.started)
			if ran >= stableAfter {
				backoff = s.cfg.RestartBackoff
			}
			s.log.Error("dnsmasq exited unexpectedly; restarting",
				"pid", ch.pid, "status", exitStatus(ch.err), "ran_for", ran.Round(time.Millisecond),
				"retry_in", backoff, "last_output", ch.out.last())
			if !sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, s.cfg.MaxRestartBackoff)
		}
	}
}

type outcome int

const (
	outcomeStopped outcome = iota // ctx done, child stopped
	outcomeRestart                // configuration changed, child stopped
	outcomeCrashed                // child exited on its own
)

// child is one dnsmasq process.
type child struct {
	cmd     *exec.Cmd
	pid     int
	started time.Time
	out     *outputLog
	exited  chan struct{} // closed once Wait returned
	err     error         // Wait's result, readable after exited is closed
}

// supervise waits for the child to exit, for ctx, or for changes to apply.
func (s *Supervisor) supervise(ctx context.Context, ch *child) outcome {
	defer func() {
		s.mu.Lock()
		s.pid = 0
		s.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			s.stop(ch)
			return outcomeStopped
		case <-ch.exited:
			return outcomeCrashed
		case <-s.kick:
			restart, err := s.apply(ctx, ch)
			if err != nil {
				// Nothing may change again for a long time: try again
				// later on our own, slowly enough not to flood the log.
				s.log.Error("cannot apply change to dnsmasq; dnsmasq keeps its previous state",
					"err", err, "retry_in", s.cfg.MaxRestartBackoff)
				time.AfterFunc(s.cfg.MaxRestartBackoff, s.poke)
			}
			if restart {
				s.stop(ch)
				return outcomeRestart
			}
		}
	}
}

// apply brings the running child up to date. A change of the rendered
// main configuration needs a restart (reported to the caller); a change of
// the hosts file only a SIGHUP.
//
// If the new main configuration cannot be used (it does not render or
// dnsmasq rejects it), the hosts file is still brought up to date, so
// installed machines are ignored even then; the error is returned.
func (s *Supervisor) apply(ctx context.Context, ch *child) (restart bool, err error) {
	conf, confErr := s.render()
	if confErr == nil && !bytes.Equal(conf, s.appliedConf) {
		if confErr = s.testOnce(conf); confErr == nil {
			s.log.Info("dnsmasq configuration changed; restarting dnsmasq", "pid", ch.pid)
			return true, nil
		}
	}
	if err := s.applyHosts(ctx, ch); err != nil {
		return false, errors.Join(confErr, err)
	}
	return false, confErr
}

// applyHosts rewrites the hosts file if the host set changed and has the
// child re-read it.
func (s *Supervisor) applyHosts(ctx context.Context, ch *child) error {
	s.mu.Lock()
	set, since := s.desired, s.dirtySince
	s.dirtySince = time.Time{}
	s.mu.Unlock()
	hosts := renderHostsFile(set)
	if bytes.Equal(hosts, s.appliedHosts) {
		return nil
	}
	if err := writeFileAtomic(s.hostsPath, hosts); err != nil {
		return err
	}
	s.appliedHosts = hosts
	if err := s.hup(ctx, ch); err != nil {
		return err
	}
	attrs := []any{"pid", ch.pid, "ignored_macs", len(set.Ignored), "static_hosts", len(set.Static)}
	if !since.IsZero() {
		attrs = append(attrs, "latency", time.Since(since).Round(time.Microsecond))
	}
	s.log.Info("hosts file rewritten; dnsmasq told to re-read it", attrs...)
	return nil
}

// prepareAndStart renders, checks (if changed) and writes the configuration
// and the hosts file, then starts dnsmasq with them.
func (s *Supervisor) prepareAndStart() (*child, error) {
	conf, err := s.render()
	if err != nil {
		return nil, err
	}
	if err := s.testOnce(conf); err != nil {
		return nil, err
	}
	s.mu.Lock()
	set := s.desired
	s.dirtySince = time.Time{}
	s.mu.Unlock()
	hosts := renderHostsFile(set)
	if err := writeFileAtomic(s.confPath, conf); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(s.hostsPath, hosts); err != nil {
		return nil, err
	}
	ch, err := s.start()
	if err != nil {
		return nil, err
	}
	s.appliedConf = conf
	s.appliedHosts = hosts
	return ch, nil
}

// start runs `dnsmasq -k -d` in its own process group (a Ctrl-C meant for
// mayu must not kill it behind the supervisor's back) and with a parent
// death signal (it must not outlive a killed mayu).
func (s *Supervisor) start() (*child, error) {
	out := &outputLog{log: s.log, tail: lastLines{n: 20}}
	// Our own pipe rather than exec's copying goroutine: Wait then returns
	// as soon as dnsmasq exits, even if a helper it forked still holds the
	// pipe.
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("dnsmasq: output pipe: %w", err)
	}
	cmd := exec.Command(s.cfg.Binary, s.args(s.confPath, true)...)
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("dnsmasq: start %s: %w", s.cfg.Binary, err)
	}
	ch := &child{cmd: cmd, pid: cmd.Process.Pid, started: time.Now(), out: out, exited: make(chan struct{})}
	out.setPID(ch.pid)
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(out, r)
		r.Close()
		out.flush()
		close(copied)
	}()
	go func() {
		ch.err = cmd.Wait()
		// Whatever is left of its process group (a dhcp-script helper)
		// goes with it; the group id stays reserved while members live.
		_ = syscall.Kill(-ch.pid, syscall.SIGKILL)
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
		close(ch.exited)
	}()
	s.mu.Lock()
	s.pid = ch.pid
	s.starts++
	s.mu.Unlock()
	s.log.Info("dnsmasq started", "pid", ch.pid, "conf", s.confPath, "hosts", s.hostsPath, "leases", s.leasePath)
	return ch, nil
}

// stop ends the child: SIGTERM to its process group, SIGKILL after
// StopTimeout, and always waits for it.
func (s *Supervisor) stop(ch *child) {
	_ = syscall.Kill(-ch.pid, syscall.SIGTERM)
	t := time.NewTimer(s.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-ch.exited:
	case <-t.C:
		s.log.Warn("dnsmasq did not stop after SIGTERM; killing it", "pid", ch.pid, "waited", s.cfg.StopTimeout)
		_ = syscall.Kill(-ch.pid, syscall.SIGKILL)
		<-ch.exited
	}
	s.log.Info("dnsmasq stopped", "pid", ch.pid, "status", exitStatus(ch.err))
}

// hup tells dnsmasq to re-read the hosts file. A child that has not yet
// installed its SIGHUP handler would be killed by the signal, so wait
// (bounded) until it has.
func (s *Supervisor) hup(ctx context.Context, ch *child) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		ok, err := catchesSIGHUP(ch.pid)
		if err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			// Signal anyway: at worst it dies and the restart reads the
			// new hosts file.
			s.log.Warn("dnsmasq does not seem to handle SIGHUP yet; signalling anyway", "pid", ch.pid)
			break
		}
		select {
		case <-ch.exited:
			return nil // restarted with the new file by Run
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := syscall.Kill(ch.pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("dnsmasq: signal pid %d: %w", ch.pid, err)
	}
	return nil
}

// render executes the template with the current network and host state.
func (s *Supervisor) render() ([]byte, error) {
	s.mu.Lock()
	tmpl := s.tmpl
	ctx := s.contextLocked()
	s.mu.Unlock()
	return renderConfig(tmpl, ctx)
}

func (s *Supervisor) contextLocked() TemplateContext {
	return TemplateContext{
		Network: NetworkContext{
			Network:      s.network,
			IgnoredHosts: append([]string{}, s.desired.Ignored...),
			StaticHosts:  append([]StaticHost{}, s.desired.Static...),
		},
		Global: s.global(s.network),
	}
}

func (s *Supervisor) global(n config.Network) GlobalContext {
	pxeFile := biosBootFile
	if n.UEFI {
		pxeFile = uefiBootFile
	}
	return GlobalContext{
		Executable:    s.cfg.Binary,
		Template:      s.cfg.Template,
		TFTPRoot:      s.cfg.TFTPRoot,
		NoTLS:         s.cfg.NoTLS,
		HTTPPort:      s.cfg.HTTPPort,
		PXEPort:       s.cfg.HTTPPort,
		HostsFile:     s.hostsPath,
		LeaseFile:     s.leasePath,
		PXEFile:       pxeFile,
		BootScriptURL: bootScriptURL(n.BindAddr, s.cfg.HTTPPort, s.cfg.NoTLS),
	}
}

// args is dnsmasq's command line. -k -d keeps it in the foreground as our
// child (-d also keeps it root, so it can read the runtime directory and
// tftproot whatever their modes); --log-facility=- sends its log to
// stderr only, which we read, instead of also to syslog.
func (s *Supervisor) args(conf string, run bool) []string {
	a := []string{}
	if run {
		a = append(a, "-k", "-d")
	} else {
		a = append(a, "--test")
	}
	return append(a,
		"--conf-file="+conf,
		"--dhcp-hostsfile="+s.hostsPath,
		"--dhcp-leasefile="+s.leasePath,
		"--log-facility=-",
	)
}

// badLine finds the line number in dnsmasq's "bad option at line 3 of
// /path" complaints.
var badLine = regexp.MustCompile(`at line (\d+) of `)

// testOnce runs dnsmasq --test unless it already accepted this exact
// configuration (Check before Run, restarts after a crash).
func (s *Supervisor) testOnce(conf []byte) error {
	s.mu.Lock()
	done := bytes.Equal(conf, s.testedConf)
	s.mu.Unlock()
	if done {
		return nil
	}
	if err := s.test(conf); err != nil {
		return err
	}
	s.mu.Lock()
	s.testedConf = conf
	s.mu.Unlock()
	return nil
}

// test runs dnsmasq --test on a rendered configuration.
func (s *Supervisor) test(conf []byte) error {
	f, err := os.CreateTemp(s.cfg.RuntimeDir, ".dnsmasq-check-*.conf")
	if err != nil {
		return fmt.Errorf("dnsmasq: check: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(conf); err != nil {
		f.Close()
		return fmt.Errorf("dnsmasq: check: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("dnsmasq: check: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.cfg.Binary, s.args(f.Name(), false)...).CombinedOutput()
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("dnsmasq: run %s --test: %w", s.cfg.Binary, err)
	}
	msg := strings.TrimSpace(string(out))
	if m := badLine.FindStringSubmatch(msg); m != nil {
		if n, _ := strconv.Atoi(m[1]); n > 0 {
			lines := strings.Split(string(conf), "\n")
			if n <= len(lines) {
				msg += fmt.Sprintf(" (rendered line %d: %q)", n, lines[n-1])
			}
		}
	}
	return fmt.Errorf("%w: template %s: %s", ErrConfigRejected, s.cfg.Template, msg)
}

// writeFileAtomic replaces path with data so that a reader (dnsmasq on
// SIGHUP) sees either the old or the new file, never a torn one.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("dnsmasq: write %s: %w", path, err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if werr == nil {
		werr = f.Chmod(0o644)
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("dnsmasq: write %s: %w", path, werr)
	}
	return nil
}

// poke records that there are changes to apply; pokes while one is pending
// merge into it.
func (s *Supervisor) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// sleep waits d or until ctx is done; it reports whether the full d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// exitStatus describes how a process ended: "exit status 2", "signal:
// killed".
func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// outputLog sends each line dnsmasq prints to the logger and keeps the last
// ones for the report of an unexpected exit. exec calls Write from one
// goroutine (stdout and stderr share it); the mutex orders it against
// last().
type outputLog struct {
	log *slog.Logger

	mu      sync.Mutex
	pid     int
	partial []byte
	tail    lastLines
}

func (o *outputLog) setPID(pid int) {
	o.mu.Lock()
	o.pid = pid
	o.mu.Unlock()
}

func (o *outputLog) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.partial = append(o.partial, p...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		o.emitLocked(string(o.partial[:i]))
		o.partial = o.partial[i+1:]
	}
	return len(p), nil
}

func (o *outputLog) flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.partial) > 0 {
		o.emitLocked(string(o.partial))
		o.partial = nil
	}
}

func (o *outputLog) emitLocked(line string) {
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return
	}
	o.tail.add(line)
	level := slog.LevelInfo
	if looksLikeTrouble(line) {
		level = slog.LevelWarn
	}
	o.log.Log(context.Background(), level, line, "pid", o.pid)
}

func (o *outputLog) last() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.tail.String()
}

// looksLikeTrouble raises the level of dnsmasq lines that report a
// problem, so they stand out among the DHCP chatter.
func looksLikeTrouble(line string) bool {
	l := strings.ToLower(line)
	for _, w := range []string{"fail", "error", "cannot", "bad ", "warning", "illegal", "unknown interface"} {
		if strings.Contains(l, w) {
			return true
		}
	}
	return false
}
