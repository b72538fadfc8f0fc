// Package api is mayu's HTTP server: the routes PXE-booting machines use
// (boot script, first-stage script, images, final config) and the admin API
// mayuctl uses. Handlers decode a small request type, call one provision
// method and encode the answer; one error handler turns errors into status
// codes with a one-line reason.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

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

	ImagesDir     string // --images-cache-dir
	YochuDir      string // --yochu-path
	StaticHTMLDir string // --static-html-path

	UseIgnition bool
	Version     string

	// Access is who may use the admin routes (auth.go).
	Access Access

	Logger *slog.Logger
}

// Server is the HTTP server.
type Server struct {
	cfg        Config
	prov       *provision.Provisioner
	e          *echo.Echo
	log        *slog.Logger
	base       string
	hosts      *hostSet
	onShutdown []func()
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
		cfg:  cfg,
		prov: cfg.Provisioner,
		log:  cfg.Logger,
		base: cfg.Provisioner.BaseURL(),
	}
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
	s.e = e
	if err := s.setupAccess(); err != nil {
		return nil, err
	}
	s.routes()
	s.logAccess()
	return s, nil
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
	file := func(path string, h echo.HandlerFunc) {
		e.GET(path, h)
		e.HEAD(path, h)
	}
	file("/hostinfo-helper", s.hostinfoHelper)
	file("/machine-serial.sh", s.machineSerialScript)
	e.POST("/final-cloud-config.yaml", s.finalConfig(false))
	e.POST("/final-ignition-config.json", s.finalConfig(true))

	file("/images/vmlinuz", s.defaultImage(pxeKernel))
	file("/images/initrd.cpio.gz", s.defaultImage(pxeInitrd))
	file("/images/:serial/vmlinuz", s.hostImage(pxeKernel))
	file("/images/:serial/initrd.cpio.gz", s.hostImage(pxeInitrd))
	file("/images/:serial/install_image.bin.bz2", s.hostImage(installImage))
	file("/images/:serial/qemu/:file", s.qemuImage)
	file("/yochu/*", s.dirFile(func() string { return s.cfg.YochuDir }))

	// The admin routes need a credential (auth.go), but for the two that
	// installing machines call, with no credential in Mayu 0.11's
	// templates: those are machine routes about the serial they name.
	admin := e.Group("/admin")
	admin.GET("/hosts", s.listHosts, s.adminRead)
	for _, r := range s.machineHostRoutes() {
		admin.PUT("/host/:serial/"+r.name, r.handler)
	}
	for _, r := range s.adminRoutes() {
		admin.PUT("/host/:serial/"+r.name, r.handler, s.adminWrite)
	}

	if s.cfg.Discovery != nil {
		s.cfg.Discovery.Register(e.Group("/etcd"))
	}
	// Everything else comes from the static directory (index.html, mayuctl,
	// infopusher).
	file("/*", s.dirFile(func() string { return s.cfg.StaticHTMLDir }))
	e.Match([]string{http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodPatch}, "/*", func(c echo.Context) error {
		return fmt.Errorf("%w: no route %s %s", errNotServed, c.Request().Method, c.Request().URL.Path)
	})
}

// Serve answers HTTP (or HTTPS with certFile/keyFile) on ln until ctx is
// done, then shuts down gracefully: in-flight requests get up to grace to
// finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener, certFile, keyFile string, grace time.Duration) error {
	srv := &http.Server{
		Handler:           s.e,
		TLSConfig:         s.tlsConfig(),
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
	go func() {
		var err error
		if certFile != "" {
			err = srv.ServeTLS(ln, certFile, keyFile)
		} else {
			err = srv.Serve(ln)
		}
		errc <- err
	}()
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
		if s.log.Enabled(c.Request().Context(), slog.LevelDebug) {
			s.log.Debug("request", append([]any{"method", c.Request().Method, "path", c.Request().URL.Path,
				"status", c.Response().Status, "duration", time.Since(start)}, requestAttrs(c)...)...)
		}
		return nil
	}
}
