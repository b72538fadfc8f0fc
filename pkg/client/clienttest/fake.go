// Package clienttest is a small fake of mayu's admin API for tests of the
// client and of mayuctl: the admin routes of the spec (section 8) on top of
// a store.Store, with the real audit messages, 202 on success and the
// one-line plain-text reasons with 400/404/409/413 on failure. It is
// deliberately independent of the daemon's own handlers, so a test against
// it checks the client against the spec rather than against itself.
package clienttest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"mayu/pkg/host"
	"mayu/pkg/store"
)

// maxBody is the request size the fake accepts before answering 413.
const maxBody = 1 << 20

// Server is the fake. It records the requests it served, so tests can check
// the exact JSON a client sent.
type Server struct {
	store store.Store
	now   func() time.Time

	mu       sync.Mutex
	requests []Request
}

// Request is one request the fake received.
type Request struct {
	Method, Path, ContentType string
	Body                      string
}

// New returns a fake serving st. now stamps LastBoot at boot_complete; nil
// means time.Now.
func New(st store.Store, now func() time.Time) *Server {
	if now == nil {
		now = time.Now
	}
	return &Server{store: st, now: now}
}

// Requests returns the requests served so far, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		fail(w, http.StatusBadRequest, "cannot read request body")
		return
	}
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path,
		ContentType: r.Header.Get("Content-Type"), Body: string(body)})
	s.mu.Unlock()
	if len(body) > maxBody {
		fail(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}

	if r.URL.Path == "/admin/hosts" {
		if r.Method != http.MethodGet {
			fail(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_ = json.NewEncoder(w).Encode(s.store.List())
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/admin/host/"), "/")
	if !strings.HasPrefix(r.URL.Path, "/admin/host/") || len(parts) != 2 {
		fail(w, http.StatusNotFound, "no such route")
		return
	}
	if r.Method != http.MethodPut {
		fail(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	serial, err := host.NormalizeSerial(parts[0])
	if err != nil {
		fail(w, http.StatusBadRequest, err.Error())
		return
	}
	step, status, err := s.step(parts[1], body)
	if err != nil {
		fail(w, status, err.Error())
		return
	}
	if _, err := s.store.Update(serial, step); err != nil {
		switch {
		case errors.Is(err, store.ErrNotFound):
			fail(w, http.StatusNotFound, fmt.Sprintf("host %s not found", serial))
		case errors.Is(err, host.ErrForbiddenTransition):
			fail(w, http.StatusConflict, err.Error())
		case errors.Is(err, errInvalid):
			fail(w, http.StatusBadRequest, err.Error())
		default:
			fail(w, http.StatusInternalServerError, err.Error())
		}
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

var errInvalid = errors.New("invalid value")

// step decodes the body of an action into the audited change it asks for.
func (s *Server) step(action string, body []byte) (store.Step, int, error) {
	// Decode into a host record, as Mayu 0.11 does, so the full-record
	// bodies its mayuctl sends are understood too.
	var in host.Host
	if len(body) > 0 {
		if err := json.Unmarshal(body, &in); err != nil {
			return store.Step{}, http.StatusBadRequest, fmt.Errorf("malformed JSON body: %v", err)
		}
	}
	switch action {
	case "set_metadata":
		return store.Step{Message: "updated host metadata", Apply: func(h *host.Host) error {
			h.FleetMetadata = in.FleetMetadata
			return nil
		}}, 0, nil
	case "set_provider_id":
		return store.Step{Message: "updated host provider id", Apply: func(h *host.Host) error {
			h.ProviderId = in.ProviderId
			return nil
		}}, 0, nil
	case "set_ipmi_addr":
		if in.IPMIAddr == nil {
			return store.Step{}, http.StatusBadRequest, errors.New("IPMIAddr missing or not an IP address")
		}
		return store.Step{Message: "updated host ipmi address", Apply: func(h *host.Host) error {
			h.IPMIAddr = in.IPMIAddr
			return nil
		}}, 0, nil
	case "set_cabinet":
		return store.Step{Message: "updated host cabinet", Apply: func(h *host.Host) error {
			h.Cabinet = in.Cabinet
			return nil
		}}, 0, nil
	case "set_state":
		if !strings.Contains(string(body), `"State"`) {
			return store.Step{}, http.StatusBadRequest, errors.New("State missing")
		}
		return store.Step{Message: "updated host state", Apply: func(h *host.Host) error {
			if err := h.State.CanTransition(in.State); err != nil {
				return err
			}
			h.State = in.State
			if in.State == host.Configured {
				h.KeepDiskData = true
			}
			return nil
		}}, 0, nil
	case "set_etcd_cluster_token":
		return store.Step{Message: "updated host etcd cluster token", Apply: func(h *host.Host) error {
			h.EtcdClusterToken = in.EtcdClusterToken
			return nil
		}}, 0, nil
	case "override":
		if len(in.Overrides) == 0 {
			return store.Step{}, http.StatusBadRequest, errors.New("Overrides missing or empty")
		}
		keys := make([]string, 0, len(in.Overrides))
		for k := range in.Overrides {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return store.Step{Message: "updated host overrides: " + strings.Join(keys, ", "), Apply: func(h *host.Host) error {
			if h.Overrides == nil {
				h.Overrides = map[string]any{}
			}
			for k, v := range in.Overrides {
				h.Overrides[k] = v
			}
			return nil
		}}, 0, nil
	case "mark_fresh":
		return store.Step{Message: "host flagged as fresh", Apply: func(h *host.Host) error {
			h.State = host.Configured
			h.KeepDiskData = false
			return nil
		}}, 0, nil
	case "set_installed":
		return store.Step{Message: "updated state to installed", Apply: func(h *host.Host) error {
			if err := h.State.CanTransition(host.Installed); err != nil {
				return err
			}
			h.State = host.Installed
			return nil
		}}, 0, nil
	case "boot_complete":
		now := s.now()
		v := in
		return store.Step{Message: "updated state to running", Apply: func(h *host.Host) error {
			if err := h.State.CanTransition(host.Running); err != nil {
				return err
			}
			h.State = host.Running
			h.LastBoot = now
			h.CoreOSVersion, h.MayuVersion, h.DockerVersion, h.FleetVersion = v.CoreOSVersion, v.MayuVersion, v.DockerVersion, v.FleetVersion
			h.EtcdVersion, h.RktVersion, h.K8sVersion, h.YochuVersion = v.EtcdVersion, v.RktVersion, v.K8sVersion, v.YochuVersion
			return nil
		}}, 0, nil
	default:
		return store.Step{}, http.StatusNotFound, fmt.Errorf("unknown action %q", action)
	}
}

func fail(w http.ResponseWriter, status int, reason string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, reason+"\n")
}
