// Package proctest holds what the tests that run the real binaries (mayu,
// mayuctl, infopusher, dnsmasq) share: a process-output buffer that is safe
// to read while the process writes, and a free loopback port.
package proctest

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
)

// Output collects a child process's stdout/stderr; tests read it while the
// process is still writing.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// Count returns how often sub occurs in the output so far.
func (o *Output) Count(sub string) int { return strings.Count(o.String(), sub) }

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proctest: free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
