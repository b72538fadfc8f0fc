// Package client is a Go client of mayu's admin API: the routes mayuctl
// uses to list machines and change their records, and the ones installed
// machines call (set_installed, boot_complete).
//
// The paths and JSON bodies are those of Mayu 0.11, so this client works
// against an old mayu and an old mayuctl works against ours. Every request
// carries a context and a timeout; a non-2xx answer becomes an *Error that
// holds the status and the server's one-line reason.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"mayu/pkg/host"
)

// Defaults of Config, the same as mayuctl's flags.
const (
	DefaultHost    = "localhost"
	DefaultPort    = 4080
	DefaultTimeout = 30 * time.Second
)

// Limits on what is read from the server. A list of ten thousand machines is
// a few megabytes; anything beyond these is not mayu talking.
const (
	maxListBytes   = 64 << 20
	maxReasonBytes = 4 << 10
	maxReasonLen   = 300
)

// Errors the client returns, for errors.Is.
var (
	// ErrNotFound: the serial is not known to mayu. Returned by Get, and
	// matched by an *Error with status 404.
	ErrNotFound = errors.New("client: host not found")
	// ErrUnreachable: no HTTP answer at all (refused, DNS, TLS handshake,
	// timeout). The wrapped error says which.
	ErrUnreachable = errors.New("client: cannot reach mayu")
	// ErrInvalidArgument: a value was refused before anything was sent.
	ErrInvalidArgument = errors.New("client: invalid argument")
	// ErrBadResponse: a 2xx answer whose body could not be understood.
	ErrBadResponse = errors.New("client: bad response")
	// ErrUnauthorized: mayu wants a credential (401: none sent, or one
	// it does not know). Matched by an *Error with status 401.
	ErrUnauthorized = errors.New("client: no valid credential")
	// ErrForbidden: the credential may not do this (403: a read-only
	// one asked for a change). Matched by an *Error with status 403.
	ErrForbidden = errors.New("client: credential not allowed")
)

// Error is a non-2xx answer of the server.
type Error struct {
	// Status is the HTTP status code (404, 409, ...).
	Status int
	// Reason is the first line of the answer's body, trimmed; it may be
	// empty when the server said nothing.
	Reason string
	// Method and URL of the request, for messages.
	Method, URL string
}

// Error reads like "mayu answered 404 Not Found: host not found".
func (e *Error) Error() string {
	s := fmt.Sprintf("mayu answered %d %s", e.Status, http.StatusText(e.Status))
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Is makes errors.Is(err, ErrNotFound) true for a 404, ErrUnauthorized
// for a 401 and ErrForbidden for a 403.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	}
	return false
}

// Config configures a Client. The zero value talks HTTPS to localhost:4080.
type Config struct {
	// Host and Port of mayu's HTTP server.
	Host string
	Port int
	// NoTLS talks plain HTTP, as mayu --no-tls serves.
	NoTLS bool
	// BaseURL, when set, replaces Host, Port and NoTLS
	// (e.g. "https://10.0.0.1:4080").
	BaseURL string
	// CAFile is a PEM bundle trusted in addition to the system roots, for a
	// mayu whose certificate comes from a private CA.
	CAFile string
	// Insecure skips certificate verification (self-signed test setups).
	// Insecure with CAFile is ErrInvalidArgument: one checks the
	// certificate, the other does not.
	Insecure bool
	// MachineToken is the machine's credential (machineauth), sent with
	// every request in the Mayu-Machine-Token header: what an installed
	// machine proves itself by in boot-complete. "" sends none.
	MachineToken string
	// Timeout bounds each request, connection included; 0 means
	// DefaultTimeout. A shorter deadline on the caller's context wins.
	Timeout time.Duration
	// HTTPClient replaces the client built from the settings above.
	HTTPClient *http.Client
	// Logger receives one debug line per request; nil discards.
	Logger *slog.Logger
	// UserAgent is sent with each request; empty means "mayu-client".
	UserAgent string
	// Token is the admin API's bearer token, sent with every request;
	// empty sends none (a mayu with --no-admin-auth, or a machine route).
	// It must be printable ASCII without spaces.
	Token string
}

// Client talks to one mayu. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	http    *http.Client
	timeout time.Duration
	log     *slog.Logger
	agent   string
	token   string // admin bearer token
	machine string // the machine's credential
}

// New checks the settings and builds a Client. It reads CAFile now, so a
// missing or broken bundle is reported before any request.
func New(cfg Config) (*Client, error) {
	base, err := baseURL(cfg)
	if err != nil {
		return nil, err
	}
	c := &Client{
		base:    base,
		http:    cfg.HTTPClient,
		timeout: cfg.Timeout,
		log:     cfg.Logger,
		agent:   cfg.UserAgent,
		token:   cfg.Token,
		machine: cfg.MachineToken,
	}
	for _, t := range []struct{ name, v string }{{"token", c.token}, {"machine token", c.machine}} {
		for i := 0; i < len(t.v); i++ {
			if b := t.v[i]; b <= ' ' || b >= 0x7f {
				return nil, fmt.Errorf("%w: the %s holds a space or a character that is not printable ASCII", ErrInvalidArgument, t.name)
			}
		}
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.agent == "" {
		c.agent = "mayu-client"
	}
	if c.http == nil {
		tlsConf, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tlsConf
		// Proxies are for the internet; mayu is on the management segment.
		tr.Proxy = nil
		c.http = &http.Client{Transport: tr}
	}
	return c, nil
}

// BaseURL is where the client sends its requests, e.g. "http://localhost:4080".
func (c *Client) BaseURL() string { return c.base.String() }

// List returns every machine mayu knows (GET /admin/hosts).
func (c *Client) List(ctx context.Context) ([]host.Host, error) {
	body, err := c.do(ctx, http.MethodGet, "/admin/hosts", nil)
	if err != nil {
		return nil, err
	}
	var hosts []host.Host
	if err := json.Unmarshal(body, &hosts); err != nil {
		return nil, fmt.Errorf("%w: GET /admin/hosts: %w", ErrBadResponse, err)
	}
	return hosts, nil
}

// Get returns one machine. The admin API has no single-host route (Mayu
// 0.11 has none either), so it filters the list.
func (c *Client) Get(ctx context.Context, serial string) (host.Host, error) {
	s, err := normalizeSerial(serial)
	if err != nil {
		return host.Host{}, err
	}
	hosts, err := c.List(ctx)
	if err != nil {
		return host.Host{}, err
	}
	for _, h := range hosts {
		if strings.EqualFold(h.Serial, s) {
			return h, nil
		}
	}
	return host.Host{}, fmt.Errorf("%w: %q", ErrNotFound, serial)
}

// SetMetadata replaces the machine's fleet metadata tags.
func (c *Client) SetMetadata(ctx context.Context, serial string, tags []string) error {
	if tags == nil {
		tags = []string{} // "[]", not null: clearing the tags is a valid request
	}
	return c.put(ctx, serial, "set_metadata", struct{ FleetMetadata []string }{tags})
}

// SetProviderID sets the provider's identifier of the machine.
func (c *Client) SetProviderID(ctx context.Context, serial, id string) error {
	return c.put(ctx, serial, "set_provider_id", struct{ ProviderId string }{id})
}

// SetIPMIAddr sets the address of the machine's BMC.
func (c *Client) SetIPMIAddr(ctx context.Context, serial string, addr net.IP) error {
	if addr == nil {
		return fmt.Errorf("%w: empty IPMI address", ErrInvalidArgument)
	}
	return c.put(ctx, serial, "set_ipmi_addr", struct{ IPMIAddr net.IP }{addr})
}

// ClearIPMIAddr removes the address of the machine's BMC.
func (c *Client) ClearIPMIAddr(ctx context.Context, serial string) error {
	return c.put(ctx, serial, "set_ipmi_addr", struct{ IPMIAddr net.IP }{nil})
}

// SetMACs re-binds the machine to these MAC addresses (after its network
// cards or board were replaced): DHCP ignores them once it is installed,
// and its next facts report must share one of them. An empty list unbinds
// it, so that its next report binds what it reports; mayu refuses that for
// an installed or running machine.
func (c *Client) SetMACs(ctx context.Context, serial string, macs []net.HardwareAddr) error {
	list := make([]string, len(macs))
	for i, m := range macs {
		if len(m) != 6 {
			return fmt.Errorf("%w: MAC address %q is not 6 bytes", ErrInvalidArgument, m)
		}
		list[i] = m.String()
	}
	return c.put(ctx, serial, "set_mac_addresses", struct{ MacAddresses []string }{list})
}

// SetCabinet sets the cabinet number of the machine.
func (c *Client) SetCabinet(ctx context.Context, serial string, cabinet uint) error {
	return c.put(ctx, serial, "set_cabinet", struct{ Cabinet uint }{cabinet})
}

// SetState moves the machine to another life-cycle state; "configured"
// makes it reinstall at its next PXE boot.
func (c *Client) SetState(ctx context.Context, serial string, state host.State) error {
	if _, err := host.ParseState(string(state)); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return c.put(ctx, serial, "set_state", struct{ State host.State }{state})
}

// SetEtcdClusterToken sets the etcd discovery token the machine joins with.
func (c *Client) SetEtcdClusterToken(ctx context.Context, serial, token string) error {
	return c.put(ctx, serial, "set_etcd_cluster_token", struct{ EtcdClusterToken string }{token})
}

// Override merges properties into the machine's overrides (per-host
// templates_env values and CoreOSVersion).
func (c *Client) Override(ctx context.Context, serial string, overrides map[string]any) error {
	if len(overrides) == 0 {
		return fmt.Errorf("%w: no override given", ErrInvalidArgument)
	}
	for k := range overrides {
		if strings.TrimSpace(k) == "" {
			return fmt.Errorf("%w: empty override property name", ErrInvalidArgument)
		}
	}
	return c.put(ctx, serial, "override", struct{ Overrides map[string]any }{overrides})
}

// MarkFresh sets the machine back to configured with KeepDiskData off, so
// its next install wipes its disks.
func (c *Client) MarkFresh(ctx context.Context, serial string) error {
	return c.put(ctx, serial, "mark_fresh", nil)
}

// SetInstalled reports that the machine finished writing its disk; the
// first-stage script calls it before rebooting.
func (c *Client) SetInstalled(ctx context.Context, serial string) error {
	return c.put(ctx, serial, "set_installed", nil)
}

// Versions are the software versions an installed machine reports at boot.
// The JSON names are the Host record's, so the body is a (partial) host
// record, as Mayu 0.11's boot_complete expects.
type Versions struct {
	CoreOSVersion string `json:",omitempty"`
	MayuVersion   string `json:",omitempty"`
	DockerVersion string `json:",omitempty"`
	FleetVersion  string `json:",omitempty"`
	EtcdVersion   string `json:",omitempty"`
	RktVersion    string `json:",omitempty"`
	K8sVersion    string `json:",omitempty"`
	YochuVersion  string `json:",omitempty"`
}

// BootComplete reports that the machine booted its installed system: mayu
// sets it running, stamps LastBoot and records the versions.
func (c *Client) BootComplete(ctx context.Context, serial string, v Versions) error {
	return c.put(ctx, serial, "boot_complete", v)
}

// put sends PUT /admin/host/<serial>/<action> with body as JSON (an empty
// object when body is nil, since Mayu 0.11 decodes every body).
func (c *Client) put(ctx context.Context, serial, action string, body any) error {
	s, err := normalizeSerial(serial)
	if err != nil {
		return err
	}
	if body == nil {
		body = struct{}{}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("%w: encode %s body: %w", ErrInvalidArgument, action, err)
	}
	_, err = c.do(ctx, http.MethodPut, "/admin/host/"+url.PathEscape(s)+"/"+action, b)
	return err
}

// do sends one request and returns the body of a 2xx answer.
func (c *Client) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	// A query stays a query: JoinPath would escape its "?".
	p, query, _ := strings.Cut(path, "?")
	u := c.base.JoinPath(p)
	u.RawQuery = query
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	req.Header.Set("User-Agent", c.agent)
	if c.machine != "" {
		req.Header.Set(host.MachineTokenHeader, c.machine)
	}
	req.Header.Set("Accept", "application/json, text/plain")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.log.Debug("request", "method", method, "url", u.String(), "body", string(body))

	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		c.log.Debug("request failed", "method", method, "url", u.String(), "err", err)
		return nil, c.unreachable(ctx, err)
	}
	defer resp.Body.Close()
	c.log.Info("answer", "method", method, "url", u.String(), "status", resp.StatusCode,
		"took", time.Since(start).Round(time.Millisecond))

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxReasonBytes))
		c.log.Debug("error answer", "body", string(raw))
		return nil, &Error{Status: resp.StatusCode, Reason: reason(raw), Method: method, URL: u.String()}
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxListBytes+1))
	if err != nil {
		return nil, c.unreachable(ctx, err)
	}
	if len(raw) > maxListBytes {
		return nil, fmt.Errorf("%w: %s %s: answer larger than %d bytes", ErrBadResponse, method, path, maxListBytes)
	}
	return raw, nil
}

// unreachable wraps a transport failure; a timeout names the limit, since
// "context deadline exceeded" alone does not tell an operator much.
func (c *Client) unreachable(ctx context.Context, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the URL is in our own message already
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w at %s: no answer within %s: %w", ErrUnreachable, c.base, c.timeout, err)
	}
	return fmt.Errorf("%w at %s: %w", ErrUnreachable, c.base, err)
}

// reason makes one printable line of an error body: the first non-empty
// line, trimmed and shortened. A JSON body {"message": "..."} (an echo
// default error) gives its message.
func reason(raw []byte) string {
	var msg struct {
		Message string `json:"message"`
	}
	s := string(raw)
	if json.Unmarshal(raw, &msg) == nil && msg.Message != "" {
		s = msg.Message
	}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return ' '
			}
			return r
		}, line))
		if line == "" {
			continue
		}
		if len([]rune(line)) > maxReasonLen {
			line = string([]rune(line)[:maxReasonLen]) + "..."
		}
		return line
	}
	return ""
}

func normalizeSerial(serial string) (string, error) {
	s, err := host.NormalizeSerial(serial)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return s, nil
}

func baseURL(cfg Config) (*url.URL, error) {
	if cfg.BaseURL != "" {
		u, err := url.Parse(cfg.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: base URL %q: want http(s)://host:port", ErrInvalidArgument, cfg.BaseURL)
		}
		u.Path = strings.TrimRight(u.Path, "/")
		return u, nil
	}
	h := cfg.Host
	if h == "" {
		h = DefaultHost
	}
	if strings.ContainsAny(h, "/?#@ ") {
		return nil, fmt.Errorf("%w: host %q: want a host name or an IP address", ErrInvalidArgument, h)
	}
	h = strings.Trim(h, "[]") // accept "[::1]" as well as "::1"
	port := cfg.Port
	if port == 0 {
		port = DefaultPort
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("%w: port %d: want 1-65535", ErrInvalidArgument, port)
	}
	scheme := "https"
	if cfg.NoTLS {
		scheme = "http"
	}
	return &url.URL{Scheme: scheme, Host: net.JoinHostPort(h, strconv.Itoa(port))}, nil
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	if cfg.Insecure && cfg.CAFile != "" {
		return nil, fmt.Errorf("%w: --insecure and --ca-file %s contradict each other: the CA file is there to check mayu's certificate, --insecure checks nothing; give one",
			ErrInvalidArgument, cfg.CAFile)
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.Insecure {
		conf.InsecureSkipVerify = true //nolint:gosec // asked for explicitly (--insecure)
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: CA file: %w", ErrInvalidArgument, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: CA file %s: no PEM certificate in it", ErrInvalidArgument, cfg.CAFile)
		}
		conf.RootCAs = pool
	}
	return conf, nil
}
