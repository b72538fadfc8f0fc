// Package discovery serves the etcd discovery protocol that etcd's
// --discovery flag speaks, so that the machines Mayu provisions can bootstrap
// their etcd cluster without any other service.
//
// Three modes implement Service:
//
//   - Internal (the default) keeps one registry per token in memory, persists
//     each to its own file (temp + fsync + rename) and answers the etcd v2
//     keys wire format under /etcd/<token>. On a first start it imports the
//     registries Mayu 0.11 left in its default etcd, once (legacy.go).
//   - External asks a separate discovery service (PUT <url>/new) for tokens;
//     machines talk to that service directly, Mayu serves nothing.
//   - Proxy stores tokens in an etcd's v2 keys API under /_etcd/registry and
//     forwards /etcd/<token>/... there, as Mayu 0.11 did.
//
// The wire format was taken from etcd 3.4's v2discovery client and checked
// against a real etcd 3.4 serving --enable-v2: member keys are created with
// PUT ...?prevExist=false, the member list is a GET of the token directory
// (hidden "_config" left out), the first `size` members by createdIndex form
// the cluster, and waiting is a GET with wait=true&waitIndex=N.
package discovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// Errors callers branch on with errors.Is.
var (
	// ErrBadSize: the requested cluster size is not a number in 1..MaxSize.
	ErrBadSize = errors.New("discovery: bad cluster size")
	// ErrBadToken: a token (or discovery URL) that cannot name a registry.
	ErrBadToken = errors.New("discovery: bad token")
	// ErrConfig: a constructor was given a configuration it cannot work with.
	ErrConfig = errors.New("discovery: bad configuration")
	// ErrUnavailable: the external discovery service or the proxied etcd
	// cannot be reached or does not answer as expected.
	ErrUnavailable = errors.New("discovery: service unavailable")
	// ErrStorage: a registry could not be persisted; the change did not happen.
	ErrStorage = errors.New("discovery: storage failure")
)

// MaxSize bounds the size of a discovery token: etcd clusters have a handful
// of members, so anything above this is a typo, not a plan.
const MaxSize = 99

// RegistryPrefix is where etcd (and discovery.etcd.io before us) keeps the
// registries; keys in our answers carry it so that they read exactly like a
// real etcd's.
const RegistryPrefix = "/_etcd/registry"

// Service is one discovery mode. The daemon creates one at start and mounts
// Register on the /etcd group.
type Service interface {
	// NewToken creates a registry for a cluster of size members (0 means the
	// configured default) and returns its token.
	NewToken(ctx context.Context, size int) (string, error)
	// URL is the discovery URL a machine's etcd gets for token.
	URL(token string) string
	// Register adds the mode's routes to g, the group mounted at /etcd.
	Register(g *echo.Group)
	// Check verifies at start that the mode can work (the external service
	// or proxied etcd answers), so that a bad setting stops the daemon with
	// one clear message instead of failing the first machine.
	Check(ctx context.Context) error
}

// Ensurer is implemented by the modes that hold registries themselves
// (Internal and Proxy). The daemon uses it for a cluster.json whose default
// token was created elsewhere (a converted EtcdDiscoveryURL, a cluster
// directory moved from a Mayu that used a separate etcd): the registry is
// created with that token if it does not exist yet.
type Ensurer interface {
	Ensure(ctx context.Context, token string, size int) (created bool, err error)
}

var tokenRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)

// ValidToken reports whether s can be a token. Tokens become file names and
// URL path elements, so the alphabet is narrow; Mayu's own are 32 hex
// characters, discovery.etcd.io's too.
func ValidToken(s string) bool { return tokenRe.MatchString(s) }

// TokenFromURL returns the token of a discovery URL: its last path element.
// It converts cluster.json's deprecated EtcdDiscoveryURL and reads the answer
// of an external service's /new.
func TokenFromURL(u string) (string, error) {
	parsed, err := url.Parse(strings.TrimSpace(u))
	if err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrBadToken, u, err)
	}
	p := strings.TrimRight(parsed.Path, "/")
	token := p[strings.LastIndexByte(p, '/')+1:]
	if !ValidToken(token) {
		return "", fmt.Errorf("%w: no token in discovery URL %q", ErrBadToken, u)
	}
	return token, nil
}

// newTokenID returns 32 hex characters of crypto randomness, the form
// discovery.etcd.io uses.
func newTokenID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("discovery: reading random token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// ParseSize parses the size form value of PUT /etcd/new; "" means def.
func ParseSize(s string, def int) (int, error) {
	if s == "" {
		return checkSize(def)
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%w: %q is not a number", ErrBadSize, s)
	}
	return checkSize(n)
}

func checkSize(n int) (int, error) {
	if n < 1 || n > MaxSize {
		return 0, fmt.Errorf("%w: %d is not in 1..%d", ErrBadSize, n, MaxSize)
	}
	return n, nil
}

// defaultSize applies the spec's default (--etcd-quorum-size 3) to a zero
// DefaultSize and validates the rest.
func defaultSize(n int) (int, error) {
	if n == 0 {
		n = 3
	}
	if _, err := checkSize(n); err != nil {
		return 0, fmt.Errorf("%w: default size: %w", ErrConfig, err)
	}
	return n, nil
}

// baseURL checks an http(s) base URL and drops its trailing slash so that
// "<base>/etcd/<token>" never has a double slash.
func baseURL(name, s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%w: %s %q is not an http(s) URL", ErrConfig, name, s)
	}
	return strings.TrimRight(s, "/"), nil
}

// mount adds the routes of a mode that serves the protocol: PUT /new and the
// keys protocol under /<token>, their writes guarded by guard.
func mount(g *echo.Group, handleNew, handleKeys echo.HandlerFunc, guard WriteGuard, log *slog.Logger) {
	handleNew, handleKeys = guard.wrapNew(handleNew, log), guard.wrapKeys(handleKeys, log)
	g.PUT("/new", handleNew)
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		g.Add(m, "/:token", handleKeys)
		g.Add(m, "/:token/*", handleKeys)
	}
}

// newTokenHandler answers PUT /etcd/new (form value size) with the new
// token's discovery URL, as text, like discovery.etcd.io. A service that
// cannot reach its backing store answers 503.
func newTokenHandler(svc Service, defSize int, log *slog.Logger) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Request().Body = http.MaxBytesReader(c.Response(), c.Request().Body, maxBody)
		size, err := ParseSize(c.FormValue("size"), defSize)
		if err != nil {
			return c.String(http.StatusBadRequest, err.Error())
		}
		token, err := svc.NewToken(c.Request().Context(), size)
		if err != nil {
			log.Error("creating etcd discovery token", "err", err)
			status := http.StatusInternalServerError
			if errors.Is(err, ErrUnavailable) {
				status = http.StatusServiceUnavailable
			}
			return c.String(status, err.Error())
		}
		return c.String(http.StatusOK, svc.URL(token))
	}
}

// createFunc creates the registry token of size members, reporting false if
// it already existed.
type createFunc func(ctx context.Context, token string, size int) (bool, error)

// newToken creates a registry under a fresh random token (size 0: def).
func newToken(ctx context.Context, size, def int, create createFunc) (string, error) {
	if size == 0 {
		size = def
	}
	if _, err := checkSize(size); err != nil {
		return "", err
	}
	for {
		token, err := newTokenID()
		if err != nil {
			return "", err
		}
		created, err := create(ctx, token, size)
		if err != nil {
			return "", err
		}
		if created { // a collision of 128 random bits will not happen, but costs nothing to rule out
			return token, nil
		}
	}
}

// ensure creates the registry token unless it exists (size 0: def).
func ensure(ctx context.Context, token string, size, def int, create createFunc) (bool, error) {
	if !ValidToken(token) {
		return false, fmt.Errorf("%w: %q", ErrBadToken, token)
	}
	if size == 0 {
		size = def
	}
	if _, err := checkSize(size); err != nil {
		return false, err
	}
	return create(ctx, token, size)
}
