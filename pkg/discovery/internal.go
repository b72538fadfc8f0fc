package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// InternalConfig configures the discovery service Mayu serves itself.
type InternalConfig struct {
	// Dir holds one file per registry (<cluster-dir>/.discovery).
	Dir string
	// BaseURL is Mayu's own http(s)://host:port; tokens are served at
	// <BaseURL>/etcd/<token>.
	BaseURL string
	// DefaultSize is --etcd-quorum-size, the size of a token created without
	// one; 0 means 3.
	DefaultSize int
	// MaxWait bounds one wait=true request; 0 means DefaultMaxWait. When it
	// passes the answer is an empty 200, on which etcd's client simply asks
	// again. The HTTP server's WriteTimeout must be longer than this.
	MaxWait time.Duration
	// LegacyEtcd is the etcd where Mayu 0.11 kept its registries
	// (LegacyEtcdEndpoint, as host:port or URL). If Dir holds no registry
	// yet, NewInternal imports that etcd's registries once (see
	// importLegacy); "" never looks there.
	LegacyEtcd string
	// Guard decides who may write; see WriteGuard.
	Guard  WriteGuard
	Logger *slog.Logger
}

// DefaultMaxWait is the default bound of one long-polling request.
const DefaultMaxWait = time.Minute

// maxBody bounds a PUT body: a member registration is under 200 bytes.
const maxBody = 64 << 10

// Internal is the default discovery mode: registries kept by Mayu itself.
// It is safe for concurrent use.
type Internal struct {
	dir         string
	base        string
	defaultSize int
	maxWait     time.Duration
	guard       WriteGuard
	log         *slog.Logger

	mu    sync.Mutex
	index uint64 // the store-wide etcd index, as X-Etcd-Index
	regs  map[string]*registry
	// changed[token] is closed (and replaced) on every change of that
	// registry, waking its waiting watches.
	changed map[string]chan struct{}

	// stopping is closed by Shutdown to end every wait.
	stopping chan struct{}
	stopOnce sync.Once
}

var _ interface {
	Service
	Ensurer
} = (*Internal)(nil)

// NewInternal loads the registries in cfg.Dir (creating it), on a first
// start imports those of Mayu 0.11's etcd (cfg.LegacyEtcd), and returns the
// service. A registry file that does not parse is an error (see
// loadRegistries), and so is an import that an answering etcd fails (see
// importLegacy); nothing answering at cfg.LegacyEtcd is not.
func NewInternal(cfg InternalConfig) (*Internal, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("%w: no registry directory", ErrConfig)
	}
	base, err := baseURL("base URL", cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	size, err := defaultSize(cfg.DefaultSize)
	if err != nil {
		return nil, err
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	regs, err := loadRegistries(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if cfg.LegacyEtcd != "" {
		imported, err := importLegacy(cfg.Dir, cfg.LegacyEtcd, len(regs) > 0, cfg.Logger)
		if err != nil {
			return nil, err
		}
		maps.Copy(regs, imported)
	}
	s := &Internal{
		dir:         cfg.Dir,
		base:        base,
		defaultSize: size,
		maxWait:     cfg.MaxWait,
		guard:       cfg.Guard,
		log:         cfg.Logger,
		regs:        regs,
		changed:     make(map[string]chan struct{}, len(regs)),
		stopping:    make(chan struct{}),
	}
	for t, r := range regs {
		s.index = max(s.index, r.Index)
		s.changed[t] = make(chan struct{})
	}
	s.log.Info("etcd discovery registries loaded", "dir", cfg.Dir, "tokens", len(regs), "index", s.index)
	return s, nil
}

// NewToken creates a registry of size members (0: the default) under a new
// random token.
func (s *Internal) NewToken(ctx context.Context, size int) (string, error) {
	return newToken(ctx, size, s.defaultSize, s.createCtx)
}

// Ensure creates the registry token with size members unless it exists.
func (s *Internal) Ensure(ctx context.Context, token string, size int) (bool, error) {
	return ensure(ctx, token, size, s.defaultSize, s.createCtx)
}

func (s *Internal) createCtx(_ context.Context, token string, size int) (bool, error) {
	return s.create(token, size)
}

func (s *Internal) create(token string, size int) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.regs[token]; ok {
		return false, nil
	}
	r := newRegistry(token, size, s.index+1)
	if err := saveRegistry(s.dir, r); err != nil {
		return false, err
	}
	s.index = r.Index
	s.regs[token] = r
	s.changed[token] = make(chan struct{})
	s.log.Info("etcd discovery token created", "token", token, "size", size)
	return true, nil
}

// Shutdown ends every wait=true request at once (members ask again, of
// the restarted daemon), so that a graceful http.Server.Shutdown is not held
// up by members waiting for their peers. Register it with
// http.Server.RegisterOnShutdown. Later waits end at once too.
func (s *Internal) Shutdown() {
	s.stopOnce.Do(func() { close(s.stopping) })
}

// URL is <base>/etcd/<token>.
func (s *Internal) URL(token string) string { return s.base + "/etcd/" + token }

// Check has nothing to reach: the registries were loaded by NewInternal.
func (s *Internal) Check(context.Context) error { return nil }

// Register mounts PUT /new and the keys protocol under /<token>.
func (s *Internal) Register(g *echo.Group) {
	mount(g, newTokenHandler(s, s.defaultSize, s.log), s.handleKeys, s.guard, s.log)
}

// handleKeys is the etcd v2 keys protocol under /etcd/<token>.
func (s *Internal) handleKeys(c echo.Context) error {
	token, rel, eerr := parseKeyPath(c)
	if eerr != nil {
		eerr.Index = s.currentIndex()
		return writeError(c, eerr)
	}
	req := c.Request()
	switch req.Method {
	case http.MethodGet:
		if req.URL.Query().Get("wait") == "true" {
			return s.handleWait(c, token, rel)
		}
		return s.handleGet(c, token, rel)
	case http.MethodPut:
		return s.handlePut(c, token, rel)
	default:
		return s.handleDelete(c, token, rel)
	}
}

var segmentRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

// parseKeyPath turns /etcd/<token>/<key> into the token and the key
// relative to the token directory. Keys become JSON and upstream URLs, not
// file paths, but are still held to a narrow alphabet so that nothing odd
// is stored, echoed back or forwarded. The error's Index is left to the
// caller.
func parseKeyPath(c echo.Context) (string, string, *Error) {
	token, err := url.PathUnescape(c.Param("token"))
	if err != nil || !ValidToken(token) {
		return "", "", newError(codeKeyNotFound, RegistryPrefix+"/"+c.Param("token"), 0)
	}
	rest, err := url.PathUnescape(c.Param("*"))
	if err != nil {
		return "", "", newError(codeInvalidField, "invalid key", 0)
	}
	// etcd cleans keys the same way: "a//b/" is "a/b".
	var segs []string
	for seg := range strings.SplitSeq(rest, "/") {
		if seg != "" {
			segs = append(segs, seg)
		}
	}
	rel := strings.Join(segs, "/")
	if err := validKey(rel); err != nil {
		return "", "", newError(codeInvalidField, err.Error(), 0)
	}
	return token, rel, nil
}

func validKey(rel string) error {
	if rel == "" {
		return nil
	}
	for seg := range strings.SplitSeq(rel, "/") {
		if !segmentRe.MatchString(seg) || seg == "." || seg == ".." {
			return fmt.Errorf("invalid key %q", rel)
		}
	}
	return nil
}

func (s *Internal) currentIndex() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.index
}

func (s *Internal) handleGet(c echo.Context, token, rel string) error {
	recursive := c.QueryParam("recursive") == "true"
	s.mu.Lock()
	idx := s.index
	r, ok := s.regs[token]
	var n *Node
	var eerr *Error
	if !ok {
		eerr = newError(codeKeyNotFound, RegistryPrefix+"/"+token, idx)
	} else if n, eerr = r.get(rel, recursive); eerr != nil {
		eerr.Index = idx
	}
	s.mu.Unlock()
	if eerr != nil {
		return writeError(c, eerr)
	}
	return writeJSON(c, http.StatusOK, idx, Response{Action: "get", Node: n})
}

func (s *Internal) handlePut(c echo.Context, token, rel string) error {
	req := c.Request()
	req.Body = http.MaxBytesReader(c.Response(), req.Body, maxBody)
	if err := req.ParseForm(); err != nil {
		return writeError(c, newError(codeInvalidField, "invalid form: "+err.Error(), s.currentIndex()))
	}
	cond, eerr := s.parseCondition(req.Form)
	if eerr != nil {
		return writeError(c, eerr)
	}
	for _, f := range []string{"ttl", "dir", "refresh"} {
		if req.Form.Get(f) != "" {
			return writeError(c, newError(codeInvalidField, f+" is not supported by this discovery service", s.currentIndex()))
		}
	}
	value := req.Form.Get("value")
	var status int
	resp, idx, eerr := s.mutate(token, func(r *registry, next uint64) (Response, *Error) {
		var resp Response
		var e *Error
		resp, status, e = r.set(rel, value, cond, next)
		return resp, e
	})
	if eerr != nil {
		return writeError(c, eerr)
	}
	s.log.Info("etcd discovery key set", "token", token, "key", rel, "action", resp.Action, "index", idx)
	return writeJSON(c, status, idx, resp)
}

func (s *Internal) handleDelete(c echo.Context, token, rel string) error {
	cond, eerr := s.parseCondition(c.Request().URL.Query())
	if eerr != nil {
		return writeError(c, eerr)
	}
	resp, idx, eerr := s.mutate(token, func(r *registry, next uint64) (Response, *Error) {
		return r.del(rel, cond, next)
	})
	if eerr != nil {
		return writeError(c, eerr)
	}
	s.log.Info("etcd discovery key deleted", "token", token, "key", rel, "index", idx)
	return writeJSON(c, http.StatusOK, idx, resp)
}

func (s *Internal) parseCondition(v url.Values) (condition, *Error) {
	cond := condition{prevExist: v.Get("prevExist"), prevValue: v.Get("prevValue"), hasPrevValue: v.Has("prevValue")}
	if cond.prevExist != "" && cond.prevExist != "true" && cond.prevExist != "false" {
		return cond, newError(codeInvalidField, `invalid value for "prevExist"`, s.currentIndex())
	}
	if pi := v.Get("prevIndex"); pi != "" {
		n, err := strconv.ParseUint(pi, 10, 64)
		if err != nil {
			return cond, newError(codeIndexNaN, `invalid value for "prevIndex"`, s.currentIndex())
		}
		cond.prevIndex = n
	}
	return cond, nil
}

// mutate applies f to a clone of token's registry at the next index,
// persists the clone and swaps it in. Nothing changes if f or the write
// fails.
func (s *Internal) mutate(token string, f func(r *registry, next uint64) (Response, *Error)) (Response, uint64, *Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.regs[token]
	if !ok {
		return Response{}, 0, newError(codeKeyNotFound, RegistryPrefix+"/"+token, s.index)
	}
	next := r.clone()
	idx := s.index + 1
	resp, eerr := f(next, idx)
	if eerr != nil {
		eerr.Index = s.index
		return Response{}, 0, eerr
	}
	next.Index = idx
	if err := saveRegistry(s.dir, next); err != nil {
		s.log.Error("persisting etcd discovery registry", "token", token, "err", err)
		return Response{}, 0, newError(codeRaftInternal, ErrStorage.Error(), s.index)
	}
	s.regs[token] = next
	s.index = idx
	close(s.changed[token])
	s.changed[token] = make(chan struct{})
	return resp, idx, nil
}

// handleWait answers GET ...?wait=true[&waitIndex=N][&recursive=true]: the
// first change at or after N, waiting for it if it has not happened yet.
// Like etcd, a wait that must block answers its headers at once; if it then
// ends without an event (MaxWait, Mayu stopping) the body stays empty,
// which etcd's client takes as "ask again".
func (s *Internal) handleWait(c echo.Context, token, rel string) error {
	recursive := c.QueryParam("recursive") == "true"
	var waitIndex uint64
	if wi := c.QueryParam("waitIndex"); wi != "" {
		n, err := strconv.ParseUint(wi, 10, 64)
		if err != nil {
			return writeError(c, newError(codeIndexNaN, `invalid value for "waitIndex"`, s.currentIndex()))
		}
		waitIndex = n
	}

	s.mu.Lock()
	idx := s.index
	r, ok := s.regs[token]
	if !ok {
		s.mu.Unlock()
		return writeError(c, newError(codeKeyNotFound, RegistryPrefix+"/"+token, idx))
	}
	if waitIndex == 0 {
		waitIndex = idx + 1 // etcd: no index means "from now on"
	}
	ev, eerr := r.watch(rel, recursive, waitIndex)
	changed := s.changed[token]
	s.mu.Unlock()
	if eerr != nil {
		eerr.Index = idx
		return writeError(c, eerr)
	}
	if ev != nil {
		return writeJSON(c, http.StatusOK, idx, ev.Response)
	}

	w := c.Response()
	w.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	w.Header().Set("X-Etcd-Index", strconv.FormatUint(idx, 10))
	w.WriteHeader(http.StatusOK)
	w.Flush()

	ctx := c.Request().Context()
	timer := time.NewTimer(s.maxWait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return nil
		case <-timer.C:
			return nil
		case <-changed:
		}
		s.mu.Lock()
		ev, eerr = s.regs[token].watch(rel, recursive, waitIndex)
		changed = s.changed[token]
		s.mu.Unlock()
		if eerr != nil {
			// The status is already sent; an empty body makes the client
			// ask again, and that request gets the error properly.
			s.log.Warn("etcd discovery watch overtaken by history", "token", token, "key", rel, "waitIndex", waitIndex)
			return nil
		}
		if ev != nil {
			err := json.NewEncoder(w).Encode(ev.Response)
			if err != nil && !errors.Is(err, context.Canceled) {
				s.log.Debug("etcd discovery watch answer not delivered", "token", token, "err", err)
			}
			return nil
		}
	}
}
