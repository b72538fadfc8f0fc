package machineauth

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
)

// fakeHosts is a host table for the guard.
type fakeHosts map[string]host.Host

func (f fakeHosts) Host(serial string) (host.Host, bool) { h, ok := f[serial]; return h, ok }
func (f fakeHosts) HostByMAC(mac string) (host.Host, bool) {
	for _, h := range f {
		for _, m := range h.MacAddresses {
			if m == mac {
				return h, true
			}
		}
	}
	return host.Host{}, false
}

// leaseTable writes a dnsmasq lease file of ip=mac pairs and returns its
// reader.
func leaseTable(t *testing.T, pairs ...string) *LeaseFile {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dnsmasq.leases")
	writeLeases(t, p, pairs...)
	return NewLeaseFile(p, nil)
}

func writeLeases(t *testing.T, path string, pairs ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("duid 00:01:00:01:2c:00:00:00:02:42:ac:11:00:02\n")
	for _, p := range pairs {
		ip, mac, _ := strings.Cut(p, "=")
		b.WriteString("1900000000 " + mac + " " + ip + " * 01:" + mac + "\n")
	}
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
}

const (
	macA = "02:00:00:00:00:0a"
	macB = "02:00:00:00:00:0b"
	ipA  = "192.168.2.150"
	ipB  = "192.168.2.151"
)

func req(serial, src string, kind Kind) Request {
	return Request{Serial: serial, Source: net.ParseIP(src), Kind: kind}
}

func newGuard(t *testing.T, hosts fakeHosts, leases Leases, mode Mode) *Guard {
	t.Helper()
	g, err := New(Config{Mode: mode, Hosts: hosts, Leases: leases, Dir: filepath.Join(t.TempDir(), "bindings")})
	require.NoError(t, err)
	return g
}

func TestLeaseFile(t *testing.T) {
	l := leaseTable(t, ipA+"="+strings.ToUpper(macA))
	mac, ok := l.Lookup(net.ParseIP(ipA))
	require.True(t, ok)
	assert.Equal(t, macA, mac, "normalized")
	ip, ok := l.ByMAC(macA)
	require.True(t, ok)
	assert.Equal(t, ipA, ip.String())
	_, ok = l.Lookup(net.ParseIP(ipB))
	assert.False(t, ok)

	writeLeases(t, l.Path(), ipB+"="+macB, "not a lease", "1 zz "+ipA)
	_, ok = l.Lookup(net.ParseIP(ipA))
	assert.False(t, ok, "a changed file is read again")
	mac, ok = l.Lookup(net.ParseIP(ipB))
	assert.True(t, ok)
	assert.Equal(t, macB, mac)

	require.NoError(t, os.Remove(l.Path()))
	_, ok = l.Lookup(net.ParseIP(ipB))
	assert.False(t, ok, "no file: no leases")
}

// dnsmasq acknowledges before it rewrites the lease file: a lookup that
// misses while the file is changing looks again, and finds the lease once
// it is written.
func TestLeaseWrittenAfterTheAnswer(t *testing.T) {
	l := leaseTable(t, ipA+"="+macA)
	_, ok := l.Lookup(net.ParseIP(ipA))
	require.True(t, ok)
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(3 * missWait)
		writeLeases(t, l.Path(), ipA+"="+macA, ipB+"="+macB)
	}()
	mac, ok := l.Lookup(net.ParseIP(ipB))
	<-done
	assert.True(t, ok, "lease written %v after the lookup began", 3*missWait)
	assert.Equal(t, macB, mac)

	// A file that has not changed for a while is not waited for.
	old := time.Now().Add(-time.Minute)
	require.NoError(t, os.Chtimes(l.Path(), old, old))
	start := time.Now()
	_, ok = l.Lookup(net.ParseIP("10.9.9.9"))
	assert.False(t, ok)
	assert.Less(t, time.Since(start), missWait, "a settled file answers a miss at once")
}

// A machine binds its serial with its first request; another machine
// cannot act as it afterwards, by any route.
func TestLeaseBinding(t *testing.T) {
	hosts := fakeHosts{}
	g := newGuard(t, hosts, leaseTable(t, ipA+"="+macA, ipB+"="+macB), ModeLease)

	tok, err := g.Issue(req("s1", ipA, FirstStage))
	require.NoError(t, err)
	assert.Len(t, tok, 64)
	hosts["s1"] = host.Host{Serial: "s1", State: host.Configured, InternalAddr: net.ParseIP("192.168.2.21")}

	for _, k := range []Kind{FirstStage, Facts, Machine, Image} {
		assert.NoError(t, g.Authorize(req("s1", ipA, k)), "the machine itself, %s", k)
		err := g.Authorize(req("s1", ipB, k))
		assert.ErrorIs(t, err, ErrForbidden, "another machine, %s", k)
	}
	_, err = g.Issue(req("s1", ipB, FirstStage))
	assert.ErrorIs(t, err, ErrForbidden, "no credential for another machine")

	// B's own serial is fine; but B cannot take a second serial with its
	// one MAC (draining ip_range one lease at a time).
	_, err = g.Issue(req("s2", ipB, FirstStage))
	require.NoError(t, err)
	_, err = g.Issue(req("s3", ipB, FirstStage))
	assert.ErrorContains(t, err, "bound to serial s2 already")

	// An address without a lease is nobody, unless it is where the serial
	// was bound from (a lease dnsmasq pruned) or the machine's own static
	// address.
	err = g.Authorize(req("s9", "192.168.2.7", Machine))
	assert.ErrorContains(t, err, "holds no DHCP lease")
	assert.NoError(t, g.Authorize(req("s1", "192.168.2.21", Machine)), "InternalAddr")

	// The credential works from anywhere; a wrong one from nowhere.
	r := req("s1", "10.9.9.9", Machine)
	r.Credential = tok
	assert.NoError(t, g.Authorize(r))
	r.Credential = strings.Repeat("0", 64)
	assert.ErrorContains(t, g.Authorize(r), "not the one mayu gave s1")
	r = req("s1", ipA, Machine)
	r.Credential = "x"
	assert.ErrorIs(t, g.Authorize(r), ErrForbidden, "a wrong credential is refused even from the right address")

	// Bindings survive a restart.
	g2, err := New(Config{Hosts: hosts, Leases: g.cfg.Leases, Dir: g.cfg.Dir})
	require.NoError(t, err)
	r = req("s1", "10.9.9.9", Machine)
	r.Credential = tok
	assert.NoError(t, g2.Authorize(r))
	assert.ErrorIs(t, g2.Authorize(req("s1", ipB, Facts)), ErrForbidden)
	fi, err := os.Stat(filepath.Join(g.cfg.Dir, "s1.json"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	raw, err := os.ReadFile(filepath.Join(g.cfg.Dir, "s1.json"))
	require.NoError(t, err)
	assert.NotContains(t, string(raw), tok, "only the credential's hash is stored")
}

// Known machines are recognised by their recorded MACs; an installed or
// running machine by its address or credential only.
func TestRecordedMachines(t *testing.T) {
	hosts := fakeHosts{
		"run": {Serial: "run", State: host.Running, MacAddresses: []string{macA}, InternalAddr: net.ParseIP("192.168.2.21")},
		"cfg": {Serial: "cfg", State: host.Configured, MacAddresses: []string{macB}},
	}
	g := newGuard(t, hosts, leaseTable(t, ipA+"="+macA, ipB+"="+macB), ModeLease)
	assert.NoError(t, g.Authorize(req("run", "192.168.2.21", Machine)))
	assert.NoError(t, g.Authorize(req("cfg", ipB, Facts)), "a reinstall: its lease MAC is recorded")
	err := g.Authorize(req("run", ipB, Facts))
	assert.ErrorContains(t, err, "run is running: it proves itself")
	err = g.Authorize(req("cfg", ipA, FirstStage))
	assert.ErrorContains(t, err, "has MACs "+macB)
	_, err = g.Issue(req("new", ipA, FirstStage))
	assert.ErrorContains(t, err, "a MAC of run", "a known machine under a new serial")
	assert.NoError(t, g.Authorize(req("unknown", ipB, Image)), "default images for a serial without a record")
}

// Without a lease table (DHCP is not mayu's) the first requester binds a
// serial by its address; the first-stage script of a serial set configured
// after an install rebinds it (a reinstall from a new address).
func TestNoLeaseTable(t *testing.T) {
	hosts := fakeHosts{}
	g := newGuard(t, hosts, nil, ModeLease)
	_, err := g.Issue(req("s1", "10.0.0.1", FirstStage))
	require.NoError(t, err)
	hosts["s1"] = host.Host{Serial: "s1", State: host.Installing}
	assert.NoError(t, g.Authorize(req("s1", "10.0.0.1", Facts)))
	assert.ErrorIs(t, g.Authorize(req("s1", "10.0.0.2", Facts)), ErrForbidden)
	_, err = g.Issue(req("s1", "10.0.0.2", FirstStage))
	assert.ErrorIs(t, err, ErrForbidden, "installing: still bound")
	hosts["s1"] = host.Host{Serial: "s1", State: host.Configured}
	_, err = g.Issue(req("s1", "10.0.0.2", FirstStage))
	assert.ErrorIs(t, err, ErrForbidden, "configured, never installed: still bound")
	hosts["s1"] = host.Host{Serial: "s1", State: host.Configured, MacAddresses: []string{macA}}
	_, err = g.Issue(req("s1", "10.0.0.2", FirstStage))
	assert.NoError(t, err, "configured again after an install: a reinstall rebinds")
	assert.ErrorIs(t, g.Authorize(req("s1", "10.0.0.1", Machine)), ErrForbidden)
}

func TestModes(t *testing.T) {
	hosts := fakeHosts{"s1": {Serial: "s1", State: host.Running, InternalAddr: net.ParseIP("10.0.0.5")}}
	g := newGuard(t, hosts, nil, ModeCredential)
	err := g.Authorize(req("s1", "10.0.0.5", Machine))
	assert.ErrorContains(t, err, "credential is required", "its address is not enough")
	hosts["s2"] = host.Host{Serial: "s2", State: host.Configured}
	tok, err := g.Issue(req("s2", "10.0.0.6", FirstStage))
	require.NoError(t, err)
	r := req("s2", "10.0.0.6", Facts)
	r.Credential = tok
	assert.NoError(t, g.Authorize(r))
	assert.NoError(t, g.Authorize(req("nobody", "10.0.0.6", Image)))

	off := newGuard(t, hosts, nil, ModeOff)
	tok, err = off.Issue(req("s1", "1.2.3.4", FirstStage))
	assert.NoError(t, err)
	assert.Empty(t, tok, "no credentials to carry")
	assert.NoError(t, off.Authorize(req("s1", "1.2.3.4", Facts)))

	for _, s := range []string{"lease", "credential", "off"} {
		m, err := ParseMode(s)
		assert.NoError(t, err)
		assert.Equal(t, Mode(s), m)
	}
	_, err = ParseMode("on")
	assert.Error(t, err)
}

// A facts report must list the MAC the requester's lease is for, and no MAC
// another serial was bound by; a second card holding a lease of its own is
// fine (two cabled NICs).
func TestCheckFacts(t *testing.T) {
	g := newGuard(t, fakeHosts{}, leaseTable(t, ipA+"="+macA, ipB+"="+macB), ModeLease)
	r := req("s1", ipA, Facts)
	assert.NoError(t, g.CheckFacts(r, []string{macA, "02:00:00:00:00:99"}))
	assert.NoError(t, g.CheckFacts(r, []string{macA, macB}), "B's card is bound to no serial")
	assert.ErrorContains(t, g.CheckFacts(r, []string{macB}), "but not "+macA)
	_, err := g.Issue(req("s2", ipB, FirstStage))
	require.NoError(t, err)
	assert.ErrorContains(t, g.CheckFacts(r, []string{macA, macB}), "the card serial s2 was bound by")
	assert.NoError(t, g.CheckFacts(req("s2", ipB, Facts), []string{macB}))
	noLeases := newGuard(t, fakeHosts{}, nil, ModeLease)
	assert.NoError(t, noLeases.CheckFacts(r, []string{macB}), "nothing to check against")
}

func TestBadBindingFile(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "s1.json"), []byte(`{"Serial":"other"}`), 0o600))
	_, err := New(Config{Hosts: fakeHosts{}, Dir: dir})
	assert.ErrorContains(t, err, "is not the binding of serial")
}
