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
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/template"
	"time"

	"mayu/pkg/config"
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
