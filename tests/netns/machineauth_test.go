//go:build nettest

package netns

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/dnsmasq"
	"mayu/pkg/proctest"
	"mayu/pkg/proctest/netlab"
)

// Two machines, each in a namespace of its own, get their bootstrap leases
// from mayu's real dnsmasq; mayu binds each serial to the machine whose
// lease asked for it. Machine B can do nothing as machine A on any machine
// route; A walks the whole life cycle without its credential (as Mayu
// 0.11's templates do) and reports running from its static address. Etcd
// discovery takes members from provisioned addresses only, and a token's
// size from an admin credential only.
func TestNetMachineAuth(t *testing.T) {
	proctest.RequireFile(t, dnsmasq.DefaultBinary, "dnsmasq-base")
	l := netlab.New(t)
	m := startMayu(t, l)
	m.waitAnswers(t)
	m.waitDnsmasq(t, 0)

	a := l.NewMachine(t, "02:4d:41:59:56:01")
	b := l.NewMachine(t, "02:4d:41:59:56:02")
	a.DHCP(t)
	b.DHCP(t)
	netlab.InBootstrapRange(t, a.Addr)
	netlab.InBootstrapRange(t, b.Addr)
	require.NotEqual(t, a.Addr, b.Addr)
	leases, err := os.ReadFile(filepath.Join(m.run, "dnsmasq.leases"))
	require.NoError(t, err)
	require.Contains(t, string(leases), a.MAC+" "+a.Addr)

	do := func(mc *netlab.Machine, method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, m.Base+path, strings.NewReader(body))
		require.NoError(t, err)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := mc.HTTPClient().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(out)
	}
	facts := func(serial string, macs ...string) string {
		var devs []string
		for i, mac := range macs {
			devs = append(devs, fmt.Sprintf(`{"Name":"eth%d","MacAddress":%q}`, i, mac))
		}
		return fmt.Sprintf(`{"Serial":%q,"NetDevs":[%s],"ConnectedNIC":"eth0"}`, serial, strings.Join(devs, ","))
	}
	const s = "net-machine-a"

	code, script := do(a, "GET", "/first-stage-script/"+s, "")
	require.Equal(t, 200, code, script)
	require.Regexp(t, regexp.MustCompile(`MACHINE_TOKEN='?[0-9a-f]{64}`), script)
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/first-stage-script/" + s, ""},
		{"POST", "/final-cloud-config.yaml", facts(s, b.MAC)},
		{"POST", "/final-cloud-config.yaml", facts(s, a.MAC)},
		{"GET", "/images/" + s + "/install_image.bin.bz2", ""},
		{"PUT", "/admin/host/" + s + "/set_installed", ""},
	} {
		code, body := do(b, r.method, r.path, r.body)
		assert.Equal(t, 403, code, "B: %s %s: %s", r.method, r.path, body)
	}
	code, final := do(a, "POST", "/final-cloud-config.yaml", facts(s, a.MAC))
	require.Equal(t, 200, code, final)
	require.True(t, strings.HasPrefix(final, "#cloud-config"), final)

	// B under a serial of its own cannot claim A's card.
	code, body := do(b, "GET", "/first-stage-script/net-machine-b", "")
	require.Equal(t, 200, code, body)
	code, body = do(b, "POST", "/final-cloud-config.yaml", facts("net-machine-b", b.MAC, a.MAC))
	assert.Equal(t, 403, code, body)
	code, body = do(b, "GET", "/first-stage-script/net-machine-c", "")
	assert.Equal(t, 403, code, "one lease, one serial: %s", body)

	code, body = do(a, "PUT", "/admin/host/"+s+"/set_installed", "")
	require.Equal(t, 202, code, body)

	// Installed, A boots from disk with its static address.
	hosts := m.Hosts()
	internal := hosts[s].InternalAddr.String()
	a.SetAddr(t, internal)
	code, body = do(b, "PUT", "/admin/host/"+s+"/boot_complete", "")
	assert.Equal(t, 403, code, body)
	code, body = do(a, "PUT", "/admin/host/"+s+"/boot_complete", "")
	require.Equal(t, 202, code, body)
	code, body = do(b, "POST", "/final-cloud-config.yaml", facts(s, a.MAC))
	assert.Equal(t, 403, code, "a running machine's final config: %s", body)
	hosts = m.Hosts()
	assert.Equal(t, "running", hosts[s].State.String())
	assert.Equal(t, []string{a.MAC}, hosts[s].MacAddresses)
	assert.Empty(t, hosts["net-machine-b"].MacAddresses)
	assert.Eventually(t, func() bool { return strings.Contains(m.Out.String(), `msg="machine request refused"`) },
		10*time.Second, 20*time.Millisecond, "refusals are logged")

	// etcd discovery: a member registers from A (provisioned), not from B;
	// the cluster's size and existence are nobody's on the network.
	tok := regexp.MustCompile(`/etcd/([0-9a-f]{32})`).FindStringSubmatch(final)
	require.NotNil(t, tok, "no discovery URL in the final config")
	formAs := func(token string, mc *netlab.Machine, method, path, value string) int {
		t.Helper()
		req, err := http.NewRequest(method, m.Base+path, strings.NewReader("value="+value))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := mc.HTTPClient().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	form := func(mc *netlab.Machine, method, path, value string) int {
		t.Helper()
		return formAs("", mc, method, path, value)
	}
	p := "/etcd/" + tok[1]
	assert.Equal(t, 201, form(a, "PUT", p+"/aa01?prevExist=false", "a=http://"+internal+":2380"))
	assert.Equal(t, 403, form(b, "PUT", p+"/bb02?prevExist=false", "b=http://"+b.Addr+":2380"))
	// A cluster's size and existence take an admin credential.
	assert.Equal(t, 401, form(b, "PUT", p+"/_config/size", "1"))
	assert.Equal(t, 401, form(a, "PUT", p+"/_config/size", "1"), "not even a provisioned machine")
	assert.Equal(t, 401, form(b, "DELETE", p+"?recursive=true", ""))
	_, viewer := proctest.Tokens(t, m.Flags.TokenFile)
	assert.Equal(t, 403, formAs(viewer, b, "PUT", p+"/_config/size", "1"), "a read-only credential")
	code, body = do(b, "GET", p+"/_config/size", "")
	assert.Equal(t, 200, code)
	assert.Contains(t, body, `"value":"3"`)
	assert.Equal(t, 200, formAs(m.Token, b, "PUT", p+"/_config/size", "5"), "an admin credential, from any address")
	code, body = do(b, "GET", p+"/_config/size", "")
	assert.Equal(t, 200, code)
	assert.Contains(t, body, `"value":"5"`)
}
