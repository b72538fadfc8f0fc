package api

import (
	"bytes"
	"crypto/sha256"
	_ "embed" // the dashboard page
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// dashboardSource is the operator's dashboard, served at /index.html: one
// self-contained page (its script and style inline, nothing loaded from
// anywhere but mayu's own admin routes), built into the binary.
//
//go:embed dashboard/index.html
var dashboardSource string

// dashboardPage is dashboardSource with its Content-Security-Policy filled
// in; dashboardCSP is that policy, also sent as a header.
var dashboardPage, dashboardCSP = buildDashboard(dashboardSource)

// cspPlaceholder is where the page's meta tag takes the policy.
const cspPlaceholder = "CSP-PLACEHOLDER"

// buildDashboard computes the page's Content-Security-Policy: nothing by
// default, connections to its own origin only, and only its own inline
// script and style, admitted by their SHA-256 (CSP level 2 hash sources),
// so a value a machine reported can never run as script even if it
// reached the page as markup. It panics if the embedded page lacks its
// one script, one style or the placeholder: a build-time bug.
func buildDashboard(src string) ([]byte, string) {
	one := func(open, close string) string {
		if strings.Count(src, open) != 1 {
			panic(fmt.Sprintf("api: dashboard page must hold exactly one %s", open))
		}
		_, rest, _ := strings.Cut(src, open)
		body, _, ok := strings.Cut(rest, close)
		if !ok {
			panic(fmt.Sprintf("api: dashboard page: %s without %s", open, close))
		}
		return body
	}
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	csp := "default-src 'none'; connect-src 'self'; img-src 'self'; form-action 'none'; base-uri 'none'; " +
		"script-src " + hash(one("<script>", "</script>")) + "; style-src " + hash(one("<style>", "</style>"))
	if strings.Count(src, cspPlaceholder) != 1 {
		panic("api: dashboard page must hold the CSP placeholder once")
	}
	return []byte(strings.Replace(src, cspPlaceholder, csp, 1)), csp
}

// dashboard answers the page. The policy also goes out as a header, with
// frame-ancestors (which a meta tag cannot carry): no other site may frame
// the page to trick the operator into clicking its buttons.
func (s *Server) dashboard(c echo.Context) error {
	h := c.Response().Header()
	h.Set("Content-Security-Policy", dashboardCSP+"; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Type", "text/html; charset=utf-8")
	// ServeContent answers HEAD and Range and sets Content-Length, as the
	// file routes do.
	http.ServeContent(c.Response(), c.Request(), "index.html", time.Time{}, bytes.NewReader(dashboardPage))
	return nil
}
