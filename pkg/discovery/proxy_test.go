package discovery

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeEtcd records what the proxy forwards and answers like etcd's v2 keys
// API would, closely enough to check the forwarding itself. The proxy
// against a real etcd is in the e2e test.
type fakeEtcd struct {
	mu       sync.Mutex
	v2       bool
	sizes    map[string]string // token -> _config/size
	requests []string          // "METHOD path?query body"
	release  chan struct{}     // a wait answers once this is closed
}

func newFakeEtcd() *fakeEtcd {
	return &fakeEtcd{v2: true, sizes: map[string]string{}, release: make(chan struct{})}
}

func (f *fakeEtcd) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI()+" "+string(b))
	v2 := f.v2
	f.mu.Unlock()
	if !v2 || !strings.HasPrefix(r.URL.Path, "/v2/keys/") {
		http.NotFound(w, r) // etcd 3.4 without --enable-v2
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Etcd-Index", "42")
	rest := strings.TrimPrefix(r.URL.Path, "/v2/keys/_etcd/registry/")
	switch {
	case r.URL.Path == "/v2/keys/":
		_, _ = io.WriteString(w, `{"action":"get","node":{"dir":true}}`)
	case strings.HasSuffix(rest, "/_config/size") && r.Method == http.MethodPut:
		tok := strings.TrimSuffix(rest, "/_config/size")
		form, _ := url.ParseQuery(string(b))
		f.mu.Lock()
		_, exists := f.sizes[tok]
		if !exists {
			f.sizes[tok] = form.Get("value")
		}
		f.mu.Unlock()
		if exists {
			w.WriteHeader(http.StatusPreconditionFailed)
			_, _ = io.WriteString(w, `{"errorCode":105,"message":"Key already exists"}`)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"action":"create"}`)
	case r.URL.Query().Get("wait") == "true":
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-f.release:
			_, _ = io.WriteString(w, `{"action":"create","node":{"key":"/_etcd/registry/`+rest+`/m2"}}`)
		case <-r.Context().Done():
		}
	default:
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"action":"echo"}`)
	}
}

func (f *fakeEtcd) size(tok string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sizes[tok]
}

func (f *fakeEtcd) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func newProxy(t *testing.T, endpoint string) *Proxy {
	t.Helper()
	p, err := NewProxy(ProxyConfig{Endpoint: endpoint, BaseURL: "http://mayu.test:4080", DefaultSize: 3})
	require.NoError(t, err)
	return p
}

func TestProxyTokens(t *testing.T) {
	etcd := newFakeEtcd()
	es := httptest.NewServer(etcd)
	defer es.Close()
	p := newProxy(t, strings.TrimPrefix(es.URL, "http://")) // "127.0.0.1:port", as --etcd-endpoint has it
	srv := serve(t, p)
	ctx := context.Background()

	tok, err := p.NewToken(ctx, 0)
	require.NoError(t, err)
	assert.Regexp(t, `^[0-9a-f]{32}$`, tok)
	assert.Equal(t, "3", etcd.size(tok))
	assert.Equal(t, []string{"PUT /v2/keys/_etcd/registry/" + tok + "/_config/size?prevExist=false value=3"}, etcd.seen())

	created, err := p.Ensure(ctx, tok, 5)
	require.NoError(t, err)
	assert.False(t, created)
	created, err = p.Ensure(ctx, "41f07d10ab835b22071a32d5c1b75a6d", 5)
	require.NoError(t, err)
	assert.True(t, created)
	assert.Equal(t, "5", etcd.size("41f07d10ab835b22071a32d5c1b75a6d"))

	a := do(t, srv, "PUT", "/etcd/new", url.Values{"size": {"7"}})
	require.Equal(t, 200, a.status, a.body)
	newTok, err := TokenFromURL(a.body)
	require.NoError(t, err)
	assert.Equal(t, "http://mayu.test:4080/etcd/"+newTok, a.body)
	assert.Equal(t, "7", etcd.size(newTok))
	assert.Equal(t, 400, do(t, srv, "PUT", "/etcd/new", url.Values{"size": {"x"}}).status)
}

// TestProxyForwards: method, key, query and form body reach
// /v2/keys/_etcd/registry/<token>/..., and etcd's status, headers and body
// come back unchanged.
func TestProxyForwards(t *testing.T) {
	etcd := newFakeEtcd()
	es := httptest.NewServer(etcd)
	defer es.Close()
	p := newProxy(t, es.URL+"/")
	srv := serve(t, p)
	const tok = "41f07d10ab835b22071a32d5c1b75a6d"

	tests := []struct {
		name, method, path string
		form               url.Values
		wantSeen           string
	}{
		{"register", "PUT", "/etcd/" + tok + "/8e9e05c52164694d?prevExist=false", url.Values{"value": {"m1=http://127.0.0.1:2380"}},
			"PUT /v2/keys/_etcd/registry/" + tok + "/8e9e05c52164694d?prevExist=false value=m1%3Dhttp%3A%2F%2F127.0.0.1%3A2380"},
		{"list", "GET", "/etcd/" + tok + "?quorum=false&recursive=false&sorted=false", nil,
			"GET /v2/keys/_etcd/registry/" + tok + "?quorum=false&recursive=false&sorted=false "},
		{"size", "GET", "/etcd/" + tok + "/_config/size", nil,
			"GET /v2/keys/_etcd/registry/" + tok + "/_config/size "},
		{"delete", "DELETE", "/etcd/" + tok + "/8e9e05c52164694d", nil,
			"DELETE /v2/keys/_etcd/registry/" + tok + "/8e9e05c52164694d "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(etcd.seen())
			got := do(t, srv, tt.method, tt.path, tt.form)
			assert.Equal(t, answer{201, "42", `{"action":"echo"}`}, got)
			seen := etcd.seen()
			require.Len(t, seen, n+1)
			assert.Equal(t, tt.wantSeen, seen[n])
		})
	}

	t.Run("bad keys never reach etcd", func(t *testing.T) {
		n := len(etcd.seen())
		assert.Equal(t, 400, do(t, srv, "GET", "/etcd/"+tok+"/../../v3", nil).status)
		assert.Equal(t, 404, do(t, srv, "GET", "/etcd/a.b", nil).status)
		assert.Len(t, etcd.seen(), n)
	})
}

// TestProxyStreamsWaits: etcd answers a wait's headers at once and the
// event later; the proxy passes both through as they come.
func TestProxyStreamsWaits(t *testing.T) {
	etcd := newFakeEtcd()
	es := httptest.NewServer(etcd)
	defer es.Close()
	p := newProxy(t, es.URL)
	srv := serve(t, p)
	const tok = "41f07d10ab835b22071a32d5c1b75a6d"

	resp, err := srv.Client().Get(srv.URL + "/etcd/" + tok + "?recursive=true&wait=true&waitIndex=5")
	require.NoError(t, err) // headers arrived while etcd still waits
	defer resp.Body.Close()
	assert.Equal(t, "42", resp.Header.Get("X-Etcd-Index"))
	close(etcd.release)
	body := make(chan string, 1)
	go func() { b, _ := io.ReadAll(resp.Body); body <- string(b) }()
	select {
	case b := <-body:
		assert.JSONEq(t, `{"action":"create","node":{"key":"/_etcd/registry/`+tok+`/m2"}}`, b)
	case <-time.After(10 * time.Second):
		t.Fatal("event not passed through within 10s")
	}
}

func TestProxyCheck(t *testing.T) {
	etcd := newFakeEtcd()
	es := httptest.NewServer(etcd)
	defer es.Close()
	p := newProxy(t, es.URL)
	require.NoError(t, p.Check(context.Background()))

	etcd.mu.Lock()
	etcd.v2 = false
	etcd.mu.Unlock()
	err := p.Check(context.Background())
	assert.ErrorIs(t, err, ErrUnavailable)
	assert.Contains(t, err.Error(), "--enable-v2")
}

func TestProxyEtcdUnreachable(t *testing.T) {
	es := httptest.NewServer(http.NotFoundHandler())
	addr := es.URL
	es.Close()
	p := newProxy(t, addr)
	srv := serve(t, p)

	assert.ErrorIs(t, p.Check(context.Background()), ErrUnavailable)
	_, err := p.NewToken(context.Background(), 3)
	assert.ErrorIs(t, err, ErrUnavailable)
	assert.Equal(t, 503, do(t, srv, "PUT", "/etcd/new", nil).status)

	// A 5xx in etcd's format: the member's discovery client retries.
	got := do(t, srv, "GET", "/etcd/41f07d10ab835b22071a32d5c1b75a6d/_config/size", nil)
	assert.Equal(t, 502, got.status)
	var e Error
	require.NoError(t, json.Unmarshal([]byte(got.body), &e))
	assert.Equal(t, codeRaftInternal, e.Code)
}

func TestNewProxyConfig(t *testing.T) {
	tests := []struct {
		name     string
		cfg      ProxyConfig
		wantEtcd string
		wantErr  bool
	}{
		{"host:port means http", ProxyConfig{Endpoint: "127.0.0.1:2379", BaseURL: "http://m"}, "http://127.0.0.1:2379", false},
		{"full URL", ProxyConfig{Endpoint: "https://etcd:2379/", BaseURL: "http://m"}, "https://etcd:2379", false},
		{"no endpoint", ProxyConfig{BaseURL: "http://m"}, "", true},
		{"no base", ProxyConfig{Endpoint: "127.0.0.1:2379"}, "", true},
		{"bad default size", ProxyConfig{Endpoint: "127.0.0.1:2379", BaseURL: "http://m", DefaultSize: 200}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewProxy(tt.cfg)
			if tt.wantErr {
				assert.ErrorIs(t, err, ErrConfig)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantEtcd, p.etcd.String())
			assert.Equal(t, "http://m/etcd/t", p.URL("t"))
		})
	}
}
