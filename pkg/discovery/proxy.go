package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// ProxyConfig configures proxy mode: registries kept in an etcd's v2 keys
// API, as Mayu 0.11 did (--etcd-endpoint given explicitly).
type ProxyConfig struct {
	// Endpoint is that etcd's client URL; "127.0.0.1:2379" means http.
	Endpoint string
	// BaseURL is Mayu's own http(s)://host:port.
	BaseURL string
	// DefaultSize is --etcd-quorum-size; 0 means 3.
	DefaultSize int
	// Client talks to etcd. Its Timeout applies to token creation and Check
	// only: proxied waits last as long as the member asks, so they use its
	// Transport alone. nil means a client with a 30 s timeout.
	Client *http.Client
	// Guard decides who may write; see WriteGuard.
	Guard  WriteGuard
	Logger *slog.Logger
}

// Proxy keeps registries in a real etcd (which must serve the v2 API:
// etcd 3.4 needs --enable-v2) and forwards /etcd/<token>/... to
// /v2/keys/_etcd/registry/<token>/... there.
type Proxy struct {
	etcd        *url.URL
	base        string
	defaultSize int
	client      *http.Client
	rp          *httputil.ReverseProxy
	guard       WriteGuard
	log         *slog.Logger
}

var _ interface {
	Service
	Ensurer
} = (*Proxy)(nil)

// NewProxy checks the configuration; Check reaches the etcd.
func NewProxy(cfg ProxyConfig) (*Proxy, error) {
	etcd, err := endpointURL("etcd endpoint", cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	base, err := baseURL("base URL", cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	size, err := defaultSize(cfg.DefaultSize)
	if err != nil {
		return nil, err
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{etcd: etcd, base: base, defaultSize: size, client: cfg.Client, guard: cfg.Guard, log: cfg.Logger}
	p.rp = &httputil.ReverseProxy{
		// handleKeys puts the absolute upstream URL on the inbound request.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.Host = pr.Out.URL.Host
		},
		Transport: cfg.Client.Transport, // nil: http.DefaultTransport
		// Waits answer their headers first and the event much later.
		FlushInterval: -1,
		ErrorHandler:  p.proxyError,
	}
	return p, nil
}

// endpointURL parses an etcd client URL; a bare host:port means http.
func endpointURL(name, ep string) (*url.URL, error) {
	if ep != "" && !strings.Contains(ep, "://") {
		ep = "http://" + ep
	}
	ep, err := baseURL(name, ep)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(ep)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, name, err)
	}
	return u, nil
}

// keysURL is <etcd>/v2/keys<key>, key starting with "/".
func keysURL(etcd *url.URL, key string) *url.URL {
	u := *etcd
	u.Path = strings.TrimRight(u.Path, "/") + "/v2/keys" + key
	u.RawPath = ""
	u.RawQuery = ""
	return &u
}

// registryURL is <etcd>/v2/keys/_etcd/registry/<token>[/<rel>]; token and
// rel have passed ValidToken/validKey, so they need no escaping.
func (p *Proxy) registryURL(token, rel string) *url.URL {
	key := RegistryPrefix + "/" + token
	if rel != "" {
		key += "/" + rel
	}
	return keysURL(p.etcd, key)
}

// NewToken creates _config/size of a new random token in etcd.
func (p *Proxy) NewToken(ctx context.Context, size int) (string, error) {
	return newToken(ctx, size, p.defaultSize, p.create)
}

// Ensure creates token in etcd with size members unless it exists.
func (p *Proxy) Ensure(ctx context.Context, token string, size int) (bool, error) {
	return ensure(ctx, token, size, p.defaultSize, p.create)
}

// create does PUT _config/size?prevExist=false: 201 created, 412 exists.
func (p *Proxy) create(ctx context.Context, token string, size int) (bool, error) {
	u := p.registryURL(token, "_config/size")
	u.RawQuery = "prevExist=false"
	body := url.Values{"value": {strconv.Itoa(size)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), strings.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.client.Do(req)
	if err != nil {
		return false, fmt.Errorf("%w: etcd %s: %w", ErrUnavailable, p.etcd, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusCreated:
		p.log.Info("etcd discovery token created", "token", token, "size", size, "etcd", p.etcd.String())
		return true, nil
	case http.StatusPreconditionFailed:
		return false, nil
	default:
		return false, fmt.Errorf("%w: etcd %s answered %s: %s", ErrUnavailable, p.etcd, resp.Status, firstLine(answer))
	}
}

// URL is <base>/etcd/<token>.
func (p *Proxy) URL(token string) string { return p.base + "/etcd/" + token }

// Check verifies that the etcd answers and serves the v2 keys API; etcd 3.4
// without --enable-v2 answers 404 there.
func (p *Proxy) Check(ctx context.Context) error {
	u := keysURL(p.etcd, "/")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: etcd %s: %w", ErrUnavailable, p.etcd, err)
	}
	defer resp.Body.Close()
	var r Response
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r) != nil || r.Action != "get" {
		return fmt.Errorf("%w: etcd %s does not serve the v2 keys API (answered %s; etcd 3.4 needs --enable-v2)", ErrUnavailable, p.etcd, resp.Status)
	}
	return nil
}

// Register mounts PUT /new and forwards the keys protocol under /<token>.
func (p *Proxy) Register(g *echo.Group) {
	mount(g, newTokenHandler(p, p.defaultSize, p.log), p.handleKeys, p.guard, p.log)
}

func (p *Proxy) handleKeys(c echo.Context) error {
	token, rel, eerr := parseKeyPath(c)
	if eerr != nil {
		return writeError(c, eerr)
	}
	in := c.Request()
	u := p.registryURL(token, rel)
	u.RawQuery = in.URL.RawQuery
	r := in.Clone(in.Context())
	r.URL = u
	if r.Body != nil {
		r.Body = http.MaxBytesReader(c.Response(), in.Body, maxBody)
	}
	p.rp.ServeHTTP(c.Response(), r)
	return nil
}

// proxyError answers a failed forward like an etcd without a leader (5xx in
// etcd's error format), so that etcd's discovery client retries instead of
// giving up.
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the member went away; nobody to answer
	}
	p.log.Warn("forwarding etcd discovery request", "url", r.URL.String(), "err", err)
	e := newError(codeRaftInternal, "discovery: etcd "+p.etcd.String()+" unreachable", 0)
	body, _ := json.Marshal(e)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadGateway)
	_, _ = w.Write(append(body, '\n'))
}
