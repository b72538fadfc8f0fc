package main

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"

	"mayu/pkg/proctest"
)

// TestMissingTFTPRootStopsMayu: with dnsmasq on, a --tftproot that does not
// exist stops mayu before anything starts, naming the flag and the path,
// next to every other problem of the configuration. (The loopback config
// names lo and 127.0.0.1, which exist: the TFTP root is the only problem.
// Starting dnsmasq for real would bind port 67 here; the network tests do
// that in a namespace.)
func TestMissingTFTPRootStopsMayu(t *testing.T) {
	dir := t.TempDir()
	args := slices.DeleteFunc(baseArgs(t, dir, proctest.FreePort(t)), func(a string) bool { return a == "--no-dnsmasq" })
	missing := filepath.Join(dir, "no-tftproot")
	code, out := runOnce(t, append(args, "--no-tls", "--tftproot="+missing, "--runtime-dir="+filepath.Join(dir, "run"))...)
	assert.NotEqual(t, 0, code, out)
	assert.Contains(t, out, "mayu: dnsmasq: cannot start: --tftproot "+missing+": no such file or directory")
	assert.NotContains(t, out, "mayu started")
	assert.NotContains(t, out, "dnsmasq started")
	assert.NotContains(t, out, "network.interface")
	assert.NotContains(t, out, "network.bind_addr")
}
