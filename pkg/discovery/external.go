package discovery

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// ExternalConfig configures the use of a separate discovery service
// (--etcd-discovery=<url> --use-internal-etcd-discovery=false).
type ExternalConfig struct {
	// URL is the service's base, e.g. https://discovery.etcd.io.
	URL string
	// Client talks to it; nil means a client with a 30 s timeout.
	Client *http.Client
	// DefaultSize is --etcd-quorum-size; 0 means 3.
	DefaultSize int
}

// External gets tokens from a separate discovery service. Machines talk to
// that service directly, so Mayu serves nothing under /etcd in this mode.
type External struct {
	base        string
	client      *http.Client
	defaultSize int
}

var _ Service = (*External)(nil)

// NewExternal checks the configuration; it does not reach the service
// (Check does).
func NewExternal(cfg ExternalConfig) (*External, error) {
	base, err := baseURL("external discovery URL", cfg.URL)
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
	return &External{base: base, client: cfg.Client, defaultSize: size}, nil
}

// NewToken asks the service for a token: PUT <url>/new with body size=N; the
// answer is the token's discovery URL.
func (e *External) NewToken(ctx context.Context, size int) (string, error) {
	if size == 0 {
		size = e.defaultSize
	}
	if _, err := checkSize(size); err != nil {
		return "", err
	}
	body := url.Values{"size": {strconv.Itoa(size)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, e.base+"/new", strings.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrConfig, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := e.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrUnavailable, e.base, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", fmt.Errorf("%w: reading answer of %s/new: %w", ErrUnavailable, e.base, err)
	}
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("%w: %s/new answered %s: %s", ErrUnavailable, e.base, resp.Status, firstLine(answer))
	}
	token, err := TokenFromURL(string(answer))
	if err != nil {
		return "", fmt.Errorf("%w: %s/new answered %q: %w", ErrUnavailable, e.base, firstLine(answer), err)
	}
	return token, nil
}

// URL is <url>/<token>.
func (e *External) URL(token string) string { return e.base + "/" + token }

// Register adds nothing: machines are given the external URL.
func (e *External) Register(*echo.Group) {}

// Check fails when the service cannot be reached at all. Any HTTP answer
// counts as reachable (the base path of a discovery service need not serve
// anything); redirects are not followed, so nothing beyond the configured
// host is contacted.
func (e *External) Check(ctx context.Context) error {
	c := *e.client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/", nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%w: external etcd discovery %s: %w", ErrUnavailable, e.base, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.Body.Close()
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
