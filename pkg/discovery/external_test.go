package discovery

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeDiscoveryIO plays discovery.etcd.io: PUT /new with body size=N
// answers the new token's URL.
type fakeDiscoveryIO struct {
	gotBody, gotType, gotMethod string
	status                      int
	answer                      string
}

func (f *fakeDiscoveryIO) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/new" {
		http.NotFound(w, r)
		return
	}
	b, _ := io.ReadAll(r.Body)
	f.gotBody, f.gotType, f.gotMethod = string(b), r.Header.Get("Content-Type"), r.Method
	w.WriteHeader(f.status)
	_, _ = io.WriteString(w, f.answer)
}

func TestExternalNewToken(t *testing.T) {
	tests := []struct {
		name     string
		size     int
		status   int
		answer   string
		wantBody string
		want     string
		wantErr  error
	}{
		{"default size", 0, 200, "https://discovery.etcd.io/41f07d10ab835b22071a32d5c1b75a6d", "size=3", "41f07d10ab835b22071a32d5c1b75a6d", nil},
		{"explicit size, trailing newline", 5, 200, "http://x/abcdef\n", "size=5", "abcdef", nil},
		{"service error", 3, 500, "boom", "size=3", "", ErrUnavailable},
		{"answer without a token", 3, 200, "http://x/", "size=3", "", ErrUnavailable},
		{"bad size never sent", 100, 200, "", "", "", ErrBadSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeDiscoveryIO{status: tt.status, answer: tt.answer}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			e, err := NewExternal(ExternalConfig{URL: srv.URL + "/", Client: srv.Client()})
			require.NoError(t, err)
			tok, err := e.NewToken(context.Background(), tt.size)
			assert.Equal(t, tt.wantBody, fake.gotBody)
			if tt.wantErr != nil {
				assert.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, tok)
			assert.Equal(t, "PUT", fake.gotMethod)
			assert.Equal(t, "application/x-www-form-urlencoded", fake.gotType)
			assert.Equal(t, srv.URL+"/"+tok, e.URL(tok))
		})
	}
}

func TestExternalUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close() // nothing listens there any more
	e, err := NewExternal(ExternalConfig{URL: addr})
	require.NoError(t, err)
	_, err = e.NewToken(context.Background(), 3)
	assert.ErrorIs(t, err, ErrUnavailable)
	err = e.Check(context.Background())
	assert.ErrorIs(t, err, ErrUnavailable)
	assert.Contains(t, err.Error(), addr)
}

// TestExternalCheck: any HTTP answer is "reachable", and a redirect is not
// followed (nothing beyond the configured host is contacted).
func TestExternalCheck(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	srv := httptest.NewServer(http.RedirectHandler(other.URL, http.StatusFound))
	defer srv.Close()
	e, err := NewExternal(ExternalConfig{URL: srv.URL, Client: srv.Client()})
	require.NoError(t, err)
	require.NoError(t, e.Check(context.Background()))
	assert.Zero(t, elsewhere.Load())
}

func TestExternalServesNothing(t *testing.T) {
	e, err := NewExternal(ExternalConfig{URL: "https://discovery.etcd.io"})
	require.NoError(t, err)
	ec := echo.New()
	e.Register(ec.Group("/etcd"))
	assert.Empty(t, ec.Routes())
}

func TestNewExternalConfig(t *testing.T) {
	for _, u := range []string{"", "discovery.etcd.io", "ftp://x", "http://"} {
		_, err := NewExternal(ExternalConfig{URL: u})
		assert.ErrorIs(t, err, ErrConfig, u)
	}
	_, err := NewExternal(ExternalConfig{URL: "http://x", DefaultSize: -1})
	assert.ErrorIs(t, err, ErrConfig)
}
