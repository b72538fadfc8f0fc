package api

import (
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The page is self-contained: one inline script and one inline style,
// admitted by the policy by their hashes; nothing it names is loaded from
// anywhere else, and its script never parses HTML.
func TestDashboardIsSelfContained(t *testing.T) {
	e := newEnv(t)
	rec := e.do("GET", "/index.html", "", "Authorization", "")
	require.Equal(t, 200, rec.Code, "the page itself needs no credential: it asks for the token")
	page := rec.Body.String()
	assert.Equal(t, "text/html; charset=utf-8", rec.Header().Get("Content-Type"))
	assert.Equal(t, "nosniff", rec.Header().Get("X-Content-Type-Options"))

	only := func(re string) string {
		m := regexp.MustCompile(re).FindAllStringSubmatch(page, -1)
		require.Len(t, m, 1, re)
		return m[0][1]
	}
	script := only(`(?s)<script>(.*?)</script>`)
	style := only(`(?s)<style>(.*?)</style>`)
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	meta := only(`<meta http-equiv="Content-Security-Policy" content="([^"]*)">`)
	header := rec.Header().Get("Content-Security-Policy")
	for _, csp := range []string{meta, header} {
		assert.True(t, strings.HasPrefix(csp, "default-src 'none';"), csp)
		assert.Contains(t, csp, "script-src "+hash(script)+";")
		assert.Contains(t, csp, "style-src "+hash(style))
		assert.Contains(t, csp, "connect-src 'self';")
		assert.Contains(t, csp, "form-action 'none'")
		assert.NotContains(t, csp, "unsafe")
	}
	assert.Contains(t, header, "frame-ancestors 'none'")

	for what, re := range map[string]string{
		"an external script":       `<script[^>]*\bsrc=`,
		"a linked resource":        `<link\b`,
		"an image or frame":        `<(img|iframe|object|embed)\b`,
		"a style import or url()":  `@import|url\(`,
		"an absolute URL":          `(?i)https?://|//[a-z0-9]`,
		"HTML parsing from script": `innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function`,
		"a named form field":       `<input[^>]*\bname=`,
		"an inline event handler":  `<[^>]+\son[a-z]+=`,
	} {
		assert.NotRegexp(t, re, page, "the page holds %s", what)
	}
	// Every admin route the script calls is one the server has.
	for _, path := range []string{"/admin/hosts", "/admin/pool"} {
		assert.Contains(t, script, `"`+path+`"`)
		assert.Equal(t, 200, e.do("GET", path, "").Code, path)
	}
}

// /index.html is the built-in dashboard, and /dashboard.html always is;
// with --static-index (Config.StaticIndex) /index.html comes from the
// static directory as in Mayu 0.11, an operator's own page.
func TestDashboardStaticIndexSwitch(t *testing.T) {
	for _, tt := range []struct {
		static bool
		path   string
		page   string
	}{
		{false, "/index.html", "dashboard"},
		{false, "/dashboard.html", "dashboard"},
		{true, "/index.html", "static"},
		{true, "/dashboard.html", "dashboard"},
	} {
		e := newEnv(t, func(c *envConfig) { c.api.StaticIndex = tt.static })
		rec := e.do("GET", tt.path, "", "Authorization", "")
		require.Equal(t, 200, rec.Code, "%s static=%v", tt.path, tt.static)
		if tt.page == "static" {
			assert.Equal(t, "<html>dashboard</html>", rec.Body.String(), "%s static=%v: the operator's file", tt.path, tt.static)
		} else {
			assert.Equal(t, string(dashboardPage), rec.Body.String(), "%s static=%v: the built-in page", tt.path, tt.static)
		}
	}
}
