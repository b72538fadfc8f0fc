package main

// Process tests of config.yaml at start: the real binary lists every
// problem of a bad file with its line and exits, and starts on a Mayu 0.11
// configuration whose ip_range contains bootstrap_range, logging which
// addresses are never handed out.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/proctest"
)

func TestStartupConfigProblemsWithLines(t *testing.T) {
	dir := t.TempDir()
	// One type error, values that would inject lines or path elements, and
	// semantic errors: all in one run.
	bad := writeFile(t, dir, "bad.yaml", `default_coreos_version: ../../etc
network:
  pxe: true
  interface: "eth1\ndhcp-script=/x"
  bind_addr: 127.0.0.1
  bootstrap_range: {start: 10.9.0.100, end: 10.9.0.200}
  ip_range: {start: 10.9.0.99, end: 10.9.0.21}
  subnet_size: "24\nfoo"
profiles:
  - name: core-services
    quantity: three
    etcd_cluster_token: "a token"
  - name: core-services
    quantity: -1
    coreos_version: ../../etc
templates_env:
  ssh_authorized_keys: ["ssh-rsa AAAA\nssh-rsa EVIL"]
`)
	args := append(baseArgs(t, dir, proctest.FreePort(t)), "--no-tls", "--config="+bad)
	code, out := runOnce(t, args...)
	assert.NotEqual(t, 0, code, out)
	for _, want := range []string{
		"mayu: config " + bad + ": 10 problem(s):",
		`line 1: default_coreos_version "../../etc" is not a version`,
		`line 4: network.interface "eth1\ndhcp-script=/x" is not an interface name`,
		"line 7: network.ip_range is reversed: start 10.9.0.99 is after end 10.9.0.21",
		`line 8: network.subnet_size "24\nfoo" is neither a prefix length 0-32 nor a dotted netmask`,
		"line 11: cannot unmarshal !!str `three` into int",
		`line 12: profiles[0].etcd_cluster_token "a token" is not a discovery token`,
		`line 13: profiles[1]: duplicate profile name "core-services"`,
		`line 14: profiles[1] "core-services": quantity -1 is negative`,
		`line 15: profiles[1].coreos_version "../../etc" is not a version`,
		`line 17: templates_env.ssh_authorized_keys[0] "ssh-rsa AAAA\nssh-rsa EVIL" has the control or format character U+000A`,
	} {
		assert.Contains(t, out, want)
	}
	assert.NotContains(t, out, "panic")
	assert.NoDirExists(t, filepath.Join(dir, "cluster"), "nothing starts on a bad config")
}

func TestStartupMayu011ConfigWarns(t *testing.T) {
	// Mayu 0.11's sample layout (ip_range containing bootstrap_range),
	// moved to loopback.
	sample, err := os.ReadFile(repoPath("pkg", "config", "testdata", "mayu-0.11.yaml"))
	require.NoError(t, err)
	dir := t.TempDir()
	writeFile(t, dir, "config.yaml", strings.NewReplacer(
		"bind_addr: 10.0.3.251", "bind_addr: 127.0.0.1",
		"interface: bond0", "interface: lo",
		"10.0.3.", "10.9.0.",
	).Replace(string(sample)))
	d := startDaemon(t, dir, "--no-tls")
	d.waitReady(d.client)
	out := d.out.String()
	assert.Contains(t, out, "level=WARN msg=\"config warning\"")
	assert.Contains(t, out, "line 12: network.ip_range 10.9.0.1-10.9.0.254 overlaps network.bootstrap_range 10.9.0.10-10.9.0.30: its 21 addresses 10.9.0.10-10.9.0.30 are leased by DHCP during installation and never handed out as static addresses")
	assert.Contains(t, out, "line 12: network.ip_range 10.9.0.1-10.9.0.254 contains addresses that are never handed out: 10.9.0.251 (router)")

	// 10.9.0.10-30 is the bootstrap range: the tenth machine gets 10.9.0.31.
	var serials []string
	for i := 0; i < 10; i++ {
		s := fmt.Sprintf("0800278e16%02x-%d", i, i)
		code, body := d.req("GET", "/first-stage-script/"+s, "")
		require.Equal(t, 200, code, body)
		serials = append(serials, s)
	}
	hosts := d.hosts()
	var got []string
	for _, s := range serials {
		got = append(got, hosts[s].InternalAddr.String())
	}
	assert.Equal(t, "10.9.0.1 10.9.0.2 10.9.0.3 10.9.0.4 10.9.0.5 10.9.0.6 10.9.0.7 10.9.0.8 10.9.0.9 10.9.0.31", strings.Join(got, " "))
	require.NoError(t, d.stop())
}
