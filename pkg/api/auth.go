package api

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"mayu/pkg/auth"
	"mayu/pkg/host"
	"mayu/pkg/provision"
)

// Access is who may use the admin routes and which requests the server
// answers at all. Its zero value refuses every admin request: New wants
// Tokens, ClientCAs or an explicit NoAdminAuth.
type Access struct {
	// Tokens are the bearer tokens of the admin routes (the token file).
	Tokens *auth.Tokens
	// ClientCAs, with TLS, verify client certificates: a verified one acts
	// as admin:<common name>, or read-only:<common name> when one of its
	// organizational units is "read-only".
	ClientCAs *x509.CertPool
	// NoAdminAuth serves the admin routes to anyone, as Mayu 0.11 did
	// (--no-admin-auth). The browser checks stay.
	NoAdminAuth bool
	// TrustedProxies are the peers whose X-Forwarded-For names the client
	// (--trusted-proxies). From any other peer the header is ignored, and
	// the access log, the refusals and the audit trail name the peer.
	TrustedProxies []*net.IPNet
	// Hosts are the names (and addresses) a request's Host header may
	// carry besides loopback, the base URL's host and the addresses of
	// this machine's interfaces. Anything else is refused (421), so a DNS
	// name an attacker points at mayu cannot carry an operator's browser
	// here.
	Hosts []string
}

// principalKey is where the admin middleware leaves the request's
// auth.Principal in the echo context.
const principalKey = "mayu.principal"

// setupAccess checks the access settings and installs the client-address
// rule and the browser checks on every route.
func (s *Server) setupAccess() error {
	a := s.cfg.Access
	if a.Tokens == nil && a.ClientCAs == nil && !a.NoAdminAuth {
		return fmt.Errorf("api: the admin routes need Access.Tokens or Access.ClientCAs, or Access.NoAdminAuth")
	}
	if len(a.TrustedProxies) == 0 {
		s.e.IPExtractor = echo.ExtractIPDirect()
	} else {
		// echo trusts loopback and private ranges by default: only the
		// configured proxies are, here.
		opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
		for _, n := range a.TrustedProxies {
			opts = append(opts, echo.TrustIPRange(n))
		}
		s.e.IPExtractor = echo.ExtractIPFromXFFHeader(opts...)
	}
	s.hosts = newHostSet(s.base, a.Hosts)
	s.e.Use(s.checkHost, checkOrigin)
	return nil
}

// checkHost refuses (421) a request whose Host header is not one of
// mayu's names or addresses: the DNS-rebinding way into the admin API
// from an operator's browser. A request without Host (HTTP/1.0) comes from
// no browser and passes.
func (s *Server) checkHost(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Host
		if h != "" && !s.hosts.allowed(h) {
			return echo.NewHTTPError(http.StatusMisdirectedRequest,
				fmt.Sprintf("Host %q is not a name of this mayu (add it with --allowed-hosts)", h))
		}
		return next(c)
	}
}

// checkOrigin refuses (403) a request a browser sent for a page of another
// origin: browsers name it in Origin, which mayu's own dashboard does not
// need (it is same-origin) and machines and mayuctl never send.
func checkOrigin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		o := r.Header.Get("Origin")
		if o == "" {
			return next(c)
		}
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return echo.NewHTTPError(http.StatusForbidden, fmt.Sprintf("cross-origin request from %q refused", o))
		}
		return next(c)
	}
}

// adminRead and adminWrite guard the admin routes: a credential is needed
// (401), a write needs an admin one (403) and a JSON body (415), so no
// HTML form of another site can send one.
func (s *Server) adminRead(next echo.HandlerFunc) echo.HandlerFunc  { return s.admin(false, next) }
func (s *Server) adminWrite(next echo.HandlerFunc) echo.HandlerFunc { return s.admin(true, next) }

func (s *Server) admin(write bool, next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p, err := s.authenticate(c.Request())
		if err != nil {
			c.Response().Header().Set("WWW-Authenticate", wwwAuthenticate)
			return err
		}
		c.Set(principalKey, p)
		if write {
			if err := s.mayWrite(p); err != nil {
				return err
			}
		}
		if write && !isJSON(c.Request()) {
			return echo.NewHTTPError(http.StatusUnsupportedMediaType, "admin changes need Content-Type: application/json")
		}
		return next(c)
	}
}

// authenticate finds the request's principal: a verified client
// certificate, else a bearer token. Nothing, or a token nobody has, is a
// 401 (answered with WWW-Authenticate); with NoAdminAuth everyone is
// auth.Anonymous.
func (s *Server) authenticate(r *http.Request) (auth.Principal, error) {
	a := s.cfg.Access
	if a.NoAdminAuth {
		return auth.Anonymous, nil
	}
	if a.ClientCAs != nil && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		cert := r.TLS.VerifiedChains[0][0]
		if cert.Subject.CommonName != "" {
			kind := auth.Admin
			if slices.Contains(cert.Subject.OrganizationalUnit, string(auth.ReadOnly)) {
				kind = auth.ReadOnly
			}
			return auth.Principal{Kind: string(kind), Name: cert.Subject.CommonName}, nil
		}
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || a.Tokens == nil {
		return auth.Principal{}, echo.NewHTTPError(http.StatusUnauthorized, "the admin API needs a credential (Authorization: Bearer <token>)")
	}
	p, ok := a.Tokens.Authenticate(strings.TrimSpace(token))
	if !ok {
		return auth.Principal{}, echo.NewHTTPError(http.StatusUnauthorized, "the admin API does not know this token")
	}
	return p, nil
}

// wwwAuthenticate is the challenge of a 401: a bearer token.
const wwwAuthenticate = `Bearer realm="mayu admin"`

// mayWrite refuses (403) a principal that may only read.
func (s *Server) mayWrite(p auth.Principal) error {
	if !p.CanWrite() && !s.cfg.Access.NoAdminAuth {
		return echo.NewHTTPError(http.StatusForbidden, fmt.Sprintf("%s may only read: this change needs an admin credential", p))
	}
	return nil
}

// isJSON reports whether the request's body is declared as JSON
// (application/json, with or without parameters).
func isJSON(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// principal is the request's principal: the admin middleware's, else the
// machine whose serial the route is about, else anonymous.
func principal(c echo.Context, serial string) auth.Principal {
	if p, ok := c.Get(principalKey).(auth.Principal); ok {
		return p
	}
	if serial != "" {
		if n, err := host.NormalizeSerial(serial); err == nil {
			serial = n
		}
		return auth.Machine(serial)
	}
	return auth.Anonymous
}

// provAs is the provisioner acting for the request, so that its commits
// name the principal and the client's address.
func (s *Server) provAs(c echo.Context, serial string) *provision.Provisioner {
	return s.prov.As(provision.Actor{Principal: principal(c, serial).String(), Addr: c.RealIP()})
}

// requestAttrs are the log attributes that say who sent a request.
func requestAttrs(c echo.Context) []any {
	attrs := []any{"remote", c.RealIP()}
	if p, ok := c.Get(principalKey).(auth.Principal); ok {
		attrs = append(attrs, "principal", p.String())
	}
	return attrs
}

// hostSet is what a Host header may name: fixed names, plus this
// machine's interface addresses, read again (at most every
// addrRefresh) when a request names an address not seen yet.
type hostSet struct {
	fixed map[string]bool

	mu     sync.Mutex
	addrs  map[string]bool
	readAt time.Time
}

const addrRefresh = 5 * time.Second

func newHostSet(base string, extra []string) *hostSet {
	hs := &hostSet{fixed: map[string]bool{"localhost": true}}
	if u, err := url.Parse(base); err == nil && u.Hostname() != "" {
		hs.fixed[normHost(u.Hostname())] = true
	}
	for _, h := range extra {
		if h = strings.TrimSpace(h); h != "" {
			hs.fixed[normHost(h)] = true
		}
	}
	return hs
}

// normHost lower-cases a name and writes an address in its canonical form.
func normHost(h string) string {
	h = strings.ToLower(strings.TrimSuffix(strings.Trim(h, "[]"), "."))
	if ip := net.ParseIP(h); ip != nil {
		return ip.String()
	}
	return h
}

// allowed reports whether hostport (a Host header) names this mayu.
func (hs *hostSet) allowed(hostport string) bool {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	h = normHost(h)
	if hs.fixed[h] {
		return true
	}
	ip := net.ParseIP(h)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	return hs.ownAddr(ip.String())
}

func (hs *hostSet) ownAddr(ip string) bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.addrs[ip] {
		return true
	}
	if time.Since(hs.readAt) < addrRefresh {
		return false
	}
	hs.readAt = time.Now()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	hs.addrs = map[string]bool{}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			hs.addrs[n.IP.String()] = true
		}
	}
	return hs.addrs[ip]
}

// logAccess notes the access settings at start: the open admin API is
// worth a warning every time.
func (s *Server) logAccess() {
	a := s.cfg.Access
	switch {
	case a.NoAdminAuth:
		s.log.Warn("the admin API is open to anyone who reaches this port (--no-admin-auth): any host on the network can " +
			"read every record and make any machine reinstall; remove --no-admin-auth to require a token")
	default:
		attrs := []any{}
		if a.Tokens != nil {
			attrs = append(attrs, "token_file", a.Tokens.Path(), "credentials", a.Tokens.Len())
		}
		attrs = append(attrs, "client_certificates", a.ClientCAs != nil)
		s.log.Info("admin API requires a credential", attrs...)
	}
	if len(a.TrustedProxies) > 0 {
		nets := make([]string, len(a.TrustedProxies))
		for i, n := range a.TrustedProxies {
			nets[i] = n.String()
		}
		s.log.Info("X-Forwarded-For is believed from these peers only", "trusted_proxies", strings.Join(nets, ","))
	}
}

// tlsConfig is the TLS configuration Serve uses: TLSConfig's versions and
// AEAD-only suites, and with Access.ClientCAs a request for a client
// certificate; one that does not verify ends the handshake, none at all
// leaves the bearer token (or a machine route).
func (s *Server) tlsConfig() *tls.Config {
	conf := TLSConfig()
	if s.cfg.Access.ClientCAs != nil {
		conf.ClientAuth = tls.VerifyClientCertIfGiven
		conf.ClientCAs = s.cfg.Access.ClientCAs
	}
	return conf
}

// AuthorizeAdminWrite reports whether r carries a credential that may
// change things through the admin API: nil for an admin token or client
// certificate (or anyone, with Access.NoAdminAuth); an *echo.HTTPError
// with 401 (no or an unknown credential) or 403 (a read-only one)
// otherwise. It guards writes outside the admin routes that are the
// operator's alone, such as an etcd discovery token's _config.
func (s *Server) AuthorizeAdminWrite(r *http.Request) error {
	p, err := s.authenticate(r)
	if err != nil {
		return err
	}
	return s.mayWrite(p)
}
