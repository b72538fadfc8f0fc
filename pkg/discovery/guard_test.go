package discovery

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A token's _config (its size) and the token itself are changed by an
// administrator only, members register only where Member allows, and
// PUT /new is subject to New; reads are never guarded.
func TestWriteGuard(t *testing.T) {
	var admin, member, newOK bool
	s := newInternal(t, t.TempDir(), func(c *InternalConfig) {
		c.Guard = WriteGuard{
			AuthorizeConfigWrite: func(*http.Request) error {
				if admin {
					return nil
				}
				return echo.NewHTTPError(http.StatusUnauthorized, "admin only")
			},
			Member: func(*http.Request) error {
				if member {
					return nil
				}
				return errors.New("not a provisioned machine")
			},
			New: func(*http.Request) error {
				if newOK {
					return nil
				}
				return echo.NewHTTPError(http.StatusTooManyRequests, "slow down")
			},
		}
	})
	srv := serve(t, s)
	tok, err := s.NewToken(context.Background(), 3)
	require.NoError(t, err)
	p := "/etcd/" + tok
	v := url.Values{"value": {"1"}}

	cases := []struct {
		method, path string
		form         url.Values
		want         int
	}{
		{"PUT", p + "/_config/size", v, 401},
		{"PUT", p + "//_config//size", v, 401},
		{"DELETE", p + "/_config/size", nil, 401},
		{"DELETE", p + "/_config", nil, 401},
		{"DELETE", p + "?recursive=true", nil, 401},
		{"PUT", p, v, 401},
		{"PUT", p + "/abc", url.Values{"value": {"m1=http://10.0.0.1:2380"}}, 403},
		{"DELETE", p + "/abc", nil, 403},
		{"PUT", "/etcd/new", url.Values{"size": {"3"}}, 429},
		{"GET", p + "/_config/size", nil, 200},
		{"GET", p, nil, 200},
	}
	for _, c := range cases {
		a := do(t, srv, c.method, c.path, c.form)
		assert.Equal(t, c.want, a.status, "%s %s: %s", c.method, c.path, a.body)
	}
	size := do(t, srv, "GET", p+"/_config/size", nil).body
	assert.Contains(t, size, `"value":"3"`, "the size is unchanged")
	del, err := http.NewRequestWithContext(context.Background(), "DELETE", srv.URL+p+"/_config", nil)
	require.NoError(t, err)
	resp, err := srv.Client().Do(del)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, "Bearer", resp.Header.Get("WWW-Authenticate"), "a 401 names the credential it wants")

	admin, member, newOK = true, true, true
	assert.Equal(t, 200, do(t, srv, "PUT", p+"/_config/size", url.Values{"value": {"5"}}).status)
	assert.Equal(t, 201, do(t, srv, "PUT", p+"/abc", url.Values{"value": {"m1=http://10.0.0.1:2380"}}).status)
	assert.Equal(t, 200, do(t, srv, "PUT", "/etcd/new", url.Values{"size": {"3"}}).status)
}

// Without AuthorizeConfigWrite, only the host mayu runs on may change a
// token's size.
func TestConfigWritesDefaultToLoopback(t *testing.T) {
	s := newInternal(t, t.TempDir())
	e := echo.New()
	s.Register(e.Group("/etcd"))
	tok, err := s.NewToken(context.Background(), 3)
	require.NoError(t, err)
	put := func(src string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("PUT", "/etcd/"+tok+"/_config/size", strings.NewReader("value=1"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.RemoteAddr = src + ":4000"
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, r)
		return rec
	}
	rec := put("192.168.2.150")
	assert.Equal(t, 403, rec.Code)
	assert.Contains(t, rec.Body.String(), "by an administrator only")
	assert.Equal(t, 200, put("127.0.0.1").Code)
}
