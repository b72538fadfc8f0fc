package main

// Process tests of the trust boundary towards machines: each attack of
// issue 15 against the real binary, which must answer 403 or 429 and
// change nothing. Machines are played from loopback addresses of their
// own (127.0.0.2, 127.0.0.3) that a dnsmasq lease file given with
// --dhcp-leases-file binds to their MACs, as mayu's own dnsmasq would.

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/hostinfo/hostinfotest"
	"mayu/pkg/proctest"
)

const (
	victimAddr = "127.0.0.2"
	victimMAC  = "02:4d:41:59:55:01"
	thiefAddr  = "127.0.0.3"
	thiefMAC   = "02:4d:41:59:55:02"
)

// machine is an HTTP client whose requests come from addr.
type machine struct {
	t      *testing.T
	d      *proctest.Daemon
	client *http.Client
}

func newMachine(t *testing.T, d *proctest.Daemon, addr string) *machine {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addr)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true}
	if base, ok := d.Client.Transport.(*http.Transport); ok && base.TLSClientConfig != nil {
		tr.TLSClientConfig = base.TLSClientConfig.Clone()
	}
	return &machine{t: t, d: d, client: &http.Client{Timeout: 30 * time.Second, Transport: tr}}
}

// do sends a request; headers are name, value pairs.
func (m *machine) do(method, path, body string, headers ...string) (int, string) {
	m.t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, m.d.Base+path, strings.NewReader(body))
	require.NoError(m.t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := m.client.Do(req)
	require.NoError(m.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(m.t, err)
	return resp.StatusCode, string(b)
}

func facts(serial string, macs ...string) string {
	var devs []string
	for i, m := range macs {
		devs = append(devs, fmt.Sprintf(`{"Name":"eth%d","MacAddress":%q}`, i, m))
	}
	return fmt.Sprintf(`{"Serial":%q,"NetDevs":[%s],"ConnectedNIC":"eth0"}`, serial, strings.Join(devs, ","))
}

// startGuarded runs mayu with the two machines' leases in a lease file.
func startGuarded(t *testing.T, dir string, extra ...string) *proctest.Daemon {
	t.Helper()
	leases := filepath.Join(dir, "dnsmasq.leases")
	require.NoError(t, os.WriteFile(leases, []byte(fmt.Sprintf("%d %s %s victim *\n%d %s %s thief *\n",
		time.Now().Add(time.Hour).Unix(), victimMAC, victimAddr, time.Now().Add(time.Hour).Unix(), thiefMAC, thiefAddr)), 0o644))
	d := startDaemon(t, dir, append([]string{"--dhcp-leases-file=" + leases}, extra...)...)
	return d
}

var tokenRe = regexp.MustCompile(`(?m)^\s*MACHINE_TOKEN='?([0-9a-f]{64})'?$`)

// gitCount is the number of commits of the cluster directory.
func gitCount(t *testing.T, d *proctest.Daemon) int {
	return strings.Count(proctest.Git(t, d.Cluster, "log", "--format=%h"), "\n")
}

// A running machine's final config cannot be read by posting its serial,
// nor its record changed by anyone but itself: every machine route about
// it answers another machine 403, the record still says running and
// nothing is committed. The victim walks the life cycle as Mayu 0.11's
// templates do (no credential: its lease is its proof), and reports
// running with the credential mayuctl reads from /etc/mayu-env.
func TestProcessMachinesActOnlyAsThemselves(t *testing.T) {
	dir := t.TempDir()
	d := startGuarded(t, dir, "--no-tls")
	d.WaitReady()
	victim, thief, local := newMachine(t, d, victimAddr), newMachine(t, d, thiefAddr), newMachine(t, d, "127.0.0.1")
	const s = "victim-1"

	code, script := victim.do("GET", "/first-stage-script/"+s, "")
	require.Equal(t, 200, code, script)
	tok := tokenRe.FindStringSubmatch(script)
	require.NotNil(t, tok, "the script carries the machine's credential:\n%s", script)
	code, body := victim.do("POST", "/final-cloud-config.yaml", facts(s, victimMAC))
	require.Equal(t, 200, code, body)
	code, body = victim.do("GET", "/images/"+s+"/install_image.bin.bz2", "")
	require.NotEqual(t, 403, code, body)
	code, body = victim.do("PUT", "/admin/host/"+s+"/set_installed", "")
	require.Equal(t, 202, code, body)

	env := filepath.Join(t.TempDir(), "mayu-env")
	require.NoError(t, os.WriteFile(env, []byte("SERIAL="+s+"\nMAYU_VERSION=1\nMAYU_MACHINE_TOKEN="+tok[1]+"\n"), 0o600))
	r := proctest.Run(t, proctest.Build(t).Mayuctl, nil, "--no-tls", "--host=127.0.0.1", fmt.Sprintf("--port=%d", d.Flags.Port),
		"boot-complete", "--mayu-env="+env)
	require.Equal(t, 0, r.Code, r.Stderr)
	before := d.Hosts()[s]
	require.Equal(t, "running", before.State.String())
	commits := gitCount(t, d)

	for _, m := range []*machine{thief, local} {
		for _, a := range []struct{ method, path, body string }{
			{"GET", "/first-stage-script/" + s, ""},
			{"POST", "/final-cloud-config.yaml", facts(s, victimMAC)},
			{"POST", "/final-cloud-config.yaml", facts(s, thiefMAC)},
			{"PUT", "/admin/host/" + s + "/set_installed", ""},
			{"PUT", "/admin/host/" + s + "/boot_complete", `{"CoreOSVersion":"6.6.6"}`},
			{"GET", "/images/" + s + "/install_image.bin.bz2", ""},
		} {
			code, body := m.do(a.method, a.path, a.body)
			assert.Equal(t, 403, code, "%s %s: %s", a.method, a.path, body)
			assert.NotContains(t, body, "#cloud-config")
		}
		code, body := m.do("PUT", "/admin/host/"+s+"/boot_complete", "", "Mayu-Machine-Token", strings.Repeat("0", 64))
		assert.Equal(t, 403, code, "a guessed credential: %s", body)
	}
	assert.Equal(t, before, d.Hosts()[s], "the record is as it was: still running")
	assert.Equal(t, commits, gitCount(t, d), "nothing committed")
	assert.Eventually(t, func() bool {
		return strings.Contains(d.Out.String(), `msg="machine request refused" component=machineauth serial=victim-1`)
	}, 10*time.Second, 20*time.Millisecond, "refusals are logged")

	// Its own credential still works from anywhere.
	code, body = local.do("PUT", "/admin/host/"+s+"/boot_complete", "", "Mayu-Machine-Token", tok[1])
	assert.Equal(t, 202, code, body)
	// The binding is not in conf.json nor in git.
	conf, err := os.ReadFile(filepath.Join(d.Cluster, s, "conf.json"))
	require.NoError(t, err)
	assert.NotContains(t, string(conf), tok[1])
	assert.NotContains(t, proctest.Git(t, d.Cluster, "status", "--porcelain", "--ignored"), "machine-auth/"+s,
		"the bindings are neither tracked nor listed as untracked")
	_, err = os.Stat(filepath.Join(d.Cluster, ".machine-auth", s+".json"))
	assert.NoError(t, err)
}

// Claiming the victim's MAC under a new serial and marking that serial
// installed (so that DHCP would ignore the victim) fails at every step.
func TestProcessNoClaimOfAnotherMachinesMAC(t *testing.T) {
	d := startGuarded(t, t.TempDir(), "--no-tls")
	d.WaitReady()
	victim, thief := newMachine(t, d, victimAddr), newMachine(t, d, thiefAddr)
	code, body := victim.do("GET", "/first-stage-script/victim-1", "")
	require.Equal(t, 200, code, body)

	code, body = thief.do("GET", "/first-stage-script/claim-1", "")
	require.Equal(t, 200, code, "its own new serial: %s", body)
	code, body = thief.do("POST", "/final-cloud-config.yaml", facts("claim-1", victimMAC))
	assert.Equal(t, 403, code, body)
	assert.Contains(t, body, "but not "+thiefMAC)
	code, body = thief.do("POST", "/final-cloud-config.yaml", facts("claim-1", thiefMAC, victimMAC))
	assert.Equal(t, 403, code, body)
	assert.Contains(t, body, "the card serial victim-1 was bound by")
	code, body = thief.do("PUT", "/admin/host/claim-1/set_installed", "")
	assert.Equal(t, 409, code, "nothing DHCP could ignore: %s", body)
	assert.Empty(t, d.Hosts()["claim-1"].MacAddresses)
	assert.Equal(t, "configured", d.Hosts()["claim-1"].State.String())

	// Once the victim reported, its MAC is its own record's too (409 from
	// the rules, 403 from the lease before that).
	code, body = victim.do("POST", "/final-cloud-config.yaml", facts("victim-1", victimMAC))
	require.Equal(t, 200, code, body)
	code, body = thief.do("POST", "/final-cloud-config.yaml", facts("claim-1", thiefMAC, victimMAC))
	assert.Equal(t, 403, code, body)
	assert.Equal(t, []string{victimMAC}, d.Hosts()["victim-1"].MacAddresses)
}

// Draining ip_range: with mayu's leases a machine gets one serial, an
// address without a lease none; with DHCP elsewhere (no lease table) the
// per-address limit answers 429. Filling the disk with PUT /etcd/new is
// limited the same way, registering etcd members needs a provisioned
// address, and changing a cluster's size an admin credential.
func TestProcessBoundedAnonymousWork(t *testing.T) {
	d := startGuarded(t, t.TempDir(), "--no-tls", "--anonymous-limit=4")
	d.WaitReady()
	thief, local := newMachine(t, d, thiefAddr), newMachine(t, d, "127.0.0.1")
	code, body := thief.do("GET", "/first-stage-script/r-0", "")
	require.Equal(t, 200, code, body)
	code, body = thief.do("GET", "/first-stage-script/r-1", "")
	assert.Equal(t, 403, code, body)
	assert.Contains(t, body, "bound to serial r-0 already")
	code, body = local.do("GET", "/first-stage-script/r-2", "")
	assert.Equal(t, 403, code, body)
	assert.Contains(t, body, "holds no DHCP lease")
	assert.Len(t, d.Hosts(), 1)

	tokens := func() int {
		ents, err := os.ReadDir(filepath.Join(d.Cluster, ".discovery"))
		require.NoError(t, err)
		return len(ents)
	}
	before := tokens()
	var codes []int
	for range 6 {
		code, _ := thief.do("PUT", "/etcd/new", "")
		codes = append(codes, code)
	}
	assert.Equal(t, []int{200, 200, 200, 200, 429, 429}, codes)
	assert.Equal(t, before+4, tokens(), "no file for a refused token")
	code, body = thief.do("PUT", "/etcd/new", "")
	assert.Contains(t, body, "at most 4 a minute per address")

	// Members register from provisioned addresses only.
	code, body = thief.do("PUT", "/etcd/"+clusterToken(t, d)+"/abcdef?prevExist=false", "value=m1=http://127.0.0.3:2380")
	assert.Equal(t, 403, code, body)
	assert.Contains(t, body, "address of a provisioned machine")
	// A cluster's size takes an admin credential, from any address.
	form := "application/x-www-form-urlencoded"
	sizePath := "/etcd/" + clusterToken(t, d) + "/_config/size"
	code, body = local.do("PUT", sizePath, "value=1", "Content-Type", form)
	assert.Equal(t, 401, code, "not even from mayu's own host without a credential: %s", body)
	code, body = thief.do("DELETE", "/etcd/"+clusterToken(t, d)+"?recursive=true", "")
	assert.Equal(t, 401, code, body)
	code, body = thief.do("PUT", sizePath, "value=5", "Content-Type", form, "Authorization", "Bearer "+d.Token)
	assert.Equal(t, 200, code, body)
	code, body = thief.do("GET", sizePath, "")
	assert.Equal(t, 200, code, body)
	assert.Contains(t, body, `"value":"5"`)

	// DHCP elsewhere: the first requester of a serial binds it, and the
	// limit bounds how many serials one address registers.
	d2 := startDaemon(t, t.TempDir(), "--no-tls", "--anonymous-limit=4")
	d2.WaitReady()
	m := newMachine(t, d2, thiefAddr)
	codes = nil
	for i := range 6 {
		code, _ := m.do("GET", fmt.Sprintf("/first-stage-script/drain-%d", i), "")
		codes = append(codes, code)
	}
	assert.Equal(t, []int{200, 200, 200, 200, 429, 429}, codes)
	assert.Len(t, d2.Hosts(), 4)
	code, _ = newMachine(t, d2, victimAddr).do("GET", "/first-stage-script/drain-0", "")
	assert.Equal(t, 403, code, "drain-0 is bound to the address that registered it")
	code, _ = newMachine(t, d2, victimAddr).do("POST", "/final-cloud-config.yaml", facts("drain-1", victimMAC))
	assert.Equal(t, 403, code, "so is drain-1")
}

// clusterToken is the default etcd discovery token of d.
func clusterToken(t *testing.T, d *proctest.Daemon) string {
	b, err := os.ReadFile(filepath.Join(d.Cluster, "cluster.json"))
	require.NoError(t, err)
	m := regexp.MustCompile(`"DefaultEtcdClusterToken":\s*"([0-9a-f]+)"`).FindSubmatch(b)
	require.NotNil(t, m, "%s", b)
	return string(m[1])
}

// With TLS on a self-signed certificate a machine installs without
// skipping any check: the first-stage script carries the certificate, the
// helper posts the facts with it (-ca-file) and the machine's credential,
// mayuctl boot-complete trusts it with --ca-file; --insecure with
// --ca-file is a usage error.
func TestProcessTLSMachinesVerify(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := proctest.SelfSignedCert(t, t.TempDir())
	d := startGuarded(t, dir, "--tls-cert-file="+certFile, "--tls-key-file="+keyFile)
	d.Client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	d.WaitReady()
	victim := newMachine(t, d, victimAddr)
	const s = "tls-1"
	code, script := victim.do("GET", "/first-stage-script/"+s, "")
	require.Equal(t, 200, code, script)
	caB64 := regexp.MustCompile(`(?m)^\s*MAYU_CA_CERT_B64='?([A-Za-z0-9+/=]+)'?$`).FindStringSubmatch(script)
	require.NotNil(t, caB64, "the script carries the CA:\n%s", script)
	caPEM, err := base64.StdEncoding.DecodeString(caB64[1])
	require.NoError(t, err)
	certPEM, err := os.ReadFile(certFile)
	require.NoError(t, err)
	assert.Equal(t, string(certPEM), string(caPEM), "the self-signed certificate is the CA")
	blk, _ := pem.Decode(caPEM)
	require.NotNil(t, blk)
	assert.NotContains(t, script, "--insecure")
	tok := tokenRe.FindStringSubmatch(script)
	require.NotNil(t, tok)

	caFile := filepath.Join(t.TempDir(), "mayu-ca.pem")
	require.NoError(t, os.WriteFile(caFile, caPEM, 0o644))
	bins := proctest.Build(t)

	// The helper from loopback 127.0.0.1 (no lease): its credential is its
	// proof. Without the CA it fails the certificate check.
	r := runHelper(t, bins.Infopusher, "MAYU_MACHINE_TOKEN="+tok[1], d.Base+"/final-cloud-config.yaml", s, "")
	assert.NotEqual(t, 0, r.Code)
	assert.Contains(t, r.Stderr, "certificate")
	r = runHelper(t, bins.Infopusher, "MAYU_MACHINE_TOKEN="+tok[1], d.Base+"/final-cloud-config.yaml", s, caFile)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.True(t, strings.HasPrefix(r.Stdout, "#cloud-config"), r.Stdout)
	assert.Contains(t, r.Stdout, "--ca-file=/etc/ssl/certs/mayu-ca.pem boot-complete")
	assert.NotContains(t, r.Stdout, "--insecure")
	r = runHelper(t, bins.Infopusher, "", d.Base+"/final-cloud-config.yaml", s, caFile)
	assert.NotEqual(t, 0, r.Code, "no credential, no lease: %s", r.Stdout)
	assert.Contains(t, r.Stderr, "403")

	code, body := victim.do("PUT", "/admin/host/"+s+"/set_installed", "")
	require.Equal(t, 202, code, body)
	env := filepath.Join(t.TempDir(), "mayu-env")
	require.NoError(t, os.WriteFile(env, []byte("SERIAL="+s+"\nMAYU_MACHINE_TOKEN="+tok[1]+"\n"), 0o600))
	ctl := func(args ...string) proctest.Result {
		return proctest.Run(t, bins.Mayuctl, nil, append([]string{"--host=127.0.0.1", fmt.Sprintf("--port=%d", d.Flags.Port)}, args...)...)
	}
	r = ctl("--ca-file="+caFile, "--insecure", "boot-complete", "--mayu-env="+env)
	assert.Equal(t, 2, r.Code, "a usage error: %s", r.Stderr)
	assert.Contains(t, r.Stderr, "--insecure and --ca-file")
	r = ctl("boot-complete", "--mayu-env="+env)
	assert.NotEqual(t, 0, r.Code, "an unknown CA fails")
	r = ctl("--ca-file="+caFile, "boot-complete", "--mayu-env="+env)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Equal(t, "running", d.Hosts()[s].State.String())
}

// runHelper runs the host-info helper as the first-stage script does, on
// a stand-in machine with the victim's card.
func runHelper(t *testing.T, bin, env, url, serial, caFile string) proctest.Result {
	sysRoot, procRoot := hostinfotest.Write(t, t.TempDir(), hostinfotest.System{
		NICs:  []hostinfotest.NIC{{Name: "eth0", Address: victimMAC}},
		Route: hostinfotest.RouteHeader + "eth0\t00000000\t0100090A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
	})
	args := []string{"-post-url=" + url, "-serial=" + serial, "-sysfs-root=" + sysRoot, "-procfs-root=" + procRoot, "-ipmitool=-"}
	if caFile != "" {
		args = append(args, "-ca-file="+caFile)
	}
	var envs []string
	if env != "" {
		envs = []string{env}
	}
	return proctest.Run(t, bin, envs, args...)
}

// The trust flags are checked at start, every problem listed at once.
func TestProcessTrustFlagProblems(t *testing.T) {
	dir := t.TempDir()
	args := append(baseArgs(t, dir, proctest.FreePort(t)), "--no-tls", "--machine-auth=on",
		"--etcd-member-sources=10.0.0.0/8,not-a-net", "--anonymous-limit=-1", "--boot-http-port=4081",
		"--tls-ca-file=/nonexistent")
	code, out := runOnce(t, args...)
	assert.Equal(t, 2, code, out)
	for _, want := range []string{
		`--machine-auth: machine auth mode "on": want lease, credential or off`,
		`--etcd-member-sources: "not-a-net" is neither an IP address nor a CIDR`,
		"--anonymous-limit=-1: a count a minute, 0 for no limit",
		"--boot-http-port serves the boot files over plain HTTP beside HTTPS: with --no-tls everything is plain HTTP",
		"--tls-ca-file names what machines trust mayu's HTTPS by: it makes no sense with --no-tls",
	} {
		assert.Contains(t, out, want)
	}

	// --machine-auth=off starts, with a warning.
	d := startDaemon(t, t.TempDir(), "--no-tls", "--machine-auth=off")
	d.WaitReady()
	assert.Eventually(t, func() bool {
		return strings.Contains(d.Out.String(), "--machine-auth=off: anyone who can reach mayu may act as any machine")
	}, 10*time.Second, 20*time.Millisecond, "a warning at start: %s", d.Out.String())
}
