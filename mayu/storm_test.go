package main

// Bad input at volume against the real binary: thousands of malformed,
// oversized, hostile and slow requests, concurrently. The daemon must keep
// answering with 4xx, never crash, never 5xx on input alone, and never
// write a file outside its cluster directory.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/tools/storm"
)

// filesOutside lists every file under dir except those under skip, with
// size and modification time.
func filesOutside(t *testing.T, dir, skip string) map[string]string {
	t.Helper()
	m := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		m[p] = fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		return nil
	}))
	return m
}

// hostileRequest builds one bad request: path, method, body.
func hostileRequest(rng *rand.Rand) (method, rawPath, body string) {
	garbage := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return string(b)
	}
	enc := func(s string) string {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			fmt.Fprintf(&b, "%%%02X", s[i])
		}
		return b.String()
	}
	serials := []string{
		enc(garbage(1 + rng.IntN(40))),                // any byte, percent-encoded
		"%FF%FE%FD",                                   // invalid UTF-8
		"%C3%28",                                      // invalid UTF-8 sequence
		strings.Repeat("a", 129),                      // one over the limit
		strings.Repeat("b", 4000+rng.IntN(4000)),      // huge
		"..%2F..%2F..%2Ftmp%2Fmayu-escape",            // traversal
		"%2E%2E",                                      // ..
		".hidden",                                     // hidden dir
		"cluster.json",                                // reserved
		"a%00b",                                       // NUL
		"%E2%80%AE" + "evil",                          // RTL override
		"valid-" + fmt.Sprint(rng.IntN(50)),           // fine, for contrast
		"UPPER-" + fmt.Sprint(rng.IntN(50)),           // normalized to lower
		"x" + strings.Repeat("%20", 3) + "y",          // spaces
		"CON", "nul", "-dash", "a:b", "%C0%AE%C0%AE/", // overlong dots
	}
	serial := serials[rng.IntN(len(serials))]
	bodies := []string{
		"",
		garbage(rng.IntN(300)),
		`{"Serial":"` + garbage(20) + `","NetDevs":[{"Name":"eth0","MacAddress":"` + garbage(17) + `"}]}`,
		`{"Serial":"valid-` + fmt.Sprint(rng.IntN(50)) + `","NetDevs":[{"Name":"eth0","MacAddress":"02:00:00:00:00:` + fmt.Sprintf("%02x", rng.IntN(256)) + `"}],"ConnectedNIC":"` + garbage(10) + `"}`,
		strings.Repeat("[", 10000+rng.IntN(50000)),                 // deep nesting
		`{"Overrides":{"CoreOSVersion":"../../../../tmp/escape"}}`, // a path in a value
		`{"Overrides":{"a":` + strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat("}", 5000) + `}}`,
		`{"State":"` + garbage(8) + `"}`,
		`{"FleetMetadata":["` + strings.Repeat("m", 100000) + `"]}`, // large but under the limit
		`{"Cabinet":1e999}`,
		`{"IPMIAddr":"` + garbage(30) + `"}`,
		strings.Repeat("x", 1<<20+1+rng.IntN(1000)), // over the body limit
	}
	body = bodies[rng.IntN(len(bodies))]
	routes := []string{"set_installed", "boot_complete", "set_metadata", "set_provider_id", "set_ipmi_addr",
		"set_cabinet", "set_state", "set_etcd_cluster_token", "override", "mark_fresh", enc(garbage(5))}
	switch rng.IntN(9) {
	case 0:
		return http.MethodGet, "/first-stage-script/" + serial, ""
	case 1:
		return http.MethodPost, "/final-cloud-config.yaml", body
	case 2, 3:
		return http.MethodPut, "/admin/host/" + serial + "/" + routes[rng.IntN(len(routes))], body
	case 4:
		return http.MethodGet, "/images/" + serial + "/install_image.bin.bz2", ""
	case 5:
		return http.MethodGet, "/images/" + serial + "/qemu/" + enc(garbage(10)), ""
	case 6:
		return []string{http.MethodGet, http.MethodPut, http.MethodDelete}[rng.IntN(3)], "/etcd/" + serial + "/" + enc(garbage(6)), body
	case 7:
		return http.MethodGet, "/yochu/" + serial + "/../../" + serial, ""
	default:
		return []string{http.MethodPost, http.MethodDelete, http.MethodPatch, "PROPFIND"}[rng.IntN(4)], "/" + serial, body
	}
}

func TestBadInputAtVolume(t *testing.T) {
	const (
		requests    = 3000
		concurrency = 16
	)
	dir := t.TempDir()
	port := proctest.FreePort(t)
	args := crashArgs(t, dir, port)
	cluster := filepath.Join(dir, "cluster")
	p := startProc(t, port, args)
	before := filesOutside(t, dir, cluster)

	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		fives    []string
	)
	client := storm.NewClient(concurrency)
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for range next {
				method, raw, body := hostileRequest(rng)
				req, err := http.NewRequest(method, p.Base+"/", strings.NewReader(body))
				if err != nil {
					continue
				}
				req.URL.Opaque = raw // sent as is, not re-escaped
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				resp, err := client.Do(req.WithContext(ctx))
				code := 0
				if err == nil {
					b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
					resp.Body.Close()
					code = resp.StatusCode
					if code >= 500 {
						mu.Lock()
						fives = append(fives, fmt.Sprintf("%s %.80s -> %d %.200s", method, raw, code, b))
						mu.Unlock()
					}
				}
				cancel()
				mu.Lock()
				statuses[code]++
				mu.Unlock()
			}
		}(w)
	}
	for i := 0; i < requests; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Logf("statuses: %v", statuses)
	assert.Empty(t, fives, "no 5xx for bad input")
	// A transport error is the server closing on a request it cannot
	// parse or a body over the limit: allowed, but not for most requests.
	assert.Less(t, statuses[0], requests/10, "connection-level failures")

	// Still alive and serving, and the storm of a real machine works.
	code, body := proctest.Do(t, nil, http.MethodGet, p.Base+"/", "")
	require.Equal(t, 200, code, body)
	for step := 0; step < 4; step++ {
		m, u, b := lifeCycleStep(p.Base, "after-", 0, step)
		code, body := proctest.Do(t, nil, m, u, b)
		require.Contains(t, []int{200, 202}, code, body)
	}
	p.Kill()

	assert.Equal(t, before, filesOutside(t, dir, cluster), "nothing written outside the cluster directory")
	entries, err := os.ReadDir(cluster)
	require.NoError(t, err)
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			n, err := host.NormalizeSerial(e.Name())
			assert.NoError(t, err, "host directory %q", e.Name())
			assert.Equal(t, n, e.Name())
		}
	}
	parseAllRecords(t, cluster)
	gitClean(t, cluster)
}

func TestOversizedBodiesAre413(t *testing.T) {
	dir := t.TempDir()
	port := proctest.FreePort(t)
	p := startProc(t, port, crashArgs(t, dir, port))
	for step := 0; step < 2; step++ {
		m, u, b := lifeCycleStep(p.Base, "big-", 0, step)
		code, body := proctest.Do(t, nil, m, u, b)
		require.Equal(t, 200, code, body)
	}
	before, err := storm.FetchHosts(context.Background(), p.AdminClient(), p.Base)
	require.NoError(t, err)
	huge := `{"Serial":"big-000000","ConnectedNIC":"` + strings.Repeat("x", 2<<20) + `"}`
	for _, r := range []struct{ method, path string }{
		{http.MethodPost, "/final-cloud-config.yaml"},
		{http.MethodPut, "/admin/host/big-000000/override"},
		{http.MethodPut, "/admin/host/big-000000/boot_complete"},
		{http.MethodPut, "/admin/host/big-000000/set_metadata"},
		{http.MethodPut, "/etcd/new"},
	} {
		code, body := proctest.Do(t, nil, r.method, p.Base+r.path, huge)
		assert.Equal(t, http.StatusRequestEntityTooLarge, code, "%s %s: %.200s", r.method, r.path, body)
		assert.LessOrEqual(t, strings.Count(body, "\n"), 1, "one-line reason")
	}
	// Without Content-Length (chunked), the limit holds too.
	req, err := http.NewRequest(http.MethodPut, p.Base+"/admin/host/big-000000/override", io.MultiReader(
		strings.NewReader(`{"Overrides":{"k":"`), strings.NewReader(strings.Repeat("y", 3<<20)), strings.NewReader(`"}}`)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.AdminClient().Do(req) // past the credential check, to the body limit
	if err == nil {
		assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
		resp.Body.Close()
	}
	after, err := storm.FetchHosts(context.Background(), p.AdminClient(), p.Base)
	require.NoError(t, err)
	assert.Equal(t, before, after, "no record changed")

	// A request line far over any sane length is refused, not served.
	code, _ := proctest.Do(t, nil, http.MethodGet, p.Base+"/first-stage-script/"+strings.Repeat("s", 2<<20), "")
	assert.Contains(t, []int{400, 414, 431}, code)
	t.Logf("a 2 MiB request line: %d", code)
	code, _ = proctest.Do(t, nil, http.MethodGet, p.Base+"/", "")
	assert.Equal(t, 200, code)
}

// TestSlowClientsAreCutOff holds many connections that send their headers
// a byte at a time. The server's header timeout (10s) must close them,
// and other machines must be served meanwhile.
func TestSlowClientsAreCutOff(t *testing.T) {
	const slow = 200
	dir := t.TempDir()
	port := proctest.FreePort(t)
	p := startProc(t, port, crashArgs(t, dir, port))
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	type result struct {
		closedAfter time.Duration
		err         error
	}
	results := make(chan result, slow)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	for i := 0; i < slow; i++ {
		go func() {
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				results <- result{err: err}
				return
			}
			defer conn.Close()
			go func() { <-ctx.Done(); conn.Close() }()
			// Start a request, then trickle a header forever.
			if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")); err != nil {
				results <- result{err: err}
				return
			}
			closed := make(chan time.Duration, 1)
			go func() {
				_, _ = io.Copy(io.Discard, bufio.NewReader(conn))
				closed <- time.Since(start)
			}()
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case d := <-closed:
					results <- result{closedAfter: d}
					return
				case <-tick.C:
					if _, err := conn.Write([]byte("a")); err != nil {
						results <- result{closedAfter: time.Since(start)}
						return
					}
				case <-ctx.Done():
					results <- result{err: ctx.Err()}
					return
				}
			}
		}()
	}
	// While they hang on, a machine registers and gets its config.
	time.Sleep(time.Second)
	for step := 0; step < 4; step++ {
		m, u, b := lifeCycleStep(p.Base, "amid-slow-", 0, step)
		code, body := proctest.Do(t, nil, m, u, b)
		require.Contains(t, []int{200, 202}, code, body)
	}
	var longest time.Duration
	for i := 0; i < slow; i++ {
		r := <-results
		require.NoError(t, r.err, "every slow client is cut off by the server within 60s")
		longest = max(longest, r.closedAfter)
	}
	t.Logf("%d slow clients cut off, the last after %v (ReadHeaderTimeout is 10s)", slow, longest.Round(100*time.Millisecond))
	code, body := proctest.Do(t, nil, http.MethodGet, p.Base+"/", "")
	require.Equal(t, 200, code, body)
}
