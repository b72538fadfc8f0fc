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
//
// A dnsmasq counts as started only once it serves: it has not exited and
// holds its DHCP and TFTP sockets. Before it is started, the rendered
// configuration is checked against this machine (Preflight): the
// interfaces and addresses it names exist, the TFTP root and boot files can
// be served. A start that fails either way is an error naming the config key
// or flag at fault (ErrStart); a changed configuration that fails so leaves
// the running dnsmasq alone, or, if it failed only once the old one was
// stopped, brings the old configuration back.
package dnsmasq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/template"
	"time"

	"mayu/pkg/config"
	"mayu/pkg/host"
	"mayu/pkg/timeline"
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
	// DefaultStartTimeout bounds the wait for a fresh dnsmasq to serve. It
	// binds its sockets within milliseconds; the rest is room for a loaded
	// machine.
	DefaultStartTimeout = 10 * time.Second
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
	// BootPort, when not 0, is the plain-HTTP port mayu also serves the
	// boot script on (--boot-http-port): iPXE is pointed there, as it
	// cannot check mayu's certificate unless it was built with it.
	BootPort int
	// Ignores is the rule of which hosts DHCP leaves unanswered (their
	// MACs go into the hosts file as "<mac>,ignore"); the provisioner owns
	// it (provision.IgnoredByDHCP). Nil is host.State.IgnoredByDHCP,
	// Mayu 0.11's rule.
	Ignores func(host.Host) bool
	// SecureBoot is the rule of which hosts get the Secure Boot chain
	// (provision.SecureBoot): their MACs go into the hosts file as
	// "<mac>,set:secureboot", and an x86-64 UEFI PXE client with that tag
	// is given ShimBootFile instead of the iPXE binary. Nil gives nobody the
	// chain by MAC (network.secure_boot still gives it to every client).
	SecureBoot func(host.Host) bool
	// Logger receives the supervisor's messages and every line dnsmasq
	// prints, all with component=dnsmasq. Nil discards.
	Logger *slog.Logger
	// OnEvent, when set, receives an event for every DHCP packet and TFTP
	// transfer dnsmasq logs (LogParser), from the goroutine that reads
	// dnsmasq's output: it must not block (timeline.Timeline.Publish
	// does not).
	OnEvent func(timeline.Event)

	// RestartBackoff is the first delay before restarting a dnsmasq that
	// exited unexpectedly; it doubles on each further crash up to
	// MaxRestartBackoff. StopTimeout bounds the wait after SIGTERM before
	// SIGKILL. StartTimeout bounds the wait for a fresh dnsmasq to serve
	// (bound, not exited). Zero means the Default* value.
	RestartBackoff    time.Duration
	MaxRestartBackoff time.Duration
	StopTimeout       time.Duration
	StartTimeout      time.Duration
}

// Supervisor renders dnsmasq's configuration and keeps one dnsmasq running.
type Supervisor struct {
	cfg       Config
	log       *slog.Logger
	confPath  string
	hostsPath string
	leasePath string
	kick      chan struct{} // capacity 1: pending changes, coalesced
	reloads   chan reloadReq
	sys       sysView

	mu         sync.Mutex
	tmpl       *template.Template
	network    config.Network
	desired    hostSet
	dirtySince time.Time // first Sync not yet applied, for the latency log
	running    bool
	runDone    chan struct{} // closed when the current Run returns
	started    *child        // started by Start, not yet taken by Run
	pid        int
	starts     int
	hups       int    // SIGHUPs sent to re-read the hosts file
	testedConf []byte // last configuration dnsmasq --test accepted
	warnedMACs map[string]bool
	warned     map[string]bool // preflight warnings already logged

	// Owned by Start, then by the Run goroutine.
	appliedConf  []byte // main configuration the current child runs with
	appliedHosts []byte
	failedConf   []byte // configuration that passed the checks but did not start
}

// reloadReq hands a checked template and network section to Run.
type reloadReq struct {
	tmpl    *template.Template
	network config.Network
	reply   chan error // buffered; Run answers every request it takes
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
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.Ignores == nil {
		cfg.Ignores = func(h host.Host) bool { return h.State.IgnoredByDHCP() }
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
		reloads:    make(chan reloadReq),
		sys:        realSys{},
		tmpl:       tmpl,
		network:    cfg.Network,
		warnedMACs: map[string]bool{},
		warned:     map[string]bool{},
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

// Reload re-reads the template and takes a new network section (config
// reload). The result is checked first, as at start: dnsmasq --test and
// Preflight. If a check fails, the error says why and the running dnsmasq
// keeps its configuration, untouched. If the rendered configuration
// changed, dnsmasq is restarted with it and Reload returns once the new one
// serves; if it does not start, the error says why and dnsmasq is started
// again with the previous configuration.
func (s *Supervisor) Reload(network config.Network) error {
	tmpl, err := parseTemplate(s.cfg.Template)
	if err != nil {
		return err
	}
	conf, err := s.renderWith(tmpl, network)
	if err != nil {
		return err
	}
	if err := errors.Join(s.testOnce(conf), s.preflight(conf, network)); err != nil {
		return err
	}
	req := reloadReq{tmpl: tmpl, network: network, reply: make(chan error, 1)}
	s.mu.Lock()
	running, done := s.running, s.runDone
	s.mu.Unlock()
	if running {
		select {
		case s.reloads <- req:
			return <-req.reply
		case <-done:
		}
	}
	// No Run loop: the next start uses it.
	s.commit(req)
	s.poke()
	return nil
}

// commit makes a reloaded template and network the current ones.
func (s *Supervisor) commit(req reloadReq) {
	s.mu.Lock()
	s.tmpl, s.network = req.tmpl, req.network
	s.mu.Unlock()
}

// PID returns the process id of the dnsmasq that serves, 0 if none (none
// yet, or it exited).
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

// Reloads returns how often dnsmasq was told (SIGHUP) to re-read its
// hosts file without a restart.
func (s *Supervisor) Reloads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hups
}

// Start starts dnsmasq and returns once it serves: it passed the checks
// (dnsmasq --test, Preflight), has not exited and holds its DHCP and TFTP
// sockets. Otherwise it returns the reason (ErrStart, ErrConfigRejected,
// ErrTemplate) and leaves no dnsmasq running. Run then supervises the
// dnsmasq Start started; without Start, Run starts one itself.
func (s *Supervisor) Start(ctx context.Context) error {
	s.mu.Lock()
	busy := s.running || s.started != nil
	s.mu.Unlock()
	if busy {
		return ErrAlreadyRunning
	}
	ch, err := s.launchCurrent(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.started = ch
	s.mu.Unlock()
	return nil
}

// Run keeps dnsmasq running until ctx is done, then stops it (SIGTERM, then
// SIGKILL after StopTimeout) and returns nil. Unless Start already did, it
// starts dnsmasq first, and returns Start's error if that fails; later
// failures (a crash, a restart that does not come up) are logged and
// retried with backoff.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return ErrAlreadyRunning
	}
	s.running = true
	done := make(chan struct{})
	s.runDone = done
	ch := s.started
	s.started = nil
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
		close(done)
	}()
	s.warnNeighbours()

	if ch == nil {
		var err error
		if ch, err = s.launchCurrent(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	backoff := s.cfg.RestartBackoff
	for {
		if ch == nil {
			// No dnsmasq (it crashed or did not come back): start one
			// after the backoff.
			if !s.pause(ctx, backoff) {
				return nil
			}
			var err error
			ch, err = s.launchCurrent(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Error("cannot start dnsmasq", "err", err, "retry_in", min(2*backoff, s.cfg.MaxRestartBackoff))
			}
			backoff = min(2*backoff, s.cfg.MaxRestartBackoff)
			continue
		}
		select {
		case <-ctx.Done():
			s.stop(ch)
			return nil
		case <-ch.exited:
			ran := time.Since(ch.started)
			if ran >= stableAfter {
				backoff = s.cfg.RestartBackoff
			}
			s.log.Error("dnsmasq exited unexpectedly; restarting",
				"pid", ch.pid, "status", exitStatus(ch.err), "ran_for", ran.Round(time.Millisecond),
				"retry_in", backoff, "last_output", ch.out.last())
			s.forget(ch)
			ch = nil
		case <-s.kick:
			if next := s.apply(ctx, ch); next != ch {
				ch, backoff = next, s.cfg.RestartBackoff
			}
		case req := <-s.reloads:
			next, err := s.reload(ctx, ch, req)
			if next != ch {
				ch, backoff = next, s.cfg.RestartBackoff
			}
			req.reply <- err
		}
	}
}

// pause waits d or until ctx is done (reporting whether the full d passed);
// reloads that arrive meanwhile are taken for the next start.
func (s *Supervisor) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case req := <-s.reloads:
			s.commit(req)
			req.reply <- nil
		}
	}
}

// apply brings the running child up to date and returns the child that
// runs afterwards. A change of the rendered main configuration needs a
// restart; a change of the hosts file only a SIGHUP.
//
// If the new main configuration cannot be used (it does not render,
// dnsmasq rejects it, Preflight fails), the hosts file is still brought up
// to date, so installed machines are ignored even then, and the change is
// tried again later. A configuration that passed the checks but did not
// start is not tried again until the configuration changes once more.
func (s *Supervisor) apply(ctx context.Context, ch *child) *child {
	conf, confErr := s.render()
	if confErr == nil && !bytes.Equal(conf, s.appliedConf) && !bytes.Equal(conf, s.failedConf) {
		s.mu.Lock()
		n := s.network
		s.mu.Unlock()
		if confErr = errors.Join(s.testOnce(conf), s.preflight(conf, n)); confErr == nil {
			s.log.Info("dnsmasq configuration changed; restarting dnsmasq", "pid", ch.pid)
			next, err := s.switchTo(ctx, ch, conf, n)
			if err != nil {
				s.log.Error("dnsmasq did not start with the changed configuration", "err", err)
			}
			return next
		}
	}
	if err := s.applyHosts(ctx, ch); err != nil {
		confErr = errors.Join(confErr, err)
	}
	if confErr != nil {
		// Nothing may change again for a long time: try again later on
		// our own, slowly enough not to flood the log.
		s.log.Error("cannot apply change to dnsmasq; dnsmasq keeps its previous state",
			"err", confErr, "retry_in", s.cfg.MaxRestartBackoff)
		time.AfterFunc(s.cfg.MaxRestartBackoff, s.poke)
	}
	return ch
}

// reload applies a checked reload request (see Reload) and returns the
// child that runs afterwards (nil if none) and the request's answer.
func (s *Supervisor) reload(ctx context.Context, ch *child, req reloadReq) (*child, error) {
	conf, err := s.renderWith(req.tmpl, req.network)
	if err != nil {
		return ch, err
	}
	if bytes.Equal(conf, s.appliedConf) {
		s.commit(req)
		return ch, nil
	}
	// Host state may have changed the rendering since Reload checked it.
	if err := errors.Join(s.testOnce(conf), s.preflight(conf, req.network)); err != nil {
		return ch, err
	}
	s.log.Info("dnsmasq configuration reloaded; restarting dnsmasq", "pid", ch.pid)
	next, err := s.switchTo(ctx, ch, conf, req.network)
	if err == nil {
		s.commit(req)
	}
	return next, err
}

// switchTo replaces the running child by one with configuration conf
// (rendered from network n). Both cannot hold the ports at once, so the old
// one is stopped first; if the new one does not serve, dnsmasq is started
// again with the configuration the old one ran with. It returns the child
// that runs afterwards (nil if neither came up: Run retries with backoff)
// and why the new configuration did not start.
func (s *Supervisor) switchTo(ctx context.Context, ch *child, conf []byte, n config.Network) (*child, error) {
	oldConf := s.appliedConf
	s.mu.Lock()
	oldNet := s.network
	s.mu.Unlock()
	s.stop(ch)
	next, err := s.launch(ctx, conf, n)
	if err == nil {
		s.failedConf = nil
		return next, nil
	}
	if ctx.Err() != nil {
		return nil, err
	}
	s.failedConf = conf
	s.log.Error("dnsmasq did not start with the new configuration; starting it again with the previous one", "err", err)
	back, berr := s.launch(ctx, oldConf, oldNet)
	if berr != nil {
		return nil, errors.Join(err, fmt.Errorf("and with the previous configuration: %w", berr))
	}
	return back, fmt.Errorf("%w (dnsmasq runs with the previous configuration again)", err)
}

// launchCurrent starts dnsmasq with the current template, network and
// hosts.
func (s *Supervisor) launchCurrent(ctx context.Context) (*child, error) {
	conf, err := s.render()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	n := s.network
	s.mu.Unlock()
	return s.launch(ctx, conf, n)
}

// launch checks conf (rendered from network n: dnsmasq --test, Preflight),
// writes it and the hosts file, starts dnsmasq with them and waits until it
// serves. If it does not, no dnsmasq is left running.
func (s *Supervisor) launch(ctx context.Context, conf []byte, n config.Network) (*child, error) {
	if err := errors.Join(s.testOnce(conf), s.preflight(conf, n)); err != nil {
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
	ports := parseConf(conf).udpPorts()
	if err := s.waitServing(ctx, ch, ports, s.origins(n)); err != nil {
		select {
		case <-ch.exited:
		default:
			s.stop(ch)
		}
		return nil, err
	}
	s.appliedConf = conf
	s.appliedHosts = hosts
	s.serving(ch)
	s.log.Info("dnsmasq serving", "pid", ch.pid, "udp_ports", portList(ports), "took", time.Since(ch.started).Round(time.Millisecond))
	return ch, nil
}

// poke records that there are changes to apply; pokes while one is pending
// merge into it.
func (s *Supervisor) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
