//go:build nettest

package netns

import (
	"crypto/sha256"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/dnsmasq"
	"mayu/pkg/proctest"
	"mayu/pkg/proctest/netlab"
)

// proxyConfig is netConfig in proxyDHCP mode: the site's DHCP server (here:
// the test, which sets the machines' addresses) leases the addresses.
var proxyConfig = strings.Replace(
	strings.Replace(netConfig, "  bootstrap_range: {start: "+netlab.BootstrapStart+", end: "+netlab.BootstrapEnd+"}\n", "", 1),
	"  pxe: true\n", "  pxe: true\n  proxy_dhcp: true\n", 1)

// TestNetProxyDHCPMachineAuth: in proxyDHCP mode mayu's dnsmasq leases
// nothing, so machines ask from addresses that hold no lease of mayu's.
// The machine routes then work as with --no-dnsmasq: a serial's first
// requester binds it (trust on first use, bounded by --anonymous-limit),
// and another machine cannot act as it. (The earlier build answered 403
// "holds no DHCP lease from mayu" to every machine here.) The UEFI HTTP
// boot file is served by the daemon itself, byte for byte.
func TestNetProxyDHCPMachineAuth(t *testing.T) {
	proctest.RequireFile(t, dnsmasq.DefaultBinary, "dnsmasq-base")
	require.NotContains(t, proxyConfig, "bootstrap_range")
	require.Contains(t, proxyConfig, "proxy_dhcp: true")
	l := netlab.New(t)
	m := startMayuWith(t, l, proxyConfig)
	m.waitAnswers(t)
	m.waitDnsmasq(t, 0)
	assert.True(t, strings.Contains(m.Out.String(), `dhcp_leases=""`), "a proxyDHCP dnsmasq's lease file is no lease table")
	assert.True(t, strings.Contains(m.Out.String(), "network.proxy_dhcp: mayu leases no addresses"), "the operator is told")

	a := l.NewMachine(t, "02:4d:41:59:57:01")
	b := l.NewMachine(t, "02:4d:41:59:57:02")
	a.SetAddr(t, "192.168.2.151") // from the site's DHCP server
	b.SetAddr(t, "192.168.2.152")
	get := func(mc *netlab.Machine, path string) (int, []byte) {
		t.Helper()
		resp, err := mc.HTTPClient().Get(m.Base + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, body
	}
	const s = "net-proxy-a"
	code, script := get(a, "/first-stage-script/"+s)
	require.Equal(t, http.StatusOK, code, "%s", script)
	assert.Regexp(t, regexp.MustCompile(`MACHINE_TOKEN='?[0-9a-f]{64}`), string(script))
	code, body := get(b, "/first-stage-script/"+s)
	assert.Equal(t, http.StatusForbidden, code, "another machine acts as %s: %s", s, body)
	assert.Contains(t, string(body), "is bound to the machine that asked for it from 192.168.2.151")
	code, _ = get(a, "/first-stage-script/"+s)
	assert.Equal(t, http.StatusOK, code, "the bound machine asks again")

	for _, name := range netlab.BootFiles {
		code, body := get(a, "/tftproot/"+name)
		require.Equal(t, http.StatusOK, code, name)
		assert.Equal(t, netlab.SHA256(t, filepath.Join(l.TFTPRoot, name)), sha256.Sum256(body), "%s over HTTP", name)
	}
	code, _ = get(a, "/tftproot/..%2f..%2fetc%2fpasswd")
	assert.Equal(t, http.StatusNotFound, code)
}
