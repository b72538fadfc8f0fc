// Package proctest is the kit of the tests that run the real binaries
// (mayu, mayuctl, infopusher, dnsmasq, etcd, git) and of the load tools
// that drive a real mayu: building the binaries, free loopback ports,
// process output, the loopback config.yaml, starting and stopping a mayu,
// HTTP and git helpers, and the skip-or-fail rule of MAYU_E2E. Only tests
// and tools import it; netlab (network namespaces) is its root-only part.
package proctest

import (
	"bytes"
	"fmt"
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

// Tail returns the last n bytes of the output so far (all of it if
// shorter), for a failure message.
func (o *Output) Tail(n int) string {
	s := o.String()
	return s[max(0, len(s)-n):]
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

// PickPort returns a TCP port on 127.0.0.1 that was free a moment ago,
// never the same one twice in this process: the caller's child binds it
// later, so the kernel alone could hand it out again meanwhile.
func PickPort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if !ports[p] {
			ports[p] = true
			return p, nil
		}
	}
	return 0, fmt.Errorf("no unused loopback port in 100 tries")
}

// FreePort is PickPort for a test: it fails t when no port is found.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := PickPort()
	if err != nil {
		t.Fatalf("proctest: free port: %v", err)
	}
	return p
}
