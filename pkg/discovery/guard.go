package discovery

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// ErrRefused is what the default WriteGuard answers a write it does not
// allow with.
var ErrRefused = errors.New("discovery: write refused")

// WriteGuard decides who may change the registries served under /etcd.
// Reads (GET, waits included) are never guarded: etcd members and
// operators watch a cluster form. A refusal is answered with the status of
// an *echo.HTTPError the function returns (401, 429, ...), else 403, and a
// one-line reason; it is logged.
type WriteGuard struct {
	// New guards PUT /new, the creation of a token (a file on disk per
	// call): typically a limit per source address. nil allows it.
	New func(r *http.Request) error
	// AuthorizeConfigWrite guards the writes that change a whole cluster:
	// any PUT or DELETE of a token's _config (its size), and DELETE of the
	// token itself. nil allows loopback sources only.
	AuthorizeConfigWrite func(r *http.Request) error
	// Member guards the other writes under a token: members registering
	// (PUT <token>/<id>) or removing themselves. nil allows them.
	Member func(r *http.Request) error
}

// wrapNew applies New to h.
func (g WriteGuard) wrapNew(h echo.HandlerFunc, log *slog.Logger) echo.HandlerFunc {
	if g.New == nil {
		return h
	}
	return func(c echo.Context) error {
		if err := g.New(c.Request()); err != nil {
			return refuse(c, err, log)
		}
		return h(c)
	}
}

// wrapKeys applies AuthorizeConfigWrite and Member to the writes of the
// keys protocol handled by h. A path that does not parse is left to h,
// which answers it with etcd's error.
func (g WriteGuard) wrapKeys(h echo.HandlerFunc, log *slog.Logger) echo.HandlerFunc {
	return func(c echo.Context) error {
		m := c.Request().Method
		if m == http.MethodGet || m == http.MethodHead {
			return h(c)
		}
		_, rel, eerr := parseKeyPath(c)
		if eerr != nil {
			return h(c)
		}
		check := g.Member
		if rel == "" || rel == "_config" || strings.HasPrefix(rel, "_config/") {
			check = g.AuthorizeConfigWrite
			if check == nil {
				check = loopbackOnly
			}
		}
		if check != nil {
			if err := check(c.Request()); err != nil {
				return refuse(c, err, log)
			}
		}
		return h(c)
	}
}

// loopbackOnly allows requests from the host mayu runs on.
func loopbackOnly(r *http.Request) error {
	if ip := net.ParseIP(echo.ExtractIPDirect()(r)); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: a token's _config (its size) is changed, and a token deleted, by an administrator only", ErrRefused)
}

func refuse(c echo.Context, err error, log *slog.Logger) error {
	code := http.StatusForbidden
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code = he.Code
		if msg, ok := he.Message.(string); ok {
			err = errors.New(msg)
		}
	}
	if code == http.StatusUnauthorized {
		// A 401 names the credential it wants (an admin bearer token).
		c.Response().Header().Set("WWW-Authenticate", "Bearer")
	}
	reason := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	log.Warn("etcd discovery write refused", "method", c.Request().Method, "path", c.Request().URL.Path,
		"source", echo.ExtractIPDirect()(c.Request()), "status", code, "reason", reason)
	return c.String(code, reason+"\n")
}
