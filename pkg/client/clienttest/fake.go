// Package clienttest serves mayu's own admin API for tests of the client
// and of mayuctl: the daemon's handlers (package api) and rules (package
// provision) on top of a store.Store, so the audit messages, statuses and
// one-line reasons a test sees are the daemon's and cannot drift from them.
// It also records the requests it served, so a test can check the exact
// JSON a client sent.
package clienttest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"mayu/pkg/api"
	"mayu/pkg/auth"
	"mayu/pkg/config"
	"mayu/pkg/provision"
	"mayu/pkg/render"
	"mayu/pkg/store"
	"mayu/pkg/timeline"
)

// cluster is the config.yaml the fake's rules run with. The admin routes
// read none of it; the provisioner needs a valid one all the same.
const cluster = `
default_coreos_version: 1068.6.0
network:
  pxe: true
  interface: eth1
  bind_addr: 192.168.2.2
  bootstrap_range: {start: 192.168.2.100, end: 192.168.2.200}
  ip_range: {start: 192.168.2.21, end: 192.168.2.99}
`

// The fake's credentials: the admin routes answer 401 without one of
// these, and 403 to a change asked for with ReadOnlyToken.
const (
	AdminToken    = "clienttest-admin-0123456789abcdefghijklmnopqrstuvwxyz"
	ReadOnlyToken = "clienttest-viewer-0123456789abcdefghijklmnopqrstuvwxyz"
)

// Server is the fake: an http.Handler.
type Server struct {
	handler  http.Handler
	timeline *timeline.Timeline

	mu       sync.Mutex
	requests []Request
}

// Request is one request the fake received. Body holds at most the first
// api.MaxBodyBytes+1 bytes, enough to tell an oversized body.
type Request struct {
	Method, Path, ContentType string
	Body                      string
}

// New returns a fake serving st. now stamps LastBoot at boot_complete; nil
// means time.Now. It panics only if its built-in cluster configuration is
// invalid, which is a bug of this package.
func New(st store.Store, now func() time.Time) *Server {
	cfg, err := config.Parse([]byte(cluster))
	if err != nil {
		panic(fmt.Sprintf("clienttest: built-in config.yaml: %v", err))
	}
	tl := timeline.New(timeline.Config{})
	prov, err := provision.New(provision.Config{Cluster: cfg, Store: st, HTTPPort: 4080, NoTLS: true, Now: now, Timeline: tl})
	if err != nil {
		panic(fmt.Sprintf("clienttest: %v", err))
	}
	tl.SetResolve(prov.HostOf)
	toks, err := auth.Parse([]byte("operator admin " + AdminToken + "\nviewer read-only " + ReadOnlyToken + "\n"))
	if err != nil {
		panic(fmt.Sprintf("clienttest: built-in tokens: %v", err))
	}
	srv, err := api.New(api.Config{Provisioner: prov, Renderer: adminOnly{}, Version: "clienttest", Access: api.Access{Tokens: toks}})
	if err != nil {
		panic(fmt.Sprintf("clienttest: %v", err))
	}
	return &Server{handler: srv.Handler(), timeline: tl}
}

// Timeline is the fake's timeline: the provisioner records state changes
// there, and a test publishes the DHCP, TFTP and HTTP events a real mayu
// would see.
func (s *Server) Timeline() *timeline.Timeline { return s.timeline }

// Requests returns the requests served so far, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// ServeHTTP records the request and hands it to the daemon's handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	head, err := io.ReadAll(io.LimitReader(r.Body, api.MaxBodyBytes+1))
	if err != nil {
		http.Error(w, "cannot read request body", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path,
		ContentType: r.Header.Get("Content-Type"), Body: string(head)})
	s.mu.Unlock()
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), r.Body), r.Body}
	s.handler.ServeHTTP(w, r)
}

// errAdminOnly answers the machine routes, which render templates: the
// fake serves the admin API only.
var errAdminOnly = errors.New("clienttest: serves the admin API only, no templates")

type adminOnly struct{}

func (adminOnly) FirstStage(render.FirstStageData) ([]byte, error) { return nil, errAdminOnly }
func (adminOnly) Final(render.FinalData) ([]byte, error)           { return nil, errAdminOnly }
