package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"mayu/pkg/api"
	"mayu/pkg/config"
	"mayu/pkg/discovery"
	"mayu/pkg/dnsmasq"
	"mayu/pkg/provision"
	"mayu/pkg/render"
	"mayu/pkg/store"
)

// prepared is everything loaded and checked before anything starts.
type prepared struct {
	cfg      *config.Config
	renderer *render.Renderer
	dnsmasq  *dnsmasq.Supervisor // nil with --no-dnsmasq
	runDir   string
	cleanup  func()
}

// prepare loads the configuration and templates and checks the dnsmasq
// configuration, listing every problem at once.
func prepare(o options, log *slog.Logger) (*prepared, error) {
	p := &prepared{cleanup: func() {}}
	var problems []string
	cfg, err := config.Load(o.configPath)
	if err != nil {
		problems = append(problems, explainConfigError(o.configPath, err))
	}
	p.cfg = cfg
	problems = append(problems, setupProblems(o, cfg, log)...)
	p.renderer, err = render.New(render.Config{
		FirstStageScript:     o.firstStageScript,
		LastStageCloudConfig: o.lastStageCC,
		IgnitionConfig:       o.ignitionConfig,
		Snippets:             o.snippets,
		UseIgnition:          o.useIgnition,
		MayuVersion:          version,
		Logger:               log.With("component", "render"),
	})
	if err != nil {
		problems = append(problems, err.Error())
	}
	if cfg != nil && !o.noDnsmasq && !o.showTemplates {
		runDir, cleanup, err := runtimeDir(o.runtimeDir)
		if err != nil {
			problems = append(problems, err.Error())
		} else {
			p.runDir, p.cleanup = runDir, cleanup
			p.dnsmasq, err = dnsmasq.New(dnsmasq.Config{
				Binary:     o.dnsmasqBinary,
				Template:   o.dnsmasqTemplate,
				RuntimeDir: runDir,
				Network:    cfg.Network,
				TFTPRoot:   o.tftpRoot,
				NoTLS:      o.noTLS,
				HTTPPort:   o.httpPort,
				Logger:     log, // the package tags its lines component=dnsmasq
			})
			if err == nil {
				err = p.dnsmasq.Check()
			}
			if err != nil {
				problems = append(problems, err.Error())
			}
		}
	}
	if len(problems) > 0 {
		p.cleanup()
		return nil, problemsError(problems)
	}
	return p, nil
}

// run starts the daemon and blocks until SIGTERM/SIGINT or a fatal error.
func run(parent context.Context, o options, log *slog.Logger) error {
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	p, err := prepare(o, log)
	if err != nil {
		return err
	}
	defer p.cleanup()

	st, err := store.OpenDir(o.clusterDir, store.DirOptions{NoGit: o.noGit, Logger: log.With("component", "store"), Watch: true})
	if err != nil {
		return err
	}
	defer st.Close()

	prov, err := provision.New(provision.Config{Cluster: p.cfg, Store: st, Logger: log.With("component", "provision")})
	if err != nil {
		return err
	}

	base := baseURL(p.cfg.Network.BindAddr, o.httpPort, o.noTLS)
	disc, err := newDiscovery(o, base, filepath.Join(o.clusterDir, ".discovery"), log.With("component", "discovery"))
	if err != nil {
		return err
	}
	if err := ensureClusterToken(ctx, st, prov, disc, o.quorumSize, log); err != nil {
		return err
	}

	srv, err := api.New(api.Config{
		Cluster:       p.cfg,
		Store:         st,
		Provisioner:   prov,
		Renderer:      p.renderer,
		Discovery:     disc,
		ImagesDir:     o.imagesDir,
		YochuDir:      o.yochuPath,
		StaticHTMLDir: o.staticHTMLPath,
		Host:          p.cfg.Network.BindAddr,
		Port:          o.httpPort,
		NoTLS:         o.noTLS,
		UseIgnition:   o.useIgnition,
		Version:       version,
		Logger:        log.With("component", "api"),
	})
	if err != nil {
		return err
	}

	if in, ok := disc.(*discovery.Internal); ok {
		srv.RegisterOnShutdown(in.Shutdown)
	}

	// Bind before starting anything, so a busy port is a start-up error.
	addr := net.JoinHostPort(o.bindAddress, strconv.Itoa(o.httpPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	certFile, keyFile := o.certFile, o.keyFile
	if o.noTLS {
		certFile, keyFile = "", ""
	}
	log.Info("mayu started", "version", version, "listen", ln.Addr().String(), "base_url", base,
		"cluster_directory", o.clusterDir, "git", !o.noGit, "ignition", o.useIgnition, "dnsmasq", p.dnsmasq != nil)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx, ln, certFile, keyFile, o.shutdownTimeout) })
	g.Go(func() error { return p.renderer.Watch(gctx) })
	if p.dnsmasq != nil {
		sup := p.dnsmasq
		sup.Sync(st.List())
		st.Subscribe(func() { sup.Sync(st.List()) })
		g.Go(func() error { return sup.Run(gctx) })
	}
	g.Go(func() error { return reloadOnHangup(gctx, p, log) })
	err = g.Wait()
	log.Info("mayu stopped")
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// reloadOnHangup re-reads the templates and the dnsmasq template on SIGHUP.
// dnsmasq restarts only if its rendered main configuration changed; a
// template that does not parse or that dnsmasq rejects leaves the running
// set in place. config.yaml itself is read at start only: its addresses are
// in every URL already handed out, so changing it takes a restart.
func reloadOnHangup(ctx context.Context, p *prepared, log *slog.Logger) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		}
		log.Info("SIGHUP: reloading templates")
		if err := p.renderer.Reload(); err != nil {
			log.Error("templates not reloaded", "err", err)
		}
		if p.dnsmasq != nil {
			if err := p.dnsmasq.Reload(p.cfg.Network); err != nil {
				log.Error("dnsmasq template not reloaded; dnsmasq keeps its configuration", "err", err)
			}
		}
	}
}

func baseURL(host string, port int, noTLS bool) string {
	scheme := "https"
	if noTLS {
		scheme = "http"
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// newDiscovery builds the etcd discovery mode the flags ask for: internal
// (default), proxy (--etcd-endpoint given) or external (--etcd-discovery).
func newDiscovery(o options, base, dir string, log *slog.Logger) (discovery.Service, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	switch {
	case o.externalDiscovery != "":
		return discovery.NewExternal(discovery.ExternalConfig{URL: o.externalDiscovery, Client: client, DefaultSize: o.quorumSize})
	case o.etcdEndpoint != "":
		return discovery.NewProxy(discovery.ProxyConfig{Endpoint: o.etcdEndpoint, BaseURL: base, DefaultSize: o.quorumSize, Client: client, Logger: log})
	default:
		return discovery.NewInternal(discovery.InternalConfig{Dir: dir, BaseURL: base, DefaultSize: o.quorumSize, Logger: log})
	}
}

// ensureClusterToken makes sure cluster.json names a default etcd token:
// a deprecated EtcdDiscoveryURL is converted, a missing one is created.
func ensureClusterToken(ctx context.Context, st store.Store, prov *provision.Provisioner, disc discovery.Service, size int, log *slog.Logger) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := disc.Check(cctx); err != nil {
		return fmt.Errorf("etcd discovery: %w", err)
	}
	cl := st.Cluster().Config
	token := cl.DefaultEtcdClusterToken
	if token == "" && cl.EtcdDiscoveryURL != "" {
		t, err := discovery.TokenFromURL(cl.EtcdDiscoveryURL)
		if err != nil {
			return fmt.Errorf("cluster.json: EtcdDiscoveryURL: %w", err)
		}
		token = t
		log.Info("converted deprecated EtcdDiscoveryURL of cluster.json", "url", cl.EtcdDiscoveryURL, "token", token)
	}
	if token == "" {
		t, err := disc.NewToken(cctx, size)
		if err != nil {
			return fmt.Errorf("creating the default etcd discovery token: %w", err)
		}
		token = t
	} else if e, ok := disc.(discovery.Ensurer); ok {
		if _, err := e.Ensure(cctx, token, size); err != nil {
			return fmt.Errorf("etcd discovery registry for %s: %w", token, err)
		}
	}
	if token != cl.DefaultEtcdClusterToken || cl.EtcdDiscoveryURL != "" {
		if err := prov.SetClusterToken(token); err != nil {
			return err
		}
		log.Info("default etcd discovery token set", "token", token)
	}
	return nil
}

// runtimeDir returns the directory for dnsmasq's files: the flag's, else
// /run/mayu as root (leases survive a mayu restart), else a temporary
// directory removed at exit.
func runtimeDir(flag string) (string, func(), error) {
	if flag == "" && os.Geteuid() == 0 {
		flag = "/run/mayu"
	}
	if flag != "" {
		if err := os.MkdirAll(flag, 0o750); err != nil {
			return "", nil, fmt.Errorf("--runtime-dir: %w", err)
		}
		return flag, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "mayu-run-")
	if err != nil {
		return "", nil, fmt.Errorf("runtime directory: %w", err)
	}
	return dir, func() { _ = os.RemoveAll(dir) }, nil
}

// showTemplates renders the final templates for a placeholder host, prints
// them and fails if any does not render or validate.
func showTemplates(w io.Writer, o options, log *slog.Logger) error {
	p, err := prepare(o, log)
	if err != nil {
		return err
	}
	defer p.cleanup()
	base := baseURL(p.cfg.Network.BindAddr, o.httpPort, o.noTLS)
	h := render.PlaceholderHost()
	return p.renderer.ShowTemplates(w, render.FinalData{
		Host:             h,
		EtcdDiscoveryUrl: base + "/etcd/" + placeholderToken,
		ClusterNetwork:   p.cfg.Network,
		MayuHost:         p.cfg.Network.BindAddr,
		MayuPort:         o.httpPort,
		MayuURL:          base,
		NoTLS:            o.noTLS,
		PostBootURL:      base + "/admin/host/" + h.Serial + "/boot_complete",
		TemplatesEnv:     p.cfg.TemplatesEnv,
	})
}

const placeholderToken = "00000000000000000000000000000000"
