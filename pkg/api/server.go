// Package api is mayu's HTTP server: the routes PXE-booting machines use
// (boot script, first-stage script, images, final config) and the admin API
// mayuctl uses. Handlers decode a small request type, call one provision
// method and encode the answer; one error handler turns errors into status
// codes with a one-line reason.
package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"mayu/pkg/machineauth"
	"mayu/pkg/metrics"
	"mayu/pkg/provision"
	"mayu/pkg/render"
)

// MaxBodyBytes bounds request bodies: host facts and admin setters are a few
// hundred bytes; anything near this limit is an error or an attack.
const MaxBodyBytes = 1 << 20

// Renderer renders the first-stage script and the final config.
type Renderer interface {
	FirstStage(d render.FirstStageData) ([]byte, error)
	Final(d render.FinalData) ([]byte, error)
}

// Discovery is the etcd discovery service's protocol, served under /etcd.
type Discovery interface {
	Register(g *echo.Group)
}

// Config is what the server needs. Where machines reach mayu, the cluster
// configuration and the store are the Provisioner's: every rule goes
// through it.
type Config struct {
	Provisioner *provision.Provisioner
	Renderer    Renderer
	Discovery   Discovery // nil: no /etcd routes

	ImagesDir string // --images-cache-dir
	// TFTPRoot (--tftproot) and BootFiles: the boot loaders in it that
	// are served over HTTP too, under /tftproot/<name> (UEFI HTTP boot
	// fetches the iPXE EFI binary so). Only these exact names are served.
	TFTPRoot      string
	BootFiles     []string
	YochuDir      string // --yochu-path
	StaticHTMLDir string // --static-html-path

	UseIgnition bool
	Version     string

	// Machines checks that a request on a machine route (first-stage
	// script, final config, set_installed, boot_complete, images of a
	// serial) comes from the machine it names, and hands out the
	// machines' credentials. nil accepts every request, as Mayu 0.11 did.
	Machines *machineauth.Guard
	// AnonymousLimit bounds, per source address and minute, the requests
	// that make mayu create something for anyone: registrations of serials
	// it has no record of (which take an address of ip_range), and apart
	// from those, through LimitNewTokens, PUT /etcd/new. 0: no limit.
	AnonymousLimit int
	// EtcdMemberSources are the addresses, besides provisioned machines',
	// that may register etcd members (AuthorizeMemberWrite).
	EtcdMemberSources []*net.IPNet
	// BootBaseURL is where iPXE fetches the boot script, the PXE kernel and
	// initrd when they are also served over plain HTTP (ServeBoot, for an
	// iPXE that cannot check mayu's certificate); "" means BaseURL.
	BootBaseURL string
	// TLSPin is the pin of mayu's key (curl's --pinnedpubkey form,
	// "sha256//<base64>"), handed to the PXE image on its kernel command
	// line as mayu-pin=; "" without TLS.
	TLSPin string

	// Access is who may use the admin routes (auth.go).
	Access Access

	// Metrics counts every request and answers GET /metrics; nil: no
	// /metrics route. MetricsNoAuth serves /metrics without a
	// credential (--metrics-no-auth); otherwise it needs one, as GET
	// /admin/hosts does.
	Metrics       *metrics.Metrics
	MetricsNoAuth bool

	// StaticIndex serves /index.html from StaticHTMLDir as Mayu 0.11 did
	// (--static-index), for an operator's own page; the built-in dashboard
	// then stays at /dashboard.html. Without it /index.html is the
	// dashboard.
	StaticIndex bool

	Logger *slog.Logger
}

// Server is the HTTP server.
type Server struct {
	cfg        Config
	prov       *provision.Provisioner
	e          *echo.Echo
	log        *slog.Logger
	base       string
	boot       *echo.Echo                         // the routes ServeBoot answers
	limiter    *middleware.RateLimiterMemoryStore // registrations of unknown serials
	newTokens  *middleware.RateLimiterMemoryStore // PUT /etcd/new
	hosts      *hostSet
	onShutdown []func()
	// shutdown is closed when graceful shutdown starts: event streams end.
	shutdown     chan struct{}
	shutdownOnce sync.Once
}

// New builds the server and its route table.
func New(cfg Config) (*Server, error) {
	if cfg.Provisioner == nil || cfg.Renderer == nil {
		return nil, errors.New("api: provisioner and renderer are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:       cfg,
		prov:      cfg.Provisioner,
		log:       cfg.Logger,
		base:      cfg.Provisioner.BaseURL(),
		limiter:   newLimiter(cfg.AnonymousLimit),
		newTokens: newLimiter(cfg.AnonymousLimit),
		shutdown:  make(chan struct{}),
	}
	s.RegisterOnShutdown(func() { s.shutdownOnce.Do(func() { close(s.shutdown) }) })
	s.e = s.newEcho()
	if err := s.setupAccess(); err != nil {
		return nil, err
	}
	s.routes()
	s.boot = s.newEcho()
	// The boot routes name clients in the log as the main routes do.
	s.boot.IPExtractor = s.e.IPExtractor
	s.bootRoutes(s.boot)
	s.logAccess()
	return s, nil
}

// newEcho is an echo with the server's error handler, access log, panic
// recovery and body limit.
func (s *Server) newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.handleError
	// The access log comes first so it wraps everything that can answer:
	// the recovered panic, the body limit's 413, the router's 404 and 405.
	e.Use(s.logRequests)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisableStackAll: true,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			s.log.Error("handler panicked (a bug)", "method", c.Request().Method, "path", c.Request().URL.Path,
				"err", err, "stack", string(stack))
			return err
		},
	}))
	e.Use(middleware.BodyLimit(strconv.Itoa(MaxBodyBytes/1024) + "K"))
	return e
}

// BaseURL is the URL machines use to reach mayu.
func (s *Server) BaseURL() string { return s.base }

// RegisterOnShutdown adds a function called when graceful shutdown starts,
// to end long-running requests (etcd discovery waits) that would otherwise
// hold the shutdown until its deadline.
func (s *Server) RegisterOnShutdown(f func()) { s.onShutdown = append(s.onShutdown, f) }

// Handler returns the HTTP handler, for tests.
func (s *Server) Handler() http.Handler { return s.e }

func (s *Server) routes() {
	e := s.e
	e.GET("/", s.welcome)
	e.GET("/ipxebootscript", s.ipxeBootScript)
	e.GET("/first-stage-script/:serial", s.firstStageScript)
	// File routes answer HEAD too (curl -I, download tools probing sizes).
	file := func(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) {
		e.GET(path, h, m...)
		e.HEAD(path, h, m...)
	}
	file("/hostinfo-helper", s.hostinfoHelper)
	// The dashboard is built in; the static directory's other files are
	// served as before, and its index.html too with --static-index.
	file("/dashboard.html", s.dashboard)
	if !s.cfg.StaticIndex {
		file("/index.html", s.dashboard)
	}
	file("/machine-serial.sh", s.machineSerialScript)
	e.POST("/final-cloud-config.yaml", s.finalConfig(false))
	e.POST("/final-ignition-config.json", s.finalConfig(true))

	file("/images/vmlinuz", s.defaultImage(PXEKernelFile))
	file("/images/initrd.cpio.gz", s.defaultImage(PXEInitrdFile))
	image := s.machineRoute(machineauth.Image)
	file("/images/:serial/vmlinuz", s.hostImage(PXEKernelFile), image)
	file("/images/:serial/initrd.cpio.gz", s.hostImage(PXEInitrdFile), image)
	file("/images/:serial/install_image.bin.bz2", s.hostImage(installImage), image)
	file("/images/:serial/qemu/:file", s.qemuImage, image)
	file("/yochu/*", s.dirFile(func() string { return s.cfg.YochuDir }))
	file("/tftproot/:file", s.bootFile)

	// The admin routes need a credential (auth.go), but for the two that
	// installing machines call, with no credential in Mayu 0.11's
	// templates: those are machine routes about the serial they name.
	admin := e.Group("/admin")
	admin.GET("/hosts", s.listHosts, s.adminRead)
	admin.GET("/pool", s.pool, s.adminRead)
	s.timelineRoutes(admin)
	// A machine's own reports: the machine proves who it is
	// (machineRoute); they are not admin requests.
	for _, r := range s.machineHostRoutes() {
		admin.PUT("/host/:serial/"+r.name, r.handler, s.machineRoute(machineauth.Machine))
	}
	for _, r := range s.adminRoutes() {
		admin.PUT("/host/:serial/"+r.name, r.handler, s.adminWrite)
	}

	if s.cfg.Discovery != nil {
		s.cfg.Discovery.Register(e.Group("/etcd"))
	}
	if s.cfg.Metrics != nil {
		var guard []echo.MiddlewareFunc
		if !s.cfg.MetricsNoAuth {
			guard = append(guard, s.adminRead)
		}
		e.GET("/metrics", echo.WrapHandler(s.cfg.Metrics.Handler()), guard...)
	}
	// Everything else comes from the static directory (index.html, mayuctl,
	// infopusher).
	file("/*", s.dirFile(func() string { return s.cfg.StaticHTMLDir }))
	e.Match([]string{http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodPatch}, "/*", func(c echo.Context) error {
		return fmt.Errorf("%w: no route %s %s", errNotServed, c.Request().Method, c.Request().URL.Path)
	})
}

// bootRoutes are what ServeBoot answers: what firmware and iPXE fetch
// before anything can check mayu's certificate (the boot loaders of
// tftproot, the boot script, the PXE kernel and initrd), as unauthenticated as DHCP and TFTP before them.
func (s *Server) bootRoutes(e *echo.Echo) {
	e.GET("/ipxebootscript", s.ipxeBootScript)
	e.GET("/tftproot/:file", s.bootFile)
	e.HEAD("/tftproot/:file", s.bootFile)
	for path, name := range map[string]string{"/images/vmlinuz": PXEKernelFile, "/images/initrd.cpio.gz": PXEInitrdFile} {
		e.GET(path, s.defaultImage(name))
		e.HEAD(path, s.defaultImage(name))
	}
}

// Serve answers HTTP (or HTTPS with certFile/keyFile) on ln until ctx is
// done, then shuts down gracefully: in-flight requests get up to grace to
// finish. HTTPS offers TLS 1.2 and 1.3, and in TLS 1.2 only the ECDHE
// suites with AEAD ciphers (TLSConfig).
func (s *Server) Serve(ctx context.Context, ln net.Listener, certFile, keyFile string, grace time.Duration) error {
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("api: TLS certificate: %w", err)
		}
		conf := s.tlsConfig()
		conf.Certificates = []tls.Certificate{cert}
		ln = tls.NewListener(ln, conf)
	}
	return s.serve(ctx, ln, s.e, grace)
}

// ServeBoot answers plain HTTP on ln with the boot routes only (the iPXE
// boot script, the PXE kernel and initrd; see Config.BootBaseURL), until
// ctx is done.
func (s *Server) ServeBoot(ctx context.Context, ln net.Listener, grace time.Duration) error {
	return s.serve(ctx, ln, s.boot, grace)
}

// TLSConfig is the TLS configuration mayu serves with: TLS 1.2 or later,
// and in TLS 1.2 only ECDHE key exchange with AES-GCM or ChaCha20-Poly1305
// (TLS 1.3's suites are all AEAD and not configurable).
func TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}

func (s *Server) serve(ctx context.Context, ln net.Listener, h http.Handler, grace time.Duration) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		// No WriteTimeout: install images are hundreds of megabytes and a
		// slow machine must be able to finish its download.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	for _, f := range s.onShutdown {
		srv.RegisterOnShutdown(f)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("api: serve: %w", err)
	case <-ctx.Done():
	}
	// The root context is already cancelled: shut down with a fresh one.
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("api: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("api: serve: %w", err)
	}
	return nil
}

// logRequests is the access log: one line per request with the status
// that was sent. A failed request's error goes to the error handler here,
// before the status is read: left to echo, the handler would run only after
// every middleware had returned, and the line would show the 200 a response
// holds before anything is written. The error is not returned, so echo does
// not handle it twice.
func (s *Server) logRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		if err := next(c); err != nil {
			c.Error(err)
		}
		if s.cfg.Metrics != nil {
			s.cfg.Metrics.ObserveRequest(c.Path(), c.Request().Method, c.Response().Status, time.Since(start))
		}
		s.recordFetch(c, start)
		if s.log.Enabled(c.Request().Context(), slog.LevelDebug) {
			s.log.Debug("request", append([]any{"method", c.Request().Method, "path", c.Request().URL.Path,
				"status", c.Response().Status, "duration", time.Since(start)}, requestAttrs(c)...)...)
		}
		return nil
	}
}
