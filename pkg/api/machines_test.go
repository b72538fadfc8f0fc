package api

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/machineauth"
	"mayu/pkg/proctest"
)

// Two machines on the provisioning segment: A and B with their bootstrap
// leases, as dnsmasq's lease file lists them.
const (
	addrA = "192.168.2.150"
	addrB = "192.168.2.151"
	macA  = "02:4d:41:59:55:01"
	macB  = "02:4d:41:59:55:02"
)

// withMachines puts a machine guard with A's and B's leases on e's server.
func (e *env) withMachines(mode machineauth.Mode) {
	e.t.Helper()
	leases := filepath.Join(e.dir, "dnsmasq.leases")
	require.NoError(e.t, os.WriteFile(leases, []byte(
		"1900000000 "+macA+" "+addrA+" * *\n1900000000 "+macB+" "+addrB+" * *\n"), 0o644))
	g, err := machineauth.New(machineauth.Config{Mode: mode, Hosts: e.srv.prov,
		Leases: machineauth.NewLeaseFile(leases, nil), Dir: filepath.Join(e.dir, "bindings")})
	require.NoError(e.t, err)
	e.srv.cfg.Machines = g
}

// from sends a request from source address src, as a machine sends it:
// to mayu's bind address, with no admin credential.
func (e *env) from(src, method, path, body string, headers ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Host = "192.168.2.2:4080"
	req.RemoteAddr = net.JoinHostPort(src, "40000")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	return rec
}

func factsOf(serial, mac string) string {
	return fmt.Sprintf(`{"Serial":%q,"NetDevs":[{"Name":"eth0","MacAddress":%q}],"ConnectedNIC":"eth0"}`, serial, mac)
}

// Machine B can do nothing as machine A: not fetch A's script (nor its
// credential), not post facts for A (and read A's final config), not mark A
// installed or running, not fetch A's images.
func TestMachineRoutesAnswerOnlyTheirMachine(t *testing.T) {
	e := newEnv(t)
	e.withMachines(machineauth.ModeLease)

	require.Equal(t, 200, e.from(addrA, "GET", "/first-stage-script/serial-a", "").Code)
	tokenA := e.render.first.MachineToken
	assert.Len(t, tokenA, 64, "the script carries A's credential")

	b := e.from(addrB, "GET", "/first-stage-script/serial-a", "")
	assert.Equal(t, 403, b.Code)
	assert.Contains(t, b.Body.String(), "serial-a is bound to the machine with MAC "+macA)
	assert.Equal(t, tokenA, e.render.first.MachineToken, "nothing rendered for B")

	assert.Equal(t, 403, e.from(addrB, "POST", "/final-cloud-config.yaml", factsOf("serial-a", macB)).Code)
	assert.Equal(t, 403, e.from(addrB, "POST", "/final-cloud-config.yaml", factsOf("serial-a", macA)).Code)
	assert.Equal(t, 403, e.from(addrB, "GET", "/images/serial-a/install_image.bin.bz2", "").Code)
	assert.Empty(t, e.host("serial-a").MacAddresses, "nothing recorded from B")

	rec := e.from(addrA, "POST", "/final-cloud-config.yaml", factsOf("serial-a", macA))
	require.Equal(t, 200, rec.Code, rec.Body.String())
	assert.Equal(t, 200, e.from(addrA, "GET", "/images/serial-a/install_image.bin.bz2", "").Code)
	assert.Equal(t, 403, e.from(addrB, "PUT", "/admin/host/serial-a/set_installed", "").Code)
	assert.Equal(t, "installing", e.host("serial-a").State.String())
	require.Equal(t, 202, e.from(addrA, "PUT", "/admin/host/serial-a/set_installed", "").Code)

	// Installed: the machine boots from disk at its static address.
	ip := e.host("serial-a").InternalAddr.String()
	assert.Equal(t, 403, e.from(addrB, "PUT", "/admin/host/serial-a/boot_complete", "").Code)
	assert.Equal(t, 403, e.from("192.168.2.77", "PUT", "/admin/host/serial-a/boot_complete", "").Code)
	require.Equal(t, 202, e.from(ip, "PUT", "/admin/host/serial-a/boot_complete", "").Code)
	// Or from anywhere with its credential (what mayuctl boot-complete
	// sends from /etc/mayu-env).
	require.Equal(t, 202, e.from("10.1.1.1", "PUT", "/admin/host/serial-a/boot_complete", "",
		machineauth.Header, tokenA).Code)
	assert.Equal(t, 403, e.from("10.1.1.1", "PUT", "/admin/host/serial-a/boot_complete", "",
		machineauth.Header, strings.Repeat("f", 64)).Code)

	// Running: B asking for A's final config is refused and the record
	// stays as it is.
	before := e.host("serial-a")
	assert.Equal(t, 403, e.from(addrB, "POST", "/final-cloud-config.yaml", factsOf("serial-a", macA)).Code)
	assert.Equal(t, before, e.host("serial-a"))
	assert.Equal(t, "running", before.State.String())
}

// A machine cannot report another machine's card as its own: the facts
// must list the MAC of the requester's own lease, and none that another
// serial was bound by.
func TestFactsListTheRequestersCards(t *testing.T) {
	e := newEnv(t)
	e.withMachines(machineauth.ModeLease)
	require.Equal(t, 200, e.from(addrA, "GET", "/first-stage-script/victim", "").Code)
	require.Equal(t, 200, e.from(addrB, "GET", "/first-stage-script/thief", "").Code)
	rec := e.from(addrB, "POST", "/final-cloud-config.yaml", factsOf("thief", macA))
	assert.Equal(t, 403, rec.Code)
	assert.Contains(t, rec.Body.String(), "but not "+macB)
	both := fmt.Sprintf(`{"Serial":"thief","NetDevs":[{"Name":"eth0","MacAddress":%q},{"Name":"eth1","MacAddress":%q}]}`, macB, macA)
	rec = e.from(addrB, "POST", "/final-cloud-config.yaml", both)
	assert.Equal(t, 403, rec.Code)
	assert.Contains(t, rec.Body.String(), "MAC "+macA+" is the card serial victim was bound by")
	assert.Equal(t, 409, e.from(addrB, "PUT", "/admin/host/thief/set_installed", "").Code, "no MACs: DHCP could not ignore it")
	assert.Empty(t, e.host("thief").MacAddresses)
}

// Registrations of unknown serials are limited per source address; known
// serials and other addresses are not held up.
func TestAnonymousLimit(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.api.AnonymousLimit = 3 })
	for i := range 3 {
		require.Equal(t, 200, e.from("10.0.0.1", "GET", fmt.Sprintf("/first-stage-script/r%d", i), "").Code)
	}
	rec := e.from("10.0.0.1", "GET", "/first-stage-script/r3", "")
	assert.Equal(t, 429, rec.Code)
	assert.Contains(t, rec.Body.String(), "at most 3 a minute per address")
	assert.Equal(t, 429, e.from("10.0.0.1", "POST", "/final-cloud-config.yaml", factsOf("r4", macA)).Code,
		"a facts report registers too")
	assert.Equal(t, 200, e.from("10.0.0.1", "GET", "/first-stage-script/r0", "").Code, "a known serial")
	assert.Equal(t, 200, e.from("10.0.0.2", "GET", "/first-stage-script/r5", "").Code, "another address")
	assert.Len(t, e.srv.prov.Hosts(), 4)

	// PUT /etcd/new has its own count of the same size.
	req := httptest.NewRequest("PUT", "/etcd/new", nil)
	req.RemoteAddr = "10.0.0.1:5"
	for range 3 {
		require.NoError(t, e.srv.LimitNewTokens(req))
	}
	assert.ErrorContains(t, e.srv.LimitNewTokens(req), "too many new etcd discovery tokens")
}

// etcd members register from provisioned addresses, or configured ones.
func TestAuthorizeMemberWrite(t *testing.T) {
	_, n, _ := net.ParseCIDR("10.5.0.0/16")
	e := newEnv(t, func(c *envConfig) { c.api.EtcdMemberSources = []*net.IPNet{n} })
	require.Equal(t, 200, e.from("10.0.0.1", "GET", "/first-stage-script/m1", "").Code)
	ip := e.host("m1").InternalAddr.String()
	put := func(src string) error {
		r := httptest.NewRequest("PUT", "/etcd/tok/123", nil)
		r.RemoteAddr = src + ":5"
		return e.srv.AuthorizeMemberWrite(r)
	}
	assert.NoError(t, put(ip))
	assert.NoError(t, put("10.5.3.3"))
	assert.ErrorIs(t, put("10.0.0.1"), machineauth.ErrForbidden)
}

// With TLS the boot script hands the PXE image the pin of mayu's key, and
// the kernel and initrd come from the plain-HTTP boot URL; that listener
// answers nothing else.
func TestBootScriptAndBootRoutes(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.prov.NoTLS = false
		c.api.BootBaseURL = "http://192.168.2.2:4081"
		c.api.TLSPin = "sha256//AAAA"
	})
	body := e.do("GET", "/ipxebootscript", "").Body.String()
	assert.Contains(t, body, "kernel http://192.168.2.2:4081/images/vmlinuz ")
	assert.Contains(t, body, " mayu=https://192.168.2.2:4080 next-script=https://192.168.2.2:4080/first-stage-script/__SERIAL__ mayu-pin=sha256//AAAA\n")
	assert.Contains(t, body, "initrd http://192.168.2.2:4081/images/initrd.cpio.gz\n")

	boot := func(method, path string) int {
		rec := httptest.NewRecorder()
		e.srv.boot.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Code
	}
	assert.Equal(t, 200, boot("GET", "/ipxebootscript"))
	assert.Equal(t, 200, boot("GET", "/images/vmlinuz"))
	assert.Equal(t, 200, boot("HEAD", "/images/initrd.cpio.gz"))
	for _, p := range []string{"/first-stage-script/x", "/admin/hosts", "/images/x/install_image.bin.bz2", "/index.html"} {
		assert.Equal(t, 404, boot("GET", p), p)
	}
	assert.Equal(t, 405, boot("POST", "/ipxebootscript"))
}

// mayu's HTTPS offers TLS 1.2 with AEAD suites only (and TLS 1.3).
func TestTLSOnlyAEAD(t *testing.T) {
	e := newEnv(t)
	certFile, keyFile, pool := proctest.SelfSignedCert(t, t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, ln, certFile, keyFile, time.Second) }()
	t.Cleanup(func() { cancel(); <-done })

	get := func(conf *tls.Config) error {
		conf.RootCAs = pool
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: conf}}
		resp, err := c.Get("https://" + ln.Addr().String() + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	assert.NoError(t, get(&tls.Config{}), "TLS 1.3")
	assert.NoError(t, get(&tls.Config{MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}), "TLS 1.2 with AES-GCM")
	assert.NoError(t, get(&tls.Config{MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}), "TLS 1.2 with ChaCha20-Poly1305")
	for name, suite := range map[string]uint16{
		"AES-CBC-SHA":    tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
		"AES-CBC-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
		"AES-256-CBC":    tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	} {
		err := get(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}})
		assert.ErrorContains(t, err, "handshake failure", "%s must not be offered", name)
	}
	assert.Error(t, get(&tls.Config{MaxVersion: tls.VersionTLS11}), "TLS 1.1")
	for _, id := range TLSConfig().CipherSuites {
		s := tls.CipherSuiteName(id)
		assert.True(t, strings.Contains(s, "_GCM_") || strings.Contains(s, "CHACHA20_POLY1305"), s)
	}
}
