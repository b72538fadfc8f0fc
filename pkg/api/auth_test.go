package api

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/auth"
	"mayu/pkg/host"
)

// testTokens is a token file with one admin and one read-only credential.
type testTokens struct {
	set             *auth.Tokens
	admin, readOnly string
}

func newTestTokens(t testing.TB) testTokens {
	t.Helper()
	tt := testTokens{admin: strings.Repeat("a", 40), readOnly: strings.Repeat("r", 40)}
	p := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(p, []byte("alice admin "+tt.admin+"\nbob read-only "+tt.readOnly+"\n"), 0o600))
	var err error
	tt.set, err = auth.Load(p)
	require.NoError(t, err)
	return tt
}

// TestAdminRoutesNeedACredential: without a token (or with one nobody
// has) the records, with their tokens and IPMI addresses, are not listed
// and no operator change is made; a read-only credential reads only.
func TestAdminRoutesNeedACredential(t *testing.T) {
	e := newEnv(t)
	registerM1(e)
	before, trail := e.host("m1"), e.mem.Messages()
	admin := []struct{ method, path, body string }{
		{"GET", "/admin/hosts", ""},
		{"PUT", "/admin/host/m1/set_state", `{"State":"configured"}`},
		{"PUT", "/admin/host/m1/mark_fresh", `{}`},
		{"PUT", "/admin/host/m1/override", `{"Overrides":{"ssh_authorized_keys":"x"}}`},
		{"PUT", "/admin/host/m1/set_metadata", `{"FleetMetadata":["a=b"]}`},
		{"PUT", "/admin/host/m1/set_provider_id", `{"ProviderId":"p"}`},
		{"PUT", "/admin/host/m1/set_ipmi_addr", `{"IPMIAddr":"10.0.0.1"}`},
		{"PUT", "/admin/host/m1/set_cabinet", `{"Cabinet":1}`},
		{"PUT", "/admin/host/m1/set_etcd_cluster_token", `{"EtcdClusterToken":"t"}`},
		{"PUT", "/admin/host/m1/set_mac_addresses", `{"MacAddresses":[]}`},
	}
	for _, r := range admin {
		for _, authz := range []string{"", "Bearer " + strings.Repeat("x", 40), "Basic YWRtaW46YWRtaW4=", "Bearer"} {
			rec := e.do(r.method, r.path, r.body, "Authorization", authz, "Content-Type", "application/json")
			assert.Equal(t, http.StatusUnauthorized, rec.Code, "%s %s with %q: %s", r.method, r.path, authz, rec.Body)
			assert.Equal(t, `Bearer realm="mayu admin"`, rec.Header().Get("WWW-Authenticate"))
			assert.NotContains(t, rec.Body.String(), "m1", "a refused list names no host")
		}
		if r.method == "PUT" {
			rec := e.do(r.method, r.path, r.body, "Authorization", "Bearer "+e.tokens.readOnly, "Content-Type", "application/json")
			assert.Equal(t, http.StatusForbidden, rec.Code, "read-only %s: %s", r.path, rec.Body)
			assert.Contains(t, rec.Body.String(), "read-only:bob may only read")
		}
	}
	assert.Equal(t, before, e.host("m1"), "no refused request changed the record")
	assert.Equal(t, trail, e.mem.Messages(), "nothing was committed")

	rec := e.do("GET", "/admin/hosts", "", "Authorization", "Bearer "+e.tokens.readOnly)
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Contains(t, rec.Body.String(), `"Serial":"m1"`)
	rec = e.do("GET", "/admin/hosts", "", "Authorization", "bearer "+e.tokens.admin)
	assert.Equal(t, http.StatusOK, rec.Code, "the scheme is case-insensitive")
}

// TestMachineRoutesNeedNoCredential: what 0.11's templates call while
// installing keeps working without a token.
func TestMachineRoutesNeedNoCredential(t *testing.T) {
	e := newEnv(t)
	noAuth := []string{"Authorization", ""}
	const serial = "0800278e158a-0" // facts' serial
	require.Equal(t, 200, e.do("GET", "/first-stage-script/"+serial, "", noAuth...).Code)
	rec := e.do("POST", "/final-cloud-config.yaml", facts, append(noAuth, "Content-Type", "application/json")...)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	// 0.11's first-stage script: curl -X PUT, no body, no content type.
	require.Equal(t, 202, e.do("PUT", "/admin/host/"+serial+"/set_installed", "", noAuth...).Code)
	require.Equal(t, 202, e.do("PUT", "/admin/host/"+serial+"/boot_complete", `{"CoreOSVersion":"1068.6.0"}`, noAuth...).Code)
	assert.Equal(t, host.Running, e.host(serial).State)
}

// TestAdminWritesNeedJSON: the body of a cross-site form is text/plain,
// form-urlencoded or multipart; none of them is an admin change.
func TestAdminWritesNeedJSON(t *testing.T) {
	e := newEnv(t)
	registerM1(e)
	before := e.host("m1")
	for _, ct := range []string{"", "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx"} {
		rec := e.do("PUT", "/admin/host/m1/set_state", `{"State":"configured"}`, "Content-Type", ct)
		assert.Equal(t, http.StatusUnsupportedMediaType, rec.Code, "%q: %s", ct, rec.Body)
	}
	assert.Equal(t, before, e.host("m1"))
	rec := e.do("PUT", "/admin/host/m1/set_provider_id", `{"ProviderId":"p"}`, "Content-Type", "application/json; charset=utf-8")
	assert.Equal(t, http.StatusAccepted, rec.Code, rec.Body.String())
}

// TestCrossOriginRefused: a page of another origin gets nothing done, on
// any route; the dashboard's own requests (same origin) pass.
func TestCrossOriginRefused(t *testing.T) {
	e := newEnv(t)
	registerM1(e)
	for _, origin := range []string{"http://evil.example", "null", "http://192.168.2.2:9999", "https://192.168.2.2.evil.example:4080"} {
		rec := e.do("POST", "/final-cloud-config.yaml", facts, "Origin", origin, "Content-Type", "text/plain")
		assert.Equal(t, http.StatusForbidden, rec.Code, "%s: %s", origin, rec.Body)
		rec = e.do("PUT", "/admin/host/m1/set_state", `{"State":"configured"}`, "Origin", origin, "Content-Type", "application/json")
		assert.Equal(t, http.StatusForbidden, rec.Code, origin)
		rec = e.do("GET", "/admin/hosts", "", "Origin", origin)
		assert.Equal(t, http.StatusForbidden, rec.Code, origin)
	}
	assert.Equal(t, host.Configured, e.host("m1").State)
	assert.Equal(t, http.StatusOK, e.do("GET", "/admin/hosts", "", "Origin", "http://192.168.2.2:4080").Code)
}

// TestForeignHostRefused: a name that only an attacker's DNS points at
// mayu (rebinding) is not served; mayu's own names and addresses are.
func TestForeignHostRefused(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.api.Access.Hosts = []string{"Mayu.Example.NET"} })
	for _, h := range []string{"evil.example", "evil.example:4080", "192.168.2.2.nip.example", "10.255.255.254:4080"} {
		rec := e.do("GET", "/admin/hosts", "", "Host", h)
		assert.Equal(t, http.StatusMisdirectedRequest, rec.Code, "%s: %s", h, rec.Body)
		assert.Equal(t, http.StatusMisdirectedRequest, e.do("GET", "/first-stage-script/x", "", "Host", h).Code, h)
	}
	for _, h := range []string{"192.168.2.2:4080", "192.168.2.2", "localhost:4080", "LOCALHOST", "127.0.0.1:4080", "[::1]:4080", "127.1.2.3", "mayu.example.net:4080", "mayu.example.net.", ""} {
		assert.Equal(t, http.StatusOK, e.do("GET", "/admin/hosts", "", "Host", h).Code, h)
	}
}

// TestForwardedForTrustedOnlyFromProxies: the access log, the refusals and
// the audit trail name the peer, unless the peer is a configured proxy.
func TestForwardedForTrustedOnlyFromProxies(t *testing.T) {
	_, proxies, err := net.ParseCIDR("192.0.2.0/24")
	require.NoError(t, err)
	for _, tt := range []struct {
		name    string
		proxies []*net.IPNet
		peer    string
		want    string
	}{
		{"no proxy configured", nil, "192.0.2.7:5000", "192.0.2.7"},
		{"peer is not a proxy", []*net.IPNet{proxies}, "198.51.100.3:5000", "198.51.100.3"},
		{"loopback is not trusted by default", []*net.IPNet{proxies}, "127.0.0.1:5000", "127.0.0.1"},
		{"trusted proxy", []*net.IPNet{proxies}, "192.0.2.7:5000", "203.0.113.9"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			e := newEnv(t, func(c *envConfig) {
				c.api.Access.TrustedProxies = tt.proxies
				c.api.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			})
			registerM1(e)
			req := httptest.NewRequest("PUT", "/admin/host/m1/set_provider_id", strings.NewReader(`{"ProviderId":"p"}`))
			req.Host, req.RemoteAddr = "192.168.2.2:4080", tt.peer
			req.Header.Set("Authorization", "Bearer "+e.tokens.admin)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Forwarded-For", "203.0.113.9")
			rec := httptest.NewRecorder()
			e.srv.Handler().ServeHTTP(rec, req)
			require.Equal(t, http.StatusAccepted, rec.Code, rec.Body.String())
			assert.Contains(t, logs.String(), "remote="+tt.want+" principal=admin:alice")
			msgs := e.mem.Messages()
			assert.Equal(t, "m1: updated host provider id\n\nPrincipal: admin:alice\nRemote-Address: "+tt.want, msgs[len(msgs)-1])
		})
	}
}

// TestCommitsNameThePrincipal: an operator's change names the credential,
// a machine's names the machine; the subject stays Mayu 0.11's.
func TestCommitsNameThePrincipal(t *testing.T) {
	e := newEnv(t)
	require.Equal(t, 200, e.do("GET", "/first-stage-script/M1", "", "Authorization", "").Code)
	require.Equal(t, 202, e.do("PUT", "/admin/host/m1/set_state", `{"State":"configured"}`, "Content-Type", "application/json").Code)
	require.Equal(t, 202, e.do("PUT", "/admin/host/m1/set_provider_id", `{"ProviderId":"p"}`, "Content-Type", "application/json").Code)
	msgs := e.mem.Messages()
	assert.Contains(t, msgs, "m1: updated host provider id\n\nPrincipal: admin:alice\nRemote-Address: 192.0.2.1")
	var machine int
	for _, m := range msgs {
		if strings.HasPrefix(m, "m1: updated host InternalAddr") || strings.HasPrefix(m, "m1: updated host profile") {
			assert.True(t, strings.HasSuffix(m, "\n\nPrincipal: machine:m1\nRemote-Address: 192.0.2.1"), m)
			machine++
		}
	}
	assert.Equal(t, 2, machine, "registration steps: %q", msgs)
}

// TestNoAdminAuthIsOpen: --no-admin-auth is Mayu 0.11's open API, named
// anonymous in the trail; the browser checks stay.
func TestNoAdminAuthIsOpen(t *testing.T) {
	var logs bytes.Buffer
	e := newEnv(t, func(c *envConfig) {
		c.api.Access = Access{NoAdminAuth: true}
		c.api.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	assert.Contains(t, logs.String(), "level=WARN msg=\"the admin API is open to anyone")
	registerM1(e)
	require.Equal(t, 200, e.do("GET", "/admin/hosts", "", "Authorization", "").Code)
	require.Equal(t, 202, e.do("PUT", "/admin/host/m1/set_provider_id", `{"ProviderId":"p"}`, "Authorization", "", "Content-Type", "application/json").Code)
	msgs := e.mem.Messages()
	assert.Equal(t, "m1: updated host provider id\n\nPrincipal: anonymous\nRemote-Address: 192.0.2.1", msgs[len(msgs)-1])
	assert.Equal(t, 415, e.do("PUT", "/admin/host/m1/set_provider_id", `{"ProviderId":"q"}`, "Authorization", "", "Content-Type", "text/plain").Code)
	assert.Equal(t, 403, e.do("GET", "/admin/hosts", "", "Authorization", "", "Origin", "http://evil.example").Code)

	_, err := New(Config{Provisioner: e.srv.prov, Renderer: e.render})
	assert.ErrorContains(t, err, "admin routes need", "no access settings at all is a mistake, not an open API")
}

// subjects are the first lines of audit messages: what Mayu 0.11 wrote,
// without the trailers naming the principal.
func subjects(msgs []string) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i], _, _ = strings.Cut(m, "\n")
	}
	return out
}

// TestAuthorizeAdminWrite is the check of writes outside the admin routes
// (an etcd discovery token's size): an admin credential passes, none or
// an unknown one is 401, a read-only one 403; with NoAdminAuth anyone.
func TestAuthorizeAdminWrite(t *testing.T) {
	e := newEnv(t)
	req := func(token string) *http.Request {
		r := httptest.NewRequest("PUT", "/etcd/41f07d10ab835b22071a32d5c1b75a6d/_config/size", strings.NewReader("value=1"))
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		return r
	}
	status := func(err error) int {
		var he *echo.HTTPError
		require.ErrorAs(t, err, &he)
		return he.Code
	}
	assert.NoError(t, e.srv.AuthorizeAdminWrite(req(e.tokens.admin)))
	assert.Equal(t, 401, status(e.srv.AuthorizeAdminWrite(req(""))))
	assert.Equal(t, 401, status(e.srv.AuthorizeAdminWrite(req(strings.Repeat("x", 40)))))
	err := e.srv.AuthorizeAdminWrite(req(e.tokens.readOnly))
	assert.Equal(t, 403, status(err))
	assert.ErrorContains(t, err, "read-only:bob may only read")

	open := newEnv(t, func(c *envConfig) { c.api.Access = Access{NoAdminAuth: true} })
	assert.NoError(t, open.srv.AuthorizeAdminWrite(req("")))
}

// TestTLSConfigCarriesClientCAs: with a client CA the served TLS
// configuration asks for a certificate and keeps the AEAD-only suites.
func TestTLSConfigCarriesClientCAs(t *testing.T) {
	pool := x509.NewCertPool()
	e := newEnv(t, func(c *envConfig) { c.api.Access.ClientCAs = pool })
	conf := e.srv.tlsConfig()
	assert.Equal(t, tls.VerifyClientCertIfGiven, conf.ClientAuth)
	assert.Same(t, pool, conf.ClientCAs)
	assert.Equal(t, TLSConfig().CipherSuites, conf.CipherSuites)
	assert.Equal(t, uint16(tls.VersionTLS12), conf.MinVersion)

	plain := newEnv(t).srv.tlsConfig()
	assert.Equal(t, tls.NoClientCert, plain.ClientAuth)
	assert.Equal(t, TLSConfig().CipherSuites, plain.CipherSuites)
}
