package api

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/proctest"
	"mayu/pkg/render"
)

var accessLine = regexp.MustCompile(`(?m)^.* msg=request method=(\S+) path=(\S+) status=(\d+) .*$`)

// TestAccessLogStatusIsTheSentStatus sends requests that end every way a
// request can end, over HTTP to the real echo server, and checks that the
// access log's status is the one the client got.
func TestAccessLogStatusIsTheSentStatus(t *testing.T) {
	bigBody := `{"Serial":"` + strings.Repeat("a", 2<<20) + `"}`
	tests := []struct {
		name, method, path, body string
		chunked                  bool // no Content-Length: the body limit trips while reading
		setup                    func(e *env)
		want                     int
	}{
		{name: "welcome", method: "GET", path: "/", want: 200},
		{name: "static file HEAD", method: "HEAD", path: "/index.html", want: 200},
		{name: "final config", method: "POST", path: "/final-cloud-config.yaml", body: facts, want: 200},
		{name: "range", method: "GET", path: "/images/m1/install_image.bin.bz2", want: 206, setup: registerM1},
		{name: "admin accepted", method: "PUT", path: "/admin/host/m1/set_provider_id", body: `{"ProviderId":"r7"}`, want: 202, setup: registerM1},
		{name: "final config not JSON", method: "POST", path: "/final-cloud-config.yaml", body: "{", want: 400},
		{name: "final config bad serial", method: "POST", path: "/final-cloud-config.yaml", body: `{"Serial":"../../etc"}`, want: 400},
		{name: "bad serial in path", method: "GET", path: "/first-stage-script/..%2Fx", want: 400},
		{name: "wrong final-config flavour", method: "POST", path: "/final-ignition-config.json", body: facts, want: 404},
		{name: "unknown host", method: "PUT", path: "/admin/host/nobody/set_state", body: `{"State":"configured"}`, want: 404},
		{name: "no such file", method: "GET", path: "/nothing-here", want: 404},
		{name: "no such file HEAD", method: "HEAD", path: "/nothing-here", want: 404},
		{name: "unknown route", method: "PUT", path: "/no/such/route", body: "{}", want: 404},
		{name: "OPTIONS answered by the router", method: "OPTIONS", path: "/admin/hosts", want: 204},
		{name: "unknown method", method: "PROPFIND", path: "/admin/hosts", want: 405},
		{name: "forbidden transition", method: "PUT", path: "/admin/host/m1/set_installed", want: 409, setup: registerM1},
		{name: "final config of a running host", method: "POST", path: "/final-cloud-config.yaml", body: facts, want: 409,
			setup: func(e *env) {
				require.Equal(e.t, 200, e.do("POST", "/final-cloud-config.yaml", facts).Code)
				s := "/admin/host/0800278e158a-0/"
				require.Equal(e.t, 202, e.do("PUT", s+"set_installed", "").Code)
				require.Equal(e.t, 202, e.do("PUT", s+"boot_complete", "").Code)
			}},
		{name: "body over the limit", method: "POST", path: "/final-cloud-config.yaml", body: bigBody, want: 413},
		{name: "chunked body over the limit", method: "POST", path: "/final-cloud-config.yaml", body: bigBody, chunked: true, want: 413},
		{name: "renderer fails", method: "POST", path: "/final-cloud-config.yaml", body: facts, want: 500,
			setup: func(e *env) { e.render.err = fmt.Errorf("%w: line 3: bad", render.ErrRender) }},
		{name: "renderer panics", method: "POST", path: "/final-cloud-config.yaml", body: facts, want: 500,
			setup: func(e *env) { e.render.panics = true }},
		{name: "address range full", method: "GET", path: "/first-stage-script/third", want: 503,
			setup: func(e *env) {
				for _, s := range []string{"first", "second"} {
					require.Equal(e.t, 200, e.do("GET", "/first-stage-script/"+s, "").Code)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &proctest.Output{} // written by the server's goroutines, read by the test
			logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			e := newEnvWithRange(t, "192.168.2.22", func(c *envConfig) { c.api.Logger = logger })
			if tt.setup != nil {
				tt.setup(e)
			}
			before := len(accessLine.FindAllString(logs.String(), -1))
			srv := httptest.NewServer(e.srv.Handler())
			defer srv.Close()

			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
				if tt.chunked {
					body = io.MultiReader(body) // hides the length from net/http
				}
			}
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, body)
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+e.tokens.admin)
			if tt.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			if tt.path == "/images/m1/install_image.bin.bz2" {
				req.Header.Set("Range", "bytes=10-14")
			}
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			require.Equal(t, tt.want, resp.StatusCode, "the answer")

			// The line is written once the handler returns, which may be
			// just after the client has its answer.
			var lines [][]string
			require.Eventually(t, func() bool {
				lines = accessLine.FindAllStringSubmatch(logs.String(), -1)
				return len(lines) > before
			}, 5*time.Second, 5*time.Millisecond, "no access log line:\n%s", logs.String())
			require.Len(t, lines, before+1, "one line per request:\n%s", logs.String())
			line := lines[before]
			assert.Equal(t, tt.method, line[1])
			assert.Equal(t, req.URL.Path, line[2])
			assert.Equal(t, strconv.Itoa(resp.StatusCode), line[3], "logged status, in %q", line[0])
		})
	}
}

func registerM1(e *env) {
	require.Equal(e.t, 200, e.do("GET", "/first-stage-script/m1", "").Code)
}
