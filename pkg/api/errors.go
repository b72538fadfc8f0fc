package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"mayu/pkg/host"
	"mayu/pkg/machineauth"
	"mayu/pkg/provision"
	"mayu/pkg/store"
)

// errBadRequest marks a malformed request body or parameter.
var errBadRequest = errors.New("bad request")

// errNotServed marks a route that exists but is turned off by a flag.
var errNotServed = errors.New("not served")

// statusOf maps an error to its HTTP status.
func statusOf(err error) int {
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he):
		return he.Code
	case errors.Is(err, errBadRequest), errors.Is(err, provision.ErrInvalid),
		errors.Is(err, host.ErrInvalidSerial), errors.Is(err, host.ErrInvalidState), errors.Is(err, host.ErrInvalidMAC),
		errors.Is(err, host.ErrInvalidText):
		return http.StatusBadRequest
	case errors.Is(err, machineauth.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, store.ErrNotFound), errors.Is(err, errNotServed), errors.Is(err, store.ErrNoHistory):
		return http.StatusNotFound
	case errors.Is(err, host.ErrForbiddenTransition), errors.Is(err, store.ErrExists), errors.Is(err, provision.ErrConflict),
		errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrMACTaken):
		return http.StatusConflict
	case errors.Is(err, provision.ErrTooLarge), errors.Is(err, store.ErrLimit):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, provision.ErrRangeFull), errors.Is(err, store.ErrUnavailable):
		return http.StatusServiceUnavailable
	default: // store.ErrStorage, render.ErrRender and anything unexpected
		return http.StatusInternalServerError
	}
}

// handleError answers every failed request with its status and a one-line
// plain-text reason, and logs it once.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		s.log.Warn("request failed after the answer started", "path", c.Request().URL.Path, "err", err)
		return
	}
	code := statusOf(err)
	reason := err.Error()
	var he *echo.HTTPError
	if errors.As(err, &he) {
		if m, ok := he.Message.(string); ok {
			reason = m
		} else {
			reason = http.StatusText(he.Code)
		}
		if he.Code == http.StatusRequestEntityTooLarge {
			reason = "request body larger than 1 MiB"
		}
	}
	reason = oneLine(reason)
	attrs := append([]any{"method", c.Request().Method, "path", c.Request().URL.Path, "status", code}, requestAttrs(c)...)
	if code >= 500 {
		s.log.Error("request failed", append(attrs, "err", reason)...)
	} else {
		s.log.Info("request refused", append(attrs, "reason", reason)...)
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(code)
		return
	}
	_ = c.Blob(code, textPlain, []byte(reason+"\n"))
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, "\r", "")
	s = strings.ReplaceAll(s, "\n", "; ")
	if len(s) > 500 {
		s = s[:500] + "..."
	}
	return s
}
