package main

// Process tests of the admin API's trust boundary: each attack of issue 15
// that needs no credential, against the real binary, and what it gets now.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/auth"
	"mayu/pkg/host"
	"mayu/pkg/proctest"
)

// installedMachine registers a machine and walks it to running, as the
// machine itself does (no credential), and returns its serial.
func installedMachine(t *testing.T, d *proctest.Daemon) string {
	t.Helper()
	const s = "0800278e158a-0"
	code, body := proctest.Do(t, d.Client, "GET", d.Base+"/first-stage-script/"+s, "")
	require.Equal(t, 200, code, body)
	code, body = proctest.Do(t, d.Client, "POST", d.Base+"/final-cloud-config.yaml",
		`{"Serial":"`+s+`","NetDevs":[{"Name":"eth0","MacAddress":"08:00:27:8e:15:8a"}],"IPMIAddress":"10.0.0.9","ConnectedNIC":"eth0"}`)
	require.Equal(t, 200, code, body)
	code, body = proctest.Do(t, d.Client, "PUT", d.Base+"/admin/host/"+s+"/set_installed", "")
	require.Equal(t, 202, code, body)
	code, body = proctest.Do(t, d.Client, "PUT", d.Base+"/admin/host/"+s+"/boot_complete", `{"CoreOSVersion":"1068.6.0"}`)
	require.Equal(t, 202, code, body)
	return s
}

// attempt sends one request with the given headers (no credential unless
// one is among them) and returns status and body.
func attempt(t *testing.T, d *proctest.Daemon, method, path, body string, header ...string) (int, string) {
	t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	return proctest.DoWith(t, d.Client, h, method, d.Base+path, body)
}

// TestAttackAdminWithoutCredential: "read every record with tokens and
// IPMI addresses from GET /admin/hosts" and "override a templates_env
// value, then mark_fresh or set state configured makes the machine
// reinstall", without a credential.
func TestAttackAdminWithoutCredential(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--no-tls")
	d.WaitReady()
	s := installedMachine(t, d)
	head := proctest.Git(t, d.Cluster, "rev-parse", "HEAD")
	before := d.Hosts()[s]

	code, body := attempt(t, d, "GET", "/admin/hosts", "")
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.NotContains(t, body, s)
	assert.NotContains(t, body, "10.0.0.9", "no IPMI address")
	assert.NotContains(t, body, before.EtcdClusterToken, "no etcd token")

	json := []string{"Content-Type", "application/json"}
	for _, r := range [][2]string{
		{"override", `{"Overrides":{"ssh_authorized_keys":"ssh-rsa AAAAattacker"}}`},
		{"mark_fresh", `{}`},
		{"set_state", `{"State":"configured"}`},
		{"set_mac_addresses", `{"MacAddresses":[]}`},
	} {
		for _, authz := range []string{"", "Bearer " + strings.Repeat("x", 43), "Bearer " + d.Token + "x"} {
			code, body := attempt(t, d, "PUT", "/admin/host/"+s+"/"+r[0], r[1], append([]string{"Authorization", authz}, json...)...)
			assert.Equal(t, http.StatusUnauthorized, code, "%s with %q: %s", r[0], authz, body)
		}
	}
	// A read-only credential reads, and changes nothing.
	_, viewer := proctest.Tokens(t, d.Flags.TokenFile)
	code, body = attempt(t, d, "GET", "/admin/hosts", "", "Authorization", "Bearer "+viewer)
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, s)
	code, body = attempt(t, d, "PUT", "/admin/host/"+s+"/mark_fresh", `{}`, append([]string{"Authorization", "Bearer " + viewer}, json...)...)
	assert.Equal(t, http.StatusForbidden, code, body)
	assert.Contains(t, body, "read-only:viewer may only read")

	assert.Equal(t, before, d.Hosts()[s], "the machine does not reinstall")
	assert.Equal(t, host.Running, d.Hosts()[s].State)
	assert.Equal(t, head, proctest.Git(t, d.Cluster, "rev-parse", "HEAD"), "nothing committed")
	waitOutput(t, d, `msg="request refused" component=api method=PUT path=/admin/host/`+s+`/mark_fresh status=401 remote=127.0.0.1`)
	assert.NotContains(t, d.Out.String(), d.Token, "a token is never logged")
}

// TestAttackFromTheBrowser: "act from an operator's browser: a cross-site
// text/plain POST is accepted and any Host header is served".
func TestAttackFromTheBrowser(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--no-tls")
	d.WaitReady()
	s := installedMachine(t, d)
	head := proctest.Git(t, d.Cluster, "rev-parse", "HEAD")
	bearer := []string{"Authorization", "Bearer " + d.Token}

	// A form of another site: text/plain, its origin named by the browser.
	code, body := attempt(t, d, "POST", "/final-cloud-config.yaml", `{"Serial":"`+s+`"}`,
		"Content-Type", "text/plain", "Origin", "http://evil.example")
	assert.Equal(t, http.StatusForbidden, code, body)
	code, _ = attempt(t, d, "PUT", "/admin/host/"+s+"/set_state", `{"State":"configured"}`,
		append(bearer, "Content-Type", "text/plain", "Origin", "http://evil.example")...)
	assert.Equal(t, http.StatusForbidden, code)
	// Even with a credential and no Origin, an admin change must be JSON.
	code, body = attempt(t, d, "PUT", "/admin/host/"+s+"/set_state", `{"State":"configured"}`, append(bearer, "Content-Type", "text/plain")...)
	assert.Equal(t, http.StatusUnsupportedMediaType, code, body)
	// DNS rebinding: the attacker's name, resolving to mayu.
	for _, path := range []string{"/admin/hosts", "/first-stage-script/x", "/"} {
		req, err := http.NewRequest("GET", d.Base+path, nil)
		require.NoError(t, err)
		req.Host = "rebind.evil.example:" + strings.TrimPrefix(d.Base[strings.LastIndex(d.Base, ":"):], ":")
		req.Header.Set("Authorization", "Bearer "+d.Token)
		resp, err := d.Client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusMisdirectedRequest, resp.StatusCode, path)
	}
	assert.Equal(t, host.Running, d.Hosts()[s].State)
	assert.Equal(t, head, proctest.Git(t, d.Cluster, "rev-parse", "HEAD"), "nothing committed")
	// mayu's own dashboard (same origin) still reads the list.
	code, _ = attempt(t, d, "GET", "/admin/hosts", "", append(bearer, "Origin", d.Base)...)
	assert.Equal(t, http.StatusOK, code)
}

// TestAttackLeavesATrace: "leave no trace of who did it: commits name no
// requester and the request log trusts X-Forwarded-For".
func TestAttackLeavesATrace(t *testing.T) {
	for _, tt := range []struct {
		name   string
		extra  []string
		remote string
	}{
		{"no proxy trusted", nil, "127.0.0.1"},
		{"a proxy elsewhere", []string{"--trusted-proxies=192.0.2.0/24"}, "127.0.0.1"},
		{"loopback proxy trusted", []string{"--trusted-proxies=127.0.0.1"}, "198.51.100.77"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := startDaemon(t, t.TempDir(), append([]string{"--no-tls"}, tt.extra...)...)
			d.WaitReady()
			s := installedMachine(t, d)
			xff := []string{"X-Forwarded-For", "198.51.100.77", "Content-Type", "application/json"}
			code, _ := attempt(t, d, "PUT", "/admin/host/"+s+"/mark_fresh", `{}`, xff...)
			require.Equal(t, http.StatusUnauthorized, code)
			code, body := attempt(t, d, "PUT", "/admin/host/"+s+"/override", `{"Overrides":{"docker_version":"1.12"}}`,
				append(xff, "Authorization", "Bearer "+d.Token)...)
			require.Equal(t, http.StatusAccepted, code, body)

			waitOutput(t, d, `path=/admin/host/`+s+`/mark_fresh status=401 remote=`+tt.remote+` `)
			msg := proctest.Git(t, d.Cluster, "log", "-1", "--format=%an%n%s%n%b")
			assert.Equal(t, "mayu commiter\n"+s+": updated host overrides: docker_version\n"+
				"Principal: admin:"+proctest.AdminName+"\nRemote-Address: "+tt.remote+"\n\n", msg)
			assert.Equal(t, "admin:"+proctest.AdminName, lastPrincipal(t, d.Cluster), "a git trailer")
			// The machine's own steps name the machine.
			log := proctest.Git(t, d.Cluster, "log", "--format=%s|%(trailers:key=Principal,valueonly,separator=)")
			assert.Contains(t, log, s+": updated state to running|machine:"+s+"\n")
			assert.Contains(t, log, s+": host created|machine:"+s+"\n")
		})
	}
}

// TestNoAdminAuthRestores011: --no-admin-auth is the open API of 0.11
// (0.11's mayuctl sends no credential), with a warning at every start.
func TestNoAdminAuthRestores011(t *testing.T) {
	dir := t.TempDir()
	f, args := proctest.MayuArgs(t, proctest.Flags{Dir: dir, ConfigText: processConfig, NoAdminAuth: true}, "--no-tls")
	for i := range 2 {
		d := proctest.StartDaemon(t, exec.Command(mayuBinary(t), args...), "http://127.0.0.1:"+strconv.Itoa(f.Port))
		d.Cluster = f.Cluster
		d.WaitReady()
		waitOutput(t, d, "mayu started")
		assert.Contains(t, d.Out.String(), `level=WARN msg="the admin API is open to anyone who reaches this port (--no-admin-auth)`,
			"start %d warns", i+1)
		if i == 0 {
			installedMachine(t, d)
		}
		const s = "0800278e158a-0"
		code, body := attempt(t, d, "GET", "/admin/hosts", "")
		require.Equal(t, http.StatusOK, code, body)
		code, body = attempt(t, d, "PUT", "/admin/host/"+s+"/set_provider_id", `{"ProviderId":"r`+strconv.Itoa(i)+`"}`, "Content-Type", "application/json")
		require.Equal(t, http.StatusAccepted, code, body)
		assert.Equal(t, "anonymous", lastPrincipal(t, d.Cluster))
		// Still no cross-site forms.
		code, _ = attempt(t, d, "PUT", "/admin/host/"+s+"/mark_fresh", `{}`, "Content-Type", "text/plain")
		assert.Equal(t, http.StatusUnsupportedMediaType, code)
		require.NoError(t, d.Stop())
	}
	_, err := os.Stat(filepath.Join(f.Cluster, auth.DefaultFileName))
	assert.ErrorIs(t, err, os.ErrNotExist, "no token file is made for an open API")
}

// TestFirstStartCreatesTheTokenFile: without a token file mayu makes one,
// private, outside git, says where, and keeps it across restarts.
func TestFirstStartCreatesTheTokenFile(t *testing.T) {
	dir := t.TempDir()
	f, args := proctest.MayuArgs(t, loopFlags(dir, 0), "--no-tls")
	args = slices.DeleteFunc(args, func(a string) bool { return strings.HasPrefix(a, "--admin-token-file=") })
	path := filepath.Join(f.Cluster, auth.DefaultFileName)
	var tok string
	for i := range 2 {
		d := proctest.StartDaemon(t, exec.Command(mayuBinary(t), args...), "http://127.0.0.1:"+strconv.Itoa(f.Port))
		d.WaitReady()
		waitOutput(t, d, "mayu started") // the start-up lines before it are in too
		fi, err := os.Stat(path)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		got, err := auth.ClientToken(path)
		require.NoError(t, err)
		if i == 0 {
			tok = got
			assert.Contains(t, d.Out.String(), `msg="created the admin API's token file`)
			assert.Contains(t, d.Out.String(), "token_file="+path)
		} else {
			assert.Equal(t, tok, got, "a restart keeps the token")
			assert.NotContains(t, d.Out.String(), "created the admin API's token file")
		}
		assert.NotContains(t, d.Out.String(), tok, "the token itself is not logged")
		d.Token = tok
		if i == 0 {
			installedMachine(t, d)
		}
		assert.Len(t, d.Hosts(), 1, "the created token works")
		require.NoError(t, d.Stop())
	}
	assert.Empty(t, proctest.Git(t, f.Cluster, "status", "--porcelain", "--ignored=no", "--untracked-files=all"), "git does not see the token file")
	assert.NotContains(t, proctest.Git(t, f.Cluster, "ls-files"), auth.DefaultFileName)

	// A token file others may read is refused, naming the fix.
	require.NoError(t, os.Chmod(path, 0o644))
	code, out := runOnce(t, args...)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "chmod 600 "+path)
}

// TestClientCertificates: with --client-ca-file a certificate the CA
// signed is a credential: admin, or read-only with OU=read-only.
func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := proctest.SelfSignedCert(t, dir)
	caFile, issue := clientCA(t, dir)
	d := startDaemon(t, dir, "--tls-cert-file="+certFile, "--tls-key-file="+keyFile, "--client-ca-file="+caFile)
	d.Client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	d.WaitReady()
	s := installedMachine(t, d)

	withCert := func(cn string, ou ...string) *http.Client {
		cert := issue(cn, ou...)
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	}
	json := http.Header{"Content-Type": {"application/json"}}
	code, body := proctest.DoWith(t, withCert("alice"), json, "PUT", d.Base+"/admin/host/"+s+"/set_provider_id", `{"ProviderId":"r7"}`)
	require.Equal(t, http.StatusAccepted, code, body)
	assert.Equal(t, "admin:alice", lastPrincipal(t, d.Cluster))
	code, _ = proctest.DoWith(t, withCert("grafana", "read-only"), json, "PUT", d.Base+"/admin/host/"+s+"/mark_fresh", `{}`)
	assert.Equal(t, http.StatusForbidden, code)
	code, _ = proctest.DoWith(t, withCert("grafana", "read-only"), nil, "GET", d.Base+"/admin/hosts", "")
	assert.Equal(t, http.StatusOK, code)
	code, _ = proctest.DoWith(t, d.Client, nil, "GET", d.Base+"/admin/hosts", "")
	assert.Equal(t, http.StatusUnauthorized, code, "TLS alone is no credential")

	code, out := runOnce(t, append(baseArgs(t, t.TempDir(), proctest.FreePort(t)), "--no-tls", "--client-ca-file="+caFile)...)
	assert.Equal(t, 2, code)
	assert.Contains(t, out, "--client-ca-file needs TLS")
	code, out = runOnce(t, append(baseArgs(t, t.TempDir(), proctest.FreePort(t)), "--no-tls", "--no-admin-auth")...)
	assert.Equal(t, 2, code)
	assert.Contains(t, out, "--no-admin-auth opens the admin API: it cannot be given with --admin-token-file")
	code, out = runOnce(t, append(baseArgs(t, t.TempDir(), proctest.FreePort(t)), "--no-tls", "--trusted-proxies=10.0.0.0/33")...)
	assert.Equal(t, 2, code)
	assert.Contains(t, out, `--trusted-proxies: "10.0.0.0/33" is neither an IP address nor a CIDR`)
}

// waitOutput waits (10s at most) until d's output holds want: the child
// writes its log before it answers, but the test reads it through a pipe
// that a busy machine drains a little later.
func waitOutput(t *testing.T, d *proctest.Daemon, want string) {
	t.Helper()
	if !assert.Eventually(t, func() bool { return strings.Contains(d.Out.String(), want) }, 10*time.Second, 10*time.Millisecond) {
		t.Logf("output lacks %q", want)
	}
}

// lastPrincipal is the Principal trailer of the last commit in cluster,
// read by git itself.
func lastPrincipal(t *testing.T, cluster string) string {
	t.Helper()
	return strings.TrimSpace(proctest.Git(t, cluster, "log", "-1", "--format=%(trailers:key=Principal,valueonly,separator=)"))
}

// clientCA writes a CA certificate into dir and returns its path and a
// function that issues client certificates (named cn, with organizational
// units ou) it signed.
func clientCA(t *testing.T, dir string) (string, func(cn string, ou ...string) tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "operators CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	path := filepath.Join(dir, "client-ca.pem")
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644))
	issue := func(cn string, ou ...string) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: ou},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		require.NoError(t, err)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	return path, issue
}
