package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// serve mounts svc under /etcd on a fresh echo and an httptest server.
func serve(t *testing.T, svc Service) *httptest.Server {
	t.Helper()
	e := echo.New()
	svc.Register(e.Group("/etcd"))
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv
}

func newInternal(t *testing.T, dir string, mod ...func(*InternalConfig)) *Internal {
	t.Helper()
	cfg := InternalConfig{Dir: dir, BaseURL: "http://mayu.test:4080/", DefaultSize: 3}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := NewInternal(cfg)
	require.NoError(t, err)
	return s
}

type answer struct {
	status int
	index  string
	body   string
}

// do sends one request the way etcd's client does (form body on PUT).
func do(t *testing.T, srv *httptest.Server, method, path string, form url.Values) answer {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, srv.URL+path, body)
	require.NoError(t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{status: resp.StatusCode, index: resp.Header.Get("X-Etcd-Index"), body: strings.TrimSpace(string(b))}
}

func TestNewEndpoint(t *testing.T) {
	s := newInternal(t, t.TempDir())
	srv := serve(t, s)
	urlRe := regexp.MustCompile(`^http://mayu\.test:4080/etcd/([0-9a-f]{32})$`)
	tests := []struct {
		name, size string
		wantStatus int
		wantSize   string
	}{
		{"default size", "", 200, "3"},
		{"explicit size", "5", 200, "5"},
		{"zero", "0", 400, ""},
		{"negative", "-1", 400, ""},
		{"not a number", "three", 400, ""},
		{"too big", "100", 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form := url.Values{}
			if tt.size != "" {
				form.Set("size", tt.size)
			}
			a := do(t, srv, http.MethodPut, "/etcd/new", form)
			require.Equal(t, tt.wantStatus, a.status, a.body)
			if tt.wantStatus != 200 {
				assert.Contains(t, a.body, "bad cluster size")
				return
			}
			m := urlRe.FindStringSubmatch(a.body)
			require.NotNil(t, m, "answer %q", a.body)
			got := do(t, srv, http.MethodGet, "/etcd/"+m[1]+"/_config/size", nil)
			require.Equal(t, 200, got.status)
			var r Response
			require.NoError(t, json.Unmarshal([]byte(got.body), &r))
			assert.Equal(t, tt.wantSize, *r.Node.Value)
		})
	}
}

// TestProtocol walks the exact exchange etcd 3.4's discovery client has
// with the service, then the rest of the keys protocol. Expected bodies are
// what a real etcd 3.4 with --enable-v2 answers for the same requests, with
// its indexes (the registry here starts at index 1).
func TestProtocol(t *testing.T) {
	s := newInternal(t, t.TempDir())
	srv := serve(t, s)
	tok, err := s.NewToken(context.Background(), 3)
	require.NoError(t, err)
	k := "/_etcd/registry/" + tok
	p := "/etcd/" + tok
	v := func(s string) url.Values { return url.Values{"value": {s}} }

	steps := []struct {
		name, method, path string
		form               url.Values
		want               answer
	}{
		{"size", "GET", p + "/_config/size?quorum=false&recursive=false&sorted=false", nil,
			answer{200, "1", `{"action":"get","node":{"key":"` + k + `/_config/size","value":"3","modifiedIndex":1,"createdIndex":1}}`}},
		{"empty member list hides _config", "GET", p + "?quorum=false&recursive=false&sorted=false", nil,
			answer{200, "1", `{"action":"get","node":{"key":"` + k + `","dir":true,"modifiedIndex":1,"createdIndex":1}}`}},
		{"register m1", "PUT", p + "/8e9e05c52164694d?prevExist=false", v("m1=http://127.0.0.1:2380"),
			answer{201, "2", `{"action":"create","node":{"key":"` + k + `/8e9e05c52164694d","value":"m1=http://127.0.0.1:2380","modifiedIndex":2,"createdIndex":2}}`}},
		{"duplicate id", "PUT", p + "/8e9e05c52164694d?prevExist=false", v("m1=http://127.0.0.1:2380"),
			answer{412, "2", `{"errorCode":105,"message":"Key already exists","cause":"` + k + `/8e9e05c52164694d","index":2}`}},
		{"self appears (createSelf's watch)", "GET", p + "/8e9e05c52164694d?recursive=false&wait=true&waitIndex=2", nil,
			answer{200, "2", `{"action":"create","node":{"key":"` + k + `/8e9e05c52164694d","value":"m1=http://127.0.0.1:2380","modifiedIndex":2,"createdIndex":2}}`}},
		{"register m2 with set", "PUT", p + "/aa", v("m2=http://127.0.0.1:2382"),
			answer{201, "3", `{"action":"set","node":{"key":"` + k + `/aa","value":"m2=http://127.0.0.1:2382","modifiedIndex":3,"createdIndex":3}}`}},
		{"member list", "GET", p + "?recursive=false&sorted=true", nil,
			answer{200, "3", `{"action":"get","node":{"key":"` + k + `","dir":true,"nodes":[` +
				`{"key":"` + k + `/8e9e05c52164694d","value":"m1=http://127.0.0.1:2380","modifiedIndex":2,"createdIndex":2},` +
				`{"key":"` + k + `/aa","value":"m2=http://127.0.0.1:2382","modifiedIndex":3,"createdIndex":3}],"modifiedIndex":1,"createdIndex":1}}`}},
		{"recursive watch from the past sees m1", "GET", p + "?recursive=true&wait=true&waitIndex=2", nil,
			answer{200, "3", `{"action":"create","node":{"key":"` + k + `/8e9e05c52164694d","value":"m1=http://127.0.0.1:2380","modifiedIndex":2,"createdIndex":2}}`}},
		{"set replaces", "PUT", p + "/aa", v("x"),
			answer{200, "4", `{"action":"set","node":{"key":"` + k + `/aa","value":"x","modifiedIndex":4,"createdIndex":4},"prevNode":{"key":"` + k + `/aa","value":"m2=http://127.0.0.1:2382","modifiedIndex":3,"createdIndex":3}}`}},
		{"update keeps createdIndex", "PUT", p + "/aa?prevExist=true", v("y"),
			answer{200, "5", `{"action":"update","node":{"key":"` + k + `/aa","value":"y","modifiedIndex":5,"createdIndex":4},"prevNode":{"key":"` + k + `/aa","value":"x","modifiedIndex":4,"createdIndex":4}}`}},
		{"compare failed", "PUT", p + "/aa?prevValue=zz", v("c"),
			answer{412, "5", `{"errorCode":101,"message":"Compare failed","cause":"[zz != y]","index":5}`}},
		{"compare and swap", "PUT", p + "/aa?prevValue=y&prevIndex=5", v("z"),
			answer{200, "6", `{"action":"compareAndSwap","node":{"key":"` + k + `/aa","value":"z","modifiedIndex":6,"createdIndex":4},"prevNode":{"key":"` + k + `/aa","value":"y","modifiedIndex":5,"createdIndex":4}}`}},
		{"delete", "DELETE", p + "/aa", nil,
			answer{200, "7", `{"action":"delete","node":{"key":"` + k + `/aa","modifiedIndex":7,"createdIndex":4},"prevNode":{"key":"` + k + `/aa","value":"z","modifiedIndex":6,"createdIndex":4}}`}},
		{"deleted key", "GET", p + "/aa", nil,
			answer{404, "7", `{"errorCode":100,"message":"Key not found","cause":"` + k + `/aa","index":7}`}},
		{"delete missing", "DELETE", p + "/aa", nil,
			answer{404, "7", `{"errorCode":100,"message":"Key not found","cause":"` + k + `/aa","index":7}`}},
		{"get _config directly", "GET", p + "/_config", nil,
			answer{200, "7", `{"action":"get","node":{"key":"` + k + `/_config","dir":true,"nodes":[{"key":"` + k + `/_config/size","value":"3","modifiedIndex":1,"createdIndex":1}],"modifiedIndex":1,"createdIndex":1}}`}},
		{"nested key creates its directory", "PUT", p + "/d/x", v("1"),
			answer{201, "8", `{"action":"set","node":{"key":"` + k + `/d/x","value":"1","modifiedIndex":8,"createdIndex":8}}`}},
		{"recursive listing", "GET", p + "?recursive=true", nil,
			answer{200, "8", `{"action":"get","node":{"key":"` + k + `","dir":true,"nodes":[` +
				`{"key":"` + k + `/8e9e05c52164694d","value":"m1=http://127.0.0.1:2380","modifiedIndex":2,"createdIndex":2},` +
				`{"key":"` + k + `/d","dir":true,"nodes":[{"key":"` + k + `/d/x","value":"1","modifiedIndex":8,"createdIndex":8}],"modifiedIndex":8,"createdIndex":8}],"modifiedIndex":1,"createdIndex":1}}`}},
		{"flat listing shows the directory without children", "GET", p, nil,
			answer{200, "8", `{"action":"get","node":{"key":"` + k + `","dir":true,"nodes":[` +
				`{"key":"` + k + `/8e9e05c52164694d","value":"m1=http://127.0.0.1:2380","modifiedIndex":2,"createdIndex":2},` +
				`{"key":"` + k + `/d","dir":true,"modifiedIndex":8,"createdIndex":8}],"modifiedIndex":1,"createdIndex":1}}`}},
		{"unknown token", "GET", "/etcd/0123456789abcdef0123456789abcdef/_config/size", nil,
			answer{404, "8", `{"errorCode":100,"message":"Key not found","cause":"/_etcd/registry/0123456789abcdef0123456789abcdef","index":8}`}},
		{"register under unknown token", "PUT", "/etcd/0123456789abcdef0123456789abcdef/m?prevExist=false", v("x"),
			answer{404, "8", `{"errorCode":100,"message":"Key not found","cause":"/_etcd/registry/0123456789abcdef0123456789abcdef","index":8}`}},
		{"wait on unknown token", "GET", "/etcd/0123456789abcdef0123456789abcdef?wait=true", nil,
			answer{404, "8", `{"errorCode":100,"message":"Key not found","cause":"/_etcd/registry/0123456789abcdef0123456789abcdef","index":8}`}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			got := do(t, srv, st.method, st.path, st.form)
			assert.Equal(t, st.want.status, got.status)
			assert.Equal(t, st.want.index, got.index, "X-Etcd-Index")
			assert.JSONEq(t, st.want.body, got.body)
		})
	}
}

func TestProtocolErrors(t *testing.T) {
	s := newInternal(t, t.TempDir())
	srv := serve(t, s)
	tok, err := s.NewToken(context.Background(), 3)
	require.NoError(t, err)
	p := "/etcd/" + tok
	k := "/_etcd/registry/" + tok
	require.Equal(t, 201, do(t, srv, "PUT", p+"/leaf", url.Values{"value": {"v"}}).status)
	v := url.Values{"value": {"v"}}

	tests := []struct {
		name, method, path string
		form               url.Values
		wantStatus, code   int
		cause              string
	}{
		{"update missing", "PUT", p + "/nope?prevExist=true", v, 404, 100, k + "/nope"},
		{"compare on missing", "PUT", p + "/nope?prevValue=a", v, 404, 100, k + "/nope"},
		{"put on the token directory", "PUT", p, v, 403, 102, k},
		{"put on a directory", "PUT", p + "/_config", v, 403, 102, k + "/_config"},
		{"put below a value", "PUT", p + "/leaf/x", v, 403, 104, k + "/leaf"},
		{"delete the token directory", "DELETE", p + "?recursive=true", nil, 403, 102, k},
		{"delete a directory", "DELETE", p + "/_config", nil, 403, 102, k + "/_config"},
		{"compare and delete fails", "DELETE", p + "/leaf?prevIndex=1", nil, 412, 101, "[1 != 2]"},
		{"bad prevExist", "PUT", p + "/x?prevExist=maybe", v, 400, 209, `invalid value for "prevExist"`},
		{"bad prevIndex", "PUT", p + "/x?prevIndex=abc", v, 400, 203, `invalid value for "prevIndex"`},
		{"bad waitIndex", "GET", p + "?wait=true&waitIndex=abc", nil, 400, 203, `invalid value for "waitIndex"`},
		{"ttl unsupported", "PUT", p + "/x?ttl=5", v, 400, 209, "ttl is not supported by this discovery service"},
		{"dir unsupported", "PUT", p + "/x?dir=true", nil, 400, 209, "dir is not supported by this discovery service"},
		{"dot dot", "GET", p + "/../x", nil, 400, 209, `invalid key "../x"`},
		{"escaped dot dot", "GET", p + "/%2e%2e/x", nil, 400, 209, `invalid key "../x"`},
		{"odd characters", "PUT", p + "/a%20b", v, 400, 209, `invalid key "a b"`},
		{"value too long", "PUT", p + "/x", url.Values{"value": {strings.Repeat("a", maxValueLen+1)}}, 400, 209, "value is longer than 4096 bytes"},
		{"token with a dot", "GET", "/etcd/a.b", nil, 404, 100, "/_etcd/registry/a.b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := do(t, srv, tt.method, tt.path, tt.form)
			require.Equal(t, tt.wantStatus, got.status, got.body)
			var e Error
			require.NoError(t, json.Unmarshal([]byte(got.body), &e), got.body)
			assert.Equal(t, tt.code, e.Code)
			assert.Equal(t, tt.cause, e.Cause)
			assert.NotEmpty(t, got.index, "X-Etcd-Index")
		})
	}
	// None of the refused requests changed anything.
	assert.Equal(t, uint64(2), s.currentIndex())
}

// TestWaitForFutureEvent is the member waiting for its peers: the answer
// comes when the next member registers, and only then.
func TestWaitForFutureEvent(t *testing.T) {
	s := newInternal(t, t.TempDir())
	srv := serve(t, s)
	tok, err := s.NewToken(context.Background(), 3)
	require.NoError(t, err)
	p := "/etcd/" + tok

	type result struct {
		a   answer
		err error
	}
	headers := make(chan http.Header, 1)
	done := make(chan result, 1)
	go func() {
		resp, err := srv.Client().Get(srv.URL + p + "?recursive=true&wait=true&waitIndex=2")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		headers <- resp.Header
		b, err := io.ReadAll(resp.Body)
		done <- result{a: answer{resp.StatusCode, resp.Header.Get("X-Etcd-Index"), strings.TrimSpace(string(b))}, err: err}
	}()

	// Like etcd, the headers come before the event.
	select {
	case h := <-headers:
		assert.Equal(t, "1", h.Get("X-Etcd-Index"))
	case r := <-done:
		t.Fatalf("wait answered before any change: %+v", r)
	case <-time.After(10 * time.Second):
		t.Fatal("no headers from a waiting request within 10s")
	}
	// A hidden key below the watched directory does not wake it.
	require.Equal(t, 200, do(t, srv, "PUT", p+"/_config/size", url.Values{"value": {"3"}}).status)
	require.Equal(t, 201, do(t, srv, "PUT", p+"/m1?prevExist=false", url.Values{"value": {"m1=http://a"}}).status)
	select {
	case r := <-done:
		require.NoError(t, r.err)
		assert.Equal(t, 200, r.a.status)
		assert.JSONEq(t, `{"action":"create","node":{"key":"/_etcd/registry/`+tok+`/m1","value":"m1=http://a","modifiedIndex":3,"createdIndex":3}}`, r.a.body)
	case <-time.After(10 * time.Second):
		t.Fatal("wait not answered within 10s of the registration")
	}
}

// TestWaitEnds: a wait without an event ends at MaxWait with an empty 200
// (etcd's client asks again), and when the client goes away.
func TestWaitEnds(t *testing.T) {
	s := newInternal(t, t.TempDir(), func(c *InternalConfig) { c.MaxWait = 50 * time.Millisecond })
	srv := serve(t, s)
	tok, err := s.NewToken(context.Background(), 3)
	require.NoError(t, err)

	t.Run("max wait", func(t *testing.T) {
		got := do(t, srv, "GET", "/etcd/"+tok+"?wait=true&recursive=true", nil)
		assert.Equal(t, answer{200, "1", ""}, got)
	})
	t.Run("shutdown", func(t *testing.T) {
		long := newInternal(t, t.TempDir(), func(c *InternalConfig) { c.MaxWait = time.Hour })
		srv := serve(t, long)
		tok, err := long.NewToken(context.Background(), 3)
		require.NoError(t, err)
		resp, err := srv.Client().Get(srv.URL + "/etcd/" + tok + "?wait=true")
		require.NoError(t, err) // headers are there, the wait is on
		defer resp.Body.Close()
		long.Shutdown()
		body := make(chan string, 1)
		go func() { b, _ := io.ReadAll(resp.Body); body <- string(b) }()
		select {
		case b := <-body:
			assert.Empty(t, b)
		case <-time.After(10 * time.Second):
			t.Fatal("wait still running 10s after Shutdown")
		}
	})
	t.Run("client gone", func(t *testing.T) {
		long := newInternal(t, t.TempDir(), func(c *InternalConfig) { c.MaxWait = time.Hour })
		tok, err := long.NewToken(context.Background(), 3)
		require.NoError(t, err)
		var wg sync.WaitGroup
		e := echo.New()
		long.Register(e.Group("/etcd"))
		wrapped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			wg.Add(1)
			defer wg.Done()
			e.ServeHTTP(w, r)
		})
		srv := httptest.NewServer(wrapped)
		defer srv.Close()
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/etcd/"+tok+"?wait=true", nil)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		assert.Equal(t, 200, resp.StatusCode)
		cancel()
		resp.Body.Close()
		handlerDone := make(chan struct{})
		go func() { wg.Wait(); close(handlerDone) }()
		select {
		case <-handlerDone:
		case <-time.After(10 * time.Second):
			t.Fatal("waiting handler still running 10s after its client left")
		}
	})
}

// TestRestartLosesNothing: a new Internal on the same directory serves the
// same registries, indexes and history; a member that registered before
// the restart is still first, and waits across the restart see every
// registration made since.
func TestRestartLosesNothing(t *testing.T) {
	dir := t.TempDir()
	a := newInternal(t, dir)
	srvA := serve(t, a)
	tok, err := a.NewToken(context.Background(), 3)
	require.NoError(t, err)
	p := "/etcd/" + tok
	require.Equal(t, 201, do(t, srvA, "PUT", p+"/m1?prevExist=false", url.Values{"value": {"m1=http://a"}}).status)
	before := do(t, srvA, "GET", p+"?recursive=true", nil)
	srvA.Close()

	b := newInternal(t, dir)
	srvB := serve(t, b)
	assert.Equal(t, before, do(t, srvB, "GET", p+"?recursive=true", nil))
	assert.JSONEq(t, `{"action":"create","node":{"key":"/_etcd/registry/`+tok+`/m1","value":"m1=http://a","modifiedIndex":2,"createdIndex":2}}`,
		do(t, srvB, "GET", p+"?wait=true&recursive=true&waitIndex=2", nil).body)
	got := do(t, srvB, "PUT", p+"/m2?prevExist=false", url.Values{"value": {"m2=http://b"}})
	require.Equal(t, 201, got.status)
	assert.Equal(t, "3", got.index, "indexes continue after the restart")
	assert.Equal(t, 412, do(t, srvB, "PUT", p+"/m1?prevExist=false", url.Values{"value": {"m1=http://a"}}).status)

	// A second token created after the restart does not reuse indexes.
	tok2, err := b.NewToken(context.Background(), 1)
	require.NoError(t, err)
	size := do(t, srvB, "GET", "/etcd/"+tok2+"/_config/size", nil)
	assert.Equal(t, "4", size.index)
}

// TestConcurrentRegistrations: members registering at once each get their
// own index; the list holds all of them; waiters all wake.
func TestConcurrentRegistrations(t *testing.T) {
	s := newInternal(t, t.TempDir())
	srv := serve(t, s)
	tok, err := s.NewToken(context.Background(), 3)
	require.NoError(t, err)
	p := "/etcd/" + tok
	const n = 16

	var wg sync.WaitGroup
	waits := make(chan answer, n)
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			// waitIndex 2 is the first registration's index, whichever it is.
			waits <- do(t, srv, "GET", p+"?wait=true&recursive=true&waitIndex=2", nil)
		}()
		go func() {
			defer wg.Done()
			a := do(t, srv, "PUT", fmt.Sprintf("%s/m%02d?prevExist=false", p, i), url.Values{"value": {fmt.Sprintf("m%02d=http://127.0.0.1:%d", i, 2380+i)}})
			assert.Equal(t, 201, a.status, a.body)
		}()
	}
	wg.Wait()
	close(waits)
	for a := range waits {
		var r Response
		require.NoError(t, json.Unmarshal([]byte(a.body), &r), a.body)
		assert.Equal(t, uint64(2), r.Node.CreatedIndex)
	}
	var r Response
	list := do(t, srv, "GET", p, nil)
	require.NoError(t, json.Unmarshal([]byte(list.body), &r))
	require.Len(t, r.Node.Nodes, n)
	seen := map[uint64]bool{}
	for _, node := range r.Node.Nodes {
		assert.False(t, seen[node.CreatedIndex], "index %d given twice", node.CreatedIndex)
		seen[node.CreatedIndex] = true
	}
	assert.Equal(t, fmt.Sprint(1+n), list.index)
}

// TestStorageFailureChangesNothing: when the registry cannot be written the
// member gets a 5xx (etcd's client retries) and nothing is half-done.
func TestStorageFailureChangesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "reg")
	s := newInternal(t, dir)
	srv := serve(t, s)
	tok, err := s.NewToken(context.Background(), 3)
	require.NoError(t, err)
	before := do(t, srv, "GET", "/etcd/"+tok, nil)

	require.NoError(t, os.Rename(dir, dir+".gone"))
	got := do(t, srv, "PUT", "/etcd/"+tok+"/m1?prevExist=false", url.Values{"value": {"x"}})
	assert.Equal(t, 500, got.status)
	assert.Contains(t, got.body, `"errorCode":300`)
	_, err = s.NewToken(context.Background(), 3)
	assert.ErrorIs(t, err, ErrStorage)

	require.NoError(t, os.Rename(dir+".gone", dir))
	assert.Equal(t, before, do(t, srv, "GET", "/etcd/"+tok, nil))
	assert.Equal(t, 201, do(t, srv, "PUT", "/etcd/"+tok+"/m1?prevExist=false", url.Values{"value": {"x"}}).status)
}

func TestEnsure(t *testing.T) {
	s := newInternal(t, t.TempDir())
	ctx := context.Background()
	const tok = "41f07d10ab835b22071a32d5c1b75a6d"
	created, err := s.Ensure(ctx, tok, 0)
	require.NoError(t, err)
	assert.True(t, created)
	created, err = s.Ensure(ctx, tok, 5)
	require.NoError(t, err)
	assert.False(t, created, "an existing registry is left alone")
	assert.Equal(t, "3", s.regs[tok].Leaves["_config/size"].Value)

	_, err = s.Ensure(ctx, "../x", 3)
	assert.ErrorIs(t, err, ErrBadToken)
	_, err = s.Ensure(ctx, "abc", 0+MaxSize+1)
	assert.ErrorIs(t, err, ErrBadSize)
	_, err = s.NewToken(ctx, -2)
	assert.ErrorIs(t, err, ErrBadSize)
}

func TestNewInternalConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  InternalConfig
	}{
		{"no dir", InternalConfig{BaseURL: "http://a"}},
		{"no base", InternalConfig{Dir: t.TempDir()}},
		{"base without scheme", InternalConfig{Dir: t.TempDir(), BaseURL: "mayu:4080"}},
		{"bad default size", InternalConfig{Dir: t.TempDir(), BaseURL: "http://a", DefaultSize: 1000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewInternal(tt.cfg)
			assert.ErrorIs(t, err, ErrConfig)
		})
	}
	s := newInternal(t, t.TempDir())
	assert.Equal(t, "http://mayu.test:4080/etcd/abc", s.URL("abc"))
}

// FuzzKeysRequest: no request, however odd, makes the protocol panic or
// answer anything but etcd's JSON; nothing outside the registry alphabet is
// ever stored.
func FuzzKeysRequest(f *testing.F) {
	f.Add("PUT", "/m1?prevExist=false", "value=m1%3Dhttp%3A%2F%2Fa")
	f.Add("GET", "?wait=true&waitIndex=1&recursive=true", "")
	f.Add("DELETE", "/m1?prevIndex=2", "")
	f.Add("PUT", "/%2e%2e/x", "value=1")
	f.Add("GET", "/_config/size?quorum=false", "")
	s, err := NewInternal(InternalConfig{Dir: f.TempDir(), BaseURL: "http://a", MaxWait: time.Millisecond})
	require.NoError(f, err)
	tok, err := s.NewToken(context.Background(), 3)
	require.NoError(f, err)
	e := echo.New()
	s.Register(e.Group("/etcd"))
	f.Fuzz(func(t *testing.T, method, rest, body string) {
		switch method {
		case "GET", "PUT", "DELETE":
		default:
			return
		}
		req, err := http.NewRequest(method, "http://a/etcd/"+tok+rest, strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: %d %s", method, rest, rec.Code, rec.Body)
		}
		if b := bytes.TrimSpace(rec.Body.Bytes()); len(b) > 0 && !json.Valid(b) {
			t.Fatalf("%s %s: not JSON: %q", method, rest, b)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for k := range s.regs[tok].Leaves {
			if validKey(k) != nil {
				t.Fatalf("stored key %q", k)
			}
		}
	})
}
