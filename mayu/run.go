package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"mayu/pkg/api"
	"mayu/pkg/auth"
	"mayu/pkg/config"
	"mayu/pkg/discovery"
	"mayu/pkg/dnsmasq"
	"mayu/pkg/grubnet"
	"mayu/pkg/host"
	"mayu/pkg/machineauth"
	"mayu/pkg/memlimit"
	"mayu/pkg/metrics"
	"mayu/pkg/provision"
	"mayu/pkg/render"
	"mayu/pkg/store"
	"mayu/pkg/store/gitaudit"
	"mayu/pkg/timeline"
)

// prepared is everything loaded and checked before anything starts.
type prepared struct {
	cfg      *config.Config
	site     provision.Site // what machines are told about mayu
	renderer *render.Renderer
	dnsmasq  *dnsmasq.Supervisor // nil with --no-dnsmasq
	grub     *grubnet.Tree       // the Secure Boot chain's TFTP tree; nil unless secure_boot is set
	tlsPin   string              // the pin of mayu's key; "" without TLS
	tokens   *auth.Tokens        // nil with --no-admin-auth
	metrics  *metrics.Metrics
	// timeline keeps every machine's events; dnsmasq publishes to it
	// from its start, the provisioner and the API once they exist.
	timeline *timeline.Timeline
	runDir   string
	cleanup  func()
}

// prepare loads the configuration and templates and checks the dnsmasq
// configuration, listing every problem at once.
func prepare(o options, log *slog.Logger) (*prepared, error) {
	p := &prepared{cleanup: func() {}, timeline: timeline.New(timeline.Config{}),
		metrics: metrics.New(metrics.Sources{Version: version, Commit: commit})}
	// Exact counts of dnsmasq's DHCP and TFTP events: a synchronous hook
	// of the timeline, not a subscriber that could lag and lose some.
	p.timeline.Observe(p.metrics.CountEvent)
	var problems []string
	cfg, err := config.Load(o.configPath)
	if err != nil {
		problems = append(problems, explainConfigError(o.configPath, err))
	}
	p.cfg = cfg
	problems = append(problems, setupProblems(o, cfg, log)...)
	p.site = provision.Site{Cluster: cfg, HTTPPort: o.httpPort, NoTLS: o.noTLS}
	if !o.noTLS && o.certFile != "" {
		if p.site.CACert, p.tlsPin, err = machineTrust(o.certFile, o.caFile); err != nil {
			problems = append(problems, err.Error())
		}
	}
	rc := render.Config{
		FirstStageScript:     o.firstStageScript,
		LastStageCloudConfig: o.lastStageCC,
		IgnitionConfig:       o.ignitionConfig,
		Snippets:             o.snippets,
		UseIgnition:          o.useIgnition,
		MayuVersion:          version,
		Logger:               log.With("component", "render"),
	}
	if cfg != nil {
		// Start-up and reloads render the templates for the placeholder
		// host of --show-templates, so a template that --show-templates
		// refuses stops the daemon here instead of failing each machine.
		d := p.placeholderData()
		rc.Check = &d
	}
	p.renderer, err = render.New(rc)
	if err != nil {
		problems = append(problems, err.Error())
	}
	if cfg != nil && !o.noDnsmasq && !o.showTemplates {
		runDir, cleanup, err := runtimeDir(o.runtimeDir)
		if err != nil {
			problems = append(problems, err.Error())
		} else {
			p.runDir, p.cleanup = runDir, cleanup
			tftpRoot, secureBoot, err := secureBootChain(o, p, log)
			if err != nil {
				problems = append(problems, err.Error())
			}
			p.dnsmasq, err = dnsmasq.New(dnsmasq.Config{
				Binary:     o.dnsmasqBinary,
				Template:   o.dnsmasqTemplate,
				RuntimeDir: runDir,
				Network:    cfg.Network,
				TFTPRoot:   tftpRoot,
				NoTLS:      o.noTLS,
				HTTPPort:   o.httpPort,
				BootPort:   o.bootHTTPPort,
				Ignores:    func(h host.Host) bool { return provision.IgnoredByDHCP(cfg.Network, h) },
				SecureBoot: secureBoot,
				Logger:     log, // the package tags its lines component=dnsmasq
				OnEvent:    func(e timeline.Event) { p.timeline.Publish(e) },
			})
			if err == nil {
				// dnsmasq --test, then what the configuration needs of this
				// machine (interfaces, addresses, tftproot): every problem
				// on its own line.
				err = errors.Join(p.dnsmasq.Check(), p.dnsmasq.Preflight())
				p.metrics.AddDnsmasq(p.dnsmasq)
			}
			problems = append(problems, errorLines(err)...)
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
	logConfigWarnings(log, o.configPath, p.cfg)

	if o.store.kind == storeEtcd {
		// The host records live in etcd; the cluster directory keeps
		// this instance's own files (admin tokens, the internal
		// discovery's registries, machine bindings) and, unless
		// --no-git, the git audit trail this instance writes while it
		// is the elected auditor.
		if err := os.MkdirAll(o.clusterDir, 0o755); err != nil {
			return fmt.Errorf("--cluster-directory: %w", err)
		}
	}
	mets := p.metrics
	st, err := openStore(o, log, mets.ObserveBatch)
	if err != nil {
		return err
	}
	defer st.Close()
	auditor, err := newAuditor(o, st, log)
	if err != nil {
		return err
	}
	if auditor != nil {
		defer auditor.Target.Close()
	}

	var srv *api.Server // the discovery's write guard asks the server, built below
	guard := discovery.WriteGuard{
		New:    func(r *http.Request) error { return srv.LimitNewTokens(r) },
		Member: func(r *http.Request) error { return srv.AuthorizeMemberWrite(r) },
		// A token's size is changed (and a token deleted) by an admin
		// credential only, as the admin API's changes.
		AuthorizeConfigWrite: func(r *http.Request) error { return srv.AuthorizeAdminWrite(r) },
	}
	prov, disc, err := newProvisioner(ctx, o, p, st, guard, log)
	if err != nil {
		return err
	}
	machines, err := newMachineGuard(o, p, prov, log)
	if err != nil {
		return err
	}
	access, err := adminAccess(o, p, log)
	if err != nil {
		return err
	}
	mets.AddProvisioner(prov)
	srv, err = newServer(o, p, prov, disc, machines, access, mets, log)
	if err != nil {
		return err
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
	var bootLn net.Listener
	if o.bootHTTPPort != 0 {
		bootAddr := net.JoinHostPort(o.bindAddress, strconv.Itoa(o.bootHTTPPort))
		if bootLn, err = net.Listen("tcp", bootAddr); err != nil {
			ln.Close()
			return fmt.Errorf("--boot-http-port: listen on %s: %w", bootAddr, err)
		}
		log.Info("serving the iPXE boot script, PXE kernel and initrd over plain HTTP too", "listen", bootLn.Addr().String())
	}
	if o.machineAuth == machineauth.ModeOff {
		log.Warn("--machine-auth=off: anyone who can reach mayu may act as any machine (read its final config, mark it installed), as with Mayu 0.11")
	}
	if p.dnsmasq != nil {
		// "started" means machines get DHCP and TFTP: wait until dnsmasq
		// serves, and give up with its reason if it cannot.
		if p.grub != nil {
			if err := p.grub.Sync(prov.Hosts()); err != nil {
				ln.Close()
				return err
			}
		}
		p.dnsmasq.Sync(prov.Hosts())
		if err := p.dnsmasq.Start(ctx); err != nil {
			ln.Close()
			if ctx.Err() != nil {
				log.Info("mayu stopped before dnsmasq came up")
				return nil
			}
			return err
		}
	}
	mem := &memlimit.Tuner{}
	logMemoryLimit(log, mem.Start())
	log.Info("mayu started", "version", version, "listen", ln.Addr().String(), "base_url", prov.BaseURL(),
		"store", o.store.describe(o.clusterDir), "cluster_directory", o.clusterDir, "git", !o.noGit, "ignition", o.useIgnition, "dnsmasq", p.dnsmasq != nil)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx, ln, certFile, keyFile, o.shutdownTimeout) })
	if bootLn != nil {
		g.Go(func() error { return srv.ServeBoot(gctx, bootLn, o.shutdownTimeout) })
	}
	g.Go(func() error { return p.renderer.Watch(gctx) })
	if p.dnsmasq != nil {
		sup := p.dnsmasq
		st.Subscribe(func() { sup.Sync(prov.Hosts()) })
		if grub := p.grub; grub != nil {
			st.Subscribe(func() {
				if err := grub.Sync(prov.Hosts()); err != nil {
					log.Error("GRUB configuration of the Secure Boot chain not updated", "err", err)
				}
			})
		}
		g.Go(func() error { return sup.Run(gctx) })
	}
	g.Go(func() error { return reloadOnHangup(gctx, p, log) })
	g.Go(func() error { return mem.Run(gctx) })
	if auditor != nil {
		g.Go(func() error { return gitaudit.Run(gctx, *auditor) })
	}
	err = g.Wait()
	log.Info("mayu stopped")
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// logMemoryLimit says which soft memory limit the Go runtime keeps:
// GOMEMLIMIT's, or the one memlimit derives from the live heap (the store
// loaded) and follows as the fleet grows.
func logMemoryLimit(log *slog.Logger, st memlimit.State) {
	const mib = 1 << 20
	if st.FromEnv {
		if st.Limit == math.MaxInt64 {
			log.Info("memory limit: none (GOMEMLIMIT=off)")
			return
		}
		log.Info("memory limit from GOMEMLIMIT", "limit_mib", st.Limit/mib)
		return
	}
	log.Info("memory limit follows the live heap (set GOMEMLIMIT to fix one)", "limit_mib", st.Limit/mib,
		"live_heap_mib", st.LiveHeap/mib, "factor", memlimit.DefaultFactor, "headroom_mib", memlimit.DefaultHeadroom/mib)
}

// newProvisioner builds the etcd discovery service the flags ask for and
// the provisioner over st, and makes sure cluster.json names the default
// etcd token.
func newProvisioner(ctx context.Context, o options, p *prepared, st store.Store, guard discovery.WriteGuard, log *slog.Logger) (*provision.Provisioner, discovery.Service, error) {
	disc, err := newDiscovery(o, p.site.BaseURL(), filepath.Join(o.clusterDir, ".discovery"), guard, log.With("component", "discovery"))
	if err != nil {
		return nil, nil, err
	}
	prov, err := provision.New(provision.Config{
		Cluster:   p.site.Cluster,
		Store:     st,
		HTTPPort:  p.site.HTTPPort,
		NoTLS:     p.site.NoTLS,
		CACert:    p.site.CACert,
		Discovery: disc,
		Logger:    log.With("component", "provision"),
		Timeline:  p.timeline,
	})
	if err != nil {
		return nil, nil, err
	}
	// The timeline finds a machine by the MACs and addresses its record
	// holds; events of MACs no record holds yet wait until one does.
	p.timeline.SetResolve(prov.HostOf)
	st.Subscribe(p.timeline.Reattribute)
	if err := prov.EnsureClusterToken(ctx, o.quorumSize); err != nil {
		return nil, nil, err
	}
	return prov, disc, nil
}

// newServer builds the HTTP server; an internal discovery service's waits
// end when its graceful shutdown starts.
func newServer(o options, p *prepared, prov *provision.Provisioner, disc discovery.Service, machines *machineauth.Guard, access api.Access,
	mets *metrics.Metrics, log *slog.Logger) (*api.Server, error) {
	bootBase := ""
	if o.bootHTTPPort != 0 {
		bootBase = p.cfg.Network.BaseURL(o.bootHTTPPort, true)
	}
	srv, err := api.New(api.Config{
		Access:            access,
		Machines:          machines,
		AnonymousLimit:    o.anonymousLimit,
		EtcdMemberSources: o.etcdMemberSources,
		BootBaseURL:       bootBase,
		TLSPin:            p.tlsPin,
		Provisioner:       prov,
		Renderer:          p.renderer,
		Discovery:         disc,
		ImagesDir:         o.imagesDir,
		TFTPRoot:          o.tftpRoot,
		BootFiles:         dnsmasq.BootFiles,
		YochuDir:          o.yochuPath,
		StaticHTMLDir:     o.staticHTMLPath,
		UseIgnition:       o.useIgnition,
		Version:           version,
		Metrics:           mets,
		MetricsNoAuth:     o.metricsNoAuth,
		StaticIndex:       o.staticIndex,
		Logger:            log.With("component", "api"),
	})
	if err != nil {
		return nil, err
	}
	if in, ok := disc.(*discovery.Internal); ok {
		srv.RegisterOnShutdown(in.Shutdown)
	}
	return srv, nil
}

// machineAuthDir holds the machines' bindings (credential hashes, first
// MAC and address) in the cluster directory, beside conf.json files whose
// fields stay Mayu 0.11's; it is not committed.
const machineAuthDir = ".machine-auth"

// newMachineGuard builds the check of machine routes. Its lease table is
// --dhcp-leases-file, else the lease file of the dnsmasq mayu runs; with
// --no-dnsmasq or network.proxy_dhcp (mayu's dnsmasq leases nothing) and no
// lease file, a serial's first requester binds it.
func newMachineGuard(o options, p *prepared, prov *provision.Provisioner, log *slog.Logger) (*machineauth.Guard, error) {
	var leases machineauth.Leases
	leasesFile := machineLeasesFile(o, p)
	if leasesFile != "" {
		leases = machineauth.NewLeaseFile(leasesFile, log.With("component", "machineauth"))
	}
	g, err := machineauth.New(machineauth.Config{
		Mode:   o.machineAuth,
		Hosts:  prov,
		Leases: leases,
		Dir:    filepath.Join(o.clusterDir, machineAuthDir),
		Logger: log.With("component", "machineauth"),
	})
	if err != nil {
		return nil, err
	}
	log.Info("machine routes checked", "machine_auth", string(o.machineAuth), "dhcp_leases", leasesFile)
	if leasesFile == "" && p.cfg != nil && p.cfg.Network.ProxyDHCP && o.machineAuth == machineauth.ModeLease {
		log.Info("network.proxy_dhcp: mayu leases no addresses, so a serial is bound to the address that first asks for it (trust on first use, bounded by --anonymous-limit); --dhcp-leases-file=<the site's dnsmasq lease file> or --machine-auth=credential bind machines closer")
	}
	return g, nil
}

// machineLeasesFile is the DHCP lease file that ties machines' addresses
// to their MACs: --dhcp-leases-file, else that of the dnsmasq mayu runs,
// unless that dnsmasq is a proxyDHCP server (network.proxy_dhcp), which
// leases nothing: then, as with --no-dnsmasq, "" (no lease table).
func machineLeasesFile(o options, p *prepared) string {
	if o.leasesFile != "" {
		return o.leasesFile
	}
	if p.dnsmasq == nil || (p.cfg != nil && p.cfg.Network.ProxyDHCP) {
		return ""
	}
	_, _, leases := p.dnsmasq.Paths()
	return leases
}

// adminAccess loads (or creates) the admin API's token file and the client
// CA, and gathers the names a request's Host may carry.
func adminAccess(o options, p *prepared, log *slog.Logger) (api.Access, error) {
	a := api.Access{NoAdminAuth: o.noAdminAuth, TrustedProxies: o.trustedProxies, Hosts: hostNames(o, p.cfg)}
	if o.noAdminAuth {
		return a, nil
	}
	toks, created, err := auth.LoadOrCreate(o.adminTokenFile)
	if err != nil {
		return a, err
	}
	if created {
		log.Warn("created the admin API's token file with one admin credential; mayuctl reads it with --token-file "+
			"(or pass its token as --token or $MAYU_TOKEN); add a line per operator", "token_file", o.adminTokenFile)
	}
	p.tokens, a.Tokens = toks, toks
	if o.clientCAFile != "" {
		pem, err := os.ReadFile(o.clientCAFile)
		if err != nil {
			return a, fmt.Errorf("--client-ca-file: %w", err)
		}
		a.ClientCAs = x509.NewCertPool()
		if !a.ClientCAs.AppendCertsFromPEM(pem) {
			return a, fmt.Errorf("--client-ca-file %s: no PEM certificate in it", o.clientCAFile)
		}
	}
	return a, nil
}

// hostNames are the names of this mayu besides its addresses: the flag's,
// the host of templates_env.mayu_http_endpoint (what the final configs
// call) and the machine's host name.
func hostNames(o options, cfg *config.Config) []string {
	names := append([]string(nil), o.allowedHosts...)
	if ep, ok := cfg.TemplatesEnv["mayu_http_endpoint"].(string); ok {
		if u, err := url.Parse(ep); err == nil && u.Hostname() != "" {
			names = append(names, u.Hostname())
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
	}
	return names
}

// reloadOnHangup re-reads the templates and the dnsmasq template on SIGHUP.
// dnsmasq restarts only if its rendered main configuration changed; a
// template that does not parse, that dnsmasq rejects or that names what this
// machine lacks (an interface, an address, the tftproot) leaves the running
// dnsmasq in place, and one dnsmasq then fails to start with brings the
// previous configuration back. config.yaml itself is read at start only: its addresses are
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
		if p.tokens != nil {
			if err := p.tokens.Reload(); err != nil {
				log.Error("admin token file not reloaded; the credentials in use stay", "err", err)
			} else {
				log.Info("admin token file reloaded", "token_file", p.tokens.Path(), "credentials", p.tokens.Len())
			}
		}
		if p.dnsmasq != nil {
			if err := p.dnsmasq.Reload(p.cfg.Network); err != nil {
				log.Error("dnsmasq template not reloaded; dnsmasq keeps its configuration", "err", err)
			}
		}
	}
}

// newDiscovery builds the etcd discovery mode the flags ask for: internal
// (default), proxy (--etcd-endpoint given) or external (--etcd-discovery).
func newDiscovery(o options, base, dir string, guard discovery.WriteGuard, log *slog.Logger) (discovery.Service, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	switch {
	case o.externalDiscovery != "":
		return discovery.NewExternal(discovery.ExternalConfig{URL: o.externalDiscovery, Client: client, DefaultSize: o.quorumSize})
	case o.etcdEndpoint != "":
		return discovery.NewProxy(discovery.ProxyConfig{Endpoint: o.etcdEndpoint, BaseURL: base, DefaultSize: o.quorumSize, Client: client, Guard: guard, Logger: log})
	default:
		return discovery.NewInternal(discovery.InternalConfig{Dir: dir, BaseURL: base, DefaultSize: o.quorumSize, LegacyEtcd: o.legacyEtcd, Guard: guard, Logger: log})
	}
}

// errorLines splits an errors.Join result into one message per error.
func errorLines(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var lines []string
		for _, e := range j.Unwrap() {
			lines = append(lines, errorLines(e)...)
		}
		return lines
	}
	return []string{err.Error()}
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
	return p.renderer.ShowTemplates(w, p.placeholderData())
}

// placeholderData is the final-template context of render.PlaceholderHost
// under this configuration: what --show-templates prints and what start-up
// renders as its template check. The token sits under the internal
// discovery's URL.
func (p *prepared) placeholderData() render.FinalData {
	return p.site.FinalData(render.PlaceholderHost(), p.site.BaseURL()+"/etcd/"+placeholderToken)
}

const placeholderToken = "00000000000000000000000000000000"
