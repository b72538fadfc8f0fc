//go:build nettest

// Network tests: real dnsmasq supervised by this package, on a bridge in a
// network namespace of the test's own, with real DHCP (busybox udhcpc) and
// TFTP (tftp-hpa, busybox tftp) clients in a second namespace. Root only;
// run with `make test-net` (go test -tags nettest). Traffic never leaves the
// two namespaces: the bridge has no uplink and the namespaces no routes.
package dnsmasq

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
	"mayu/pkg/host"
)

// Addresses and MACs inside the test's namespaces.
const (
	provAddr   = "192.168.2.2"
	tftpClient = "192.168.2.250"
	macMachine = "02:4d:41:59:55:01" // the machine whose state changes
	macOther   = "02:4d:41:59:55:02" // a bystander that keeps DHCPing
	pxeVendor  = "PXEClient:Arch:00000:UNDI:002001"
)

// lab is a provisioning segment: namespace prov with bridge br0 at
// 192.168.2.2/24, namespace cli with veths on that bridge: c0 (static
// 192.168.2.250, the TFTP client), c1 (macMachine), c2 (macOther).
type lab struct {
	t        *testing.T
	prov     string
	cli      string
	dir      string
	tftproot string
	wrapper  string // runs dnsmasq inside prov; exec keeps the PID
	script   string // udhcpc script that records the lease
}

func requireNetLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "network test needs root (network namespaces), running as uid %d", os.Geteuid())
	}
	for _, tool := range []struct{ path, pkg string }{
		{DefaultBinary, "dnsmasq-base"},
		{"/usr/bin/busybox", "busybox-static"},
		{"/usr/bin/tftp", "tftp-hpa"},
	} {
		if _, err := os.Stat(tool.path); err != nil {
			skipOrFail(t, "%s missing (Debian package %s)", tool.path, tool.pkg)
		}
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skipOrFail(t, "ip missing (Debian package iproute2)")
	}
}

func newLab(t *testing.T) *lab {
	t.Helper()
	requireNetLab(t)
	sfx := fmt.Sprintf("%d-%04x", os.Getpid()%100000, rand.IntN(0x10000))
	l := &lab{t: t, prov: "mayu-dp-" + sfx, cli: "mayu-dc-" + sfx, dir: t.TempDir()}
	for _, ns := range []string{l.prov, l.cli} {
		l.must("ip", "netns", "add", ns)
		ns := ns
		t.Cleanup(func() { l.deleteNamespace(ns) })
	}
	l.must("ip", "-n", l.prov, "link", "set", "lo", "up")
	l.must("ip", "-n", l.prov, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
	l.must("ip", "-n", l.prov, "addr", "add", provAddr+"/24", "dev", "br0")
	l.must("ip", "-n", l.prov, "link", "set", "br0", "up")
	for i, mac := range []string{"02:4d:41:59:55:00", macMachine, macOther} {
		vp, c := fmt.Sprintf("vp%d", i), fmt.Sprintf("c%d", i)
		l.must("ip", "-n", l.prov, "link", "add", vp, "type", "veth", "peer", "name", c, "netns", l.cli)
		l.must("ip", "-n", l.prov, "link", "set", vp, "master", "br0", "up")
		l.must("ip", "-n", l.cli, "link", "set", c, "address", mac, "up")
	}
	l.must("ip", "-n", l.cli, "addr", "add", tftpClient+"/24", "dev", "c0")

	l.tftproot = filepath.Join(l.dir, "tftproot")
	require.NoError(t, os.MkdirAll(l.tftproot, 0o755))
	kpxe, err := os.ReadFile("../../tftproot/undionly.kpxe")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(l.tftproot, "undionly.kpxe"), kpxe, 0o644))

	l.wrapper = filepath.Join(l.dir, "dnsmasq-in-netns")
	require.NoError(t, os.WriteFile(l.wrapper, []byte(fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", l.prov, DefaultBinary)), 0o755))
	l.script = filepath.Join(l.dir, "udhcpc.script")
	require.NoError(t, os.WriteFile(l.script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && env > \"$MAYU_DHCP_OUT\"\nexit 0\n"), 0o755))
	return l
}

// deleteNamespace kills what still runs in it (by PID) and removes it.
func (l *lab) deleteNamespace(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
			l.t.Logf("cleanup: killing pid %d left in namespace %s", pid, ns)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
		l.t.Errorf("cleanup: ip netns del %s: %v: %s", ns, err, out)
	}
}

func (l *lab) must(args ...string) string {
	return l.mustT(l.t, args...)
}

func (l *lab) mustT(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	require.NoError(t, err, "%s: %s", strings.Join(args, " "), out)
	return string(out)
}

// nsPIDs lists the processes running in the provisioning namespace.
func (l *lab) nsPIDs(t *testing.T) []string {
	return strings.Fields(l.mustT(t, "ip", "netns", "pids", l.prov))
}

func (l *lab) network(pxe bool) config.Network {
	return config.Network{
		PXE:            pxe,
		Interface:      "br0",
		BindAddr:       provAddr,
		BootstrapRange: config.IPRange{Start: "192.168.2.100", End: "192.168.2.200"},
		IPRange:        config.IPRange{Start: "192.168.2.21", End: "192.168.2.99"},
		DNS:            []string{provAddr},
		Router:         provAddr,
		NetworkModel:   "singlenic",
	}
}

// supervisor builds a Supervisor over the shipped template, logging into
// sink; the last lines are printed if the test fails.
func (l *lab) supervisor(t *testing.T, pxe bool, sink *logSink) *Supervisor {
	t.Helper()
	s, err := New(Config{
		Binary: l.wrapper, Template: shippedTemplate, RuntimeDir: filepath.Join(l.dir, "run"),
		Network: l.network(pxe), TFTPRoot: l.tftproot, NoTLS: false, HTTPPort: 4443,
		Logger: slog.New(sink), RestartBackoff: 100 * time.Millisecond, StopTimeout: 5 * time.Second,
	})
	require.NoError(t, err)
	// dnsmasq runs in the provisioning namespace: check what it will see.
	s.sys = nsSys{ns: l.prov}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last log lines:\n%s", sink.tail(60))
		}
	})
	return s
}

// lease is what udhcpc's script saw when it got a lease.
type lease map[string]string

// dhcp runs one DHCP exchange (busybox udhcpc, broadcast flag set as PXE
// ROMs and iPXE do) on a client interface, sending up to tries DISCOVERs a
// second apart. It returns the lease, or nil when nobody answered.
func (l *lab) dhcp(t *testing.T, iface string, tries int, extra ...string) lease {
	t.Helper()
	ls, err := l.tryDHCP(iface, tries, extra...)
	require.NoError(t, err)
	return ls
}

// tryDHCP is dhcp for goroutines that must not fail the test themselves.
func (l *lab) tryDHCP(iface string, tries int, extra ...string) (lease, error) {
	out := filepath.Join(l.dir, fmt.Sprintf("lease-%s-%d", iface, rand.Int()))
	defer os.Remove(out)
	args := append([]string{"netns", "exec", l.cli, "busybox", "udhcpc", "-B", "-i", iface, "-f", "-q", "-n",
		"-t", fmt.Sprint(tries), "-T", "1", "-s", l.script, "-V", pxeVendor}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(tries+10)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Env = append(os.Environ(), "MAYU_DHCP_OUT="+out)
	res, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("udhcpc on %s did not finish: %s", iface, res)
	}
	if err != nil {
		return nil, nil // -n: exit 1 without a lease
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("udhcpc got a lease but the script did not record it: %w: %s", err, res)
	}
	ls := lease{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			ls[k] = v
		}
	}
	return ls, nil
}

func inBootstrapRange(t *testing.T, ip string) {
	t.Helper()
	a := net.ParseIP(ip).To4()
	require.NotNil(t, a, "no IPv4 address in lease: %q", ip)
	n := config.IPToUint32(a)
	assert.True(t, n >= config.IPToUint32(net.ParseIP("192.168.2.100")) && n <= config.IPToUint32(net.ParseIP("192.168.2.200")),
		"%s is outside the bootstrap range", ip)
}

func machine(st host.State) host.Host {
	return host.Host{Serial: "machine-1", State: st, MacAddresses: []string{macMachine}}
}

// others is a fleet of hosts whose state never changes in the test, so
// the hosts file is not trivially small.
func others() []host.Host {
	var hs []host.Host
	for i := 0; i < 50; i++ {
		st := host.Running
		if i%3 == 0 {
			st = host.Configured
		}
		hs = append(hs, host.Host{Serial: fmt.Sprintf("other-%d", i), State: st,
			MacAddresses: []string{fmt.Sprintf("02:00:00:00:10:%02x", i), fmt.Sprintf("02:00:00:00:11:%02x", i)},
			InternalAddr: net.ParseIP(fmt.Sprintf("192.168.2.%d", 30+i))})
	}
	return hs
}

func fleet(st host.State) []host.Host { return append(others(), machine(st)) }

func sha(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return sha256.Sum256(b)
}

func TestNetDnsmasq(t *testing.T) {
	l := newLab(t)
	sink := &logSink{}
	s := l.supervisor(t, true, sink)
	_, hostsPath, leasePath := s.Paths()
	readHosts := "read " + hostsPath // dnsmasq's log line when it (re)reads the hosts file
	ready := "sockets bound exclusively to interface br0"

	require.NoError(t, s.Check(), "shipped template rejected by the real dnsmasq")
	s.Sync(fleet(host.Configured))

	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-runErr:
			require.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return within 20s of cancel")
		}
	}
	t.Cleanup(stop)
	pid := waitPID(t, s, 0)
	sink.waitCount(t, ready, 1, 20*time.Second)
	sink.waitCount(t, readHosts, 1, 20*time.Second)
	// Fresh veths can lose the first frames; let both clients get through
	// once before measuring anything.
	require.NotNil(t, l.dhcp(t, "c1", 10), "machine client never got a lease")
	require.NotNil(t, l.dhcp(t, "c2", 10), "bystander client never got a lease")

	t.Run("PXE client gets undionly.kpxe over TFTP", func(t *testing.T) {
		ls := l.dhcp(t, "c1", 5)
		require.NotNil(t, ls, "no DHCP answer")
		inBootstrapRange(t, ls["ip"])
		assert.Equal(t, "undionly.kpxe", ls["boot_file"])
		assert.Equal(t, provAddr, ls["siaddr"])
		assert.Equal(t, provAddr, ls["router"])
		assert.Equal(t, "120", ls["lease"], "bootstrap leases are 1 minute (dnsmasq's minimum is 2m)")

		got := filepath.Join(l.dir, "undionly.kpxe.got")
		l.mustT(t, "ip", "netns", "exec", l.cli, "tftp", "-m", "binary", provAddr, "-c", "get", ls["boot_file"], got)
		assert.Equal(t, sha(t, "../../tftproot/undionly.kpxe"), sha(t, got), "TFTP download differs from tftproot/undionly.kpxe")
	})

	t.Run("iPXE client gets the boot script URL", func(t *testing.T) {
		ls := l.dhcp(t, "c1", 5, "-x", "0xaf:b10100")
		require.NotNil(t, ls, "no DHCP answer")
		inBootstrapRange(t, ls["ip"])
		assert.Equal(t, "https://192.168.2.2:4443/ipxebootscript", ls["boot_file"])
	})

	t.Run("installed MAC is ignored, configured answered again", func(t *testing.T) {
		before := sink.count(readHosts)
		t0 := time.Now()
		s.Sync(fleet(host.Installed))
		sink.waitCount(t, readHosts, before+1, 10*time.Second)
		at, _ := sink.nth(readHosts, before+1)
		t.Logf("FIGURE Sync(installed) -> dnsmasq re-read hosts file: %s", at.Sub(t0))
		ignoredBefore := sink.count("DHCPDISCOVER(br0) " + macMachine + " ignored")
		assert.Nil(t, l.dhcp(t, "c1", 3), "installed machine still answered")
		assert.Greater(t, sink.count("DHCPDISCOVER(br0) "+macMachine+" ignored"), ignoredBefore, "dnsmasq did not log the ignored DISCOVER")
		assert.NotNil(t, l.dhcp(t, "c2", 5), "bystander not answered while the machine is ignored")

		before = sink.count(readHosts)
		s.Sync(fleet(host.Configured))
		sink.waitCount(t, readHosts, before+1, 10*time.Second)
		ls := l.dhcp(t, "c1", 5)
		require.NotNil(t, ls, "configured machine not answered again")
		assert.Equal(t, "undionly.kpxe", ls["boot_file"])
		assert.Equal(t, pid, s.PID(), "dnsmasq restarted")
	})

	t.Run("100 state changes: same PID, TFTP transfer intact, DHCP available", func(t *testing.T) {
		big := filepath.Join(l.tftproot, "big.bin")
		data := make([]byte, 64<<20)
		rng := rand.NewChaCha8([32]byte{1, 2, 3})
		_, _ = rng.Read(data)
		require.NoError(t, os.WriteFile(big, data, 0o644))
		want := sha256.Sum256(data)
		data = nil

		got := filepath.Join(l.dir, "big.got")
		tctx, tcancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer tcancel()
		tftp := exec.CommandContext(tctx, "ip", "netns", "exec", l.cli, "busybox", "tftp", "-g", "-b", "1468",
			"-r", "big.bin", "-l", got, provAddr)
		var tftpOut bytes.Buffer
		tftp.Stdout, tftp.Stderr = &tftpOut, &tftpOut
		tftpStart := time.Now()
		require.NoError(t, tftp.Start())
		tftpDone := make(chan error, 1)
		var tftpEnd time.Time
		go func() { err := tftp.Wait(); tftpEnd = time.Now(); tftpDone <- err }()
		require.Eventually(t, func() bool { fi, err := os.Stat(got); return err == nil && fi.Size() > 0 },
			30*time.Second, 10*time.Millisecond, "TFTP download did not start")

		// The bystander DHCPs in a loop the whole time.
		type probe struct {
			ok       bool
			from, to time.Time
		}
		var (
			probesMu sync.Mutex
			probes   []probe
		)
		probeStop := make(chan struct{})
		probeDone := make(chan struct{})
		go func() {
			defer close(probeDone)
			for {
				select {
				case <-probeStop:
					return
				default:
				}
				from := time.Now()
				ls, err := l.tryDHCP("c2", 5)
				probesMu.Lock()
				probes = append(probes, probe{ok: ls != nil && err == nil, from: from, to: time.Now()})
				probesMu.Unlock()
			}
		}()

		var latencies []time.Duration
		duringTransfer := 0
		syncStart := time.Now()
		for i := 0; i < 100; i++ {
			st := host.Installed
			if i%2 == 1 {
				st = host.Configured
			}
			before := sink.count(readHosts)
			t0 := time.Now()
			s.Sync(fleet(st))
			sink.waitCount(t, readHosts, before+1, 10*time.Second)
			at, _ := sink.nth(readHosts, before+1)
			latencies = append(latencies, at.Sub(t0))
			select {
			case err := <-tftpDone:
				tftpDone <- err
			default:
				duringTransfer++
			}
		}
		syncEnd := time.Now()
		// Let the bystander finish a few more rounds after the last change.
		probesMu.Lock()
		n := len(probes)
		probesMu.Unlock()
		require.Eventually(t, func() bool { probesMu.Lock(); defer probesMu.Unlock(); return len(probes) >= n+2 },
			30*time.Second, 10*time.Millisecond)
		close(probeStop)
		<-probeDone

		select {
		case err := <-tftpDone:
			require.NoError(t, err, "busybox tftp: %s", tftpOut.String())
		case <-time.After(10 * time.Minute):
			t.Fatal("TFTP download did not finish within 10 minutes")
		}
		assert.Equal(t, want, sha(t, got), "large TFTP download corrupted")
		assert.Equal(t, pid, s.PID(), "dnsmasq PID changed across 100 state changes")
		assert.Equal(t, 0, s.Restarts())
		assert.Positive(t, duringTransfer, "the TFTP transfer was not under way during the state changes")

		probesMu.Lock()
		defer probesMu.Unlock()
		failed, maxExchange := 0, time.Duration(0)
		for _, p := range probes {
			if !p.ok {
				failed++
			}
			maxExchange = max(maxExchange, p.to.Sub(p.from))
		}
		assert.Zero(t, failed, "bystander DHCP went unanswered %d of %d times during the state changes", failed, len(probes))
		slices.Sort(latencies)
		t.Logf("FIGURE 100 state changes in %s; Sync -> dnsmasq re-read hosts file: min %s, median %s, p95 %s, max %s",
			syncEnd.Sub(syncStart).Round(time.Millisecond), latencies[0], latencies[50], latencies[94], latencies[99])
		t.Logf("FIGURE bystander DHCP during them: %d exchanges, %d unanswered, longest exchange %s",
			len(probes), failed, maxExchange.Round(time.Millisecond))
		t.Logf("FIGURE TFTP 64 MiB (blksize 1468) took %s, %d of 100 state changes happened during it, PID %d unchanged",
			tftpEnd.Sub(tftpStart).Round(time.Millisecond), duringTransfer, pid)
		ls := l.dhcp(t, "c1", 5)
		require.NotNil(t, ls, "machine (configured after the last change) not answered")
	})

	t.Run("killed dnsmasq comes back with its leases", func(t *testing.T) {
		leases, err := os.ReadFile(leasePath)
		require.NoError(t, err)
		require.Contains(t, string(leases), macMachine)
		require.Contains(t, string(leases), macOther)
		readyBefore := sink.count(ready)
		old := s.PID()
		require.NoError(t, syscall.Kill(old, syscall.SIGKILL))
		pid = waitPID(t, s, old)
		sink.waitCount(t, ready, readyBefore+1, 20*time.Second)
		assert.Equal(t, 1, s.Restarts())
		attrs, ok := sink.find("exited unexpectedly")
		require.True(t, ok)
		assert.Equal(t, "signal: killed", attrs["status"])

		ls := l.dhcp(t, "c2", 10)
		require.NotNil(t, ls, "no DHCP answer after the restart")
		// dnsmasq rewrote the lease file after c2's exchange; the machine's
		// lease from before the restart is still in it, so leases were
		// loaded, not lost.
		leases, err = os.ReadFile(leasePath)
		require.NoError(t, err)
		assert.Contains(t, string(leases), macMachine)
		assert.Contains(t, string(leases), macOther)
	})

	t.Run("stop leaves no dnsmasq", func(t *testing.T) {
		last := s.PID()
		require.NotZero(t, last)
		stop()
		assert.Zero(t, s.PID())
		assert.ErrorIs(t, syscall.Kill(last, 0), syscall.ESRCH, "dnsmasq pid %d still exists", last)
		assert.Empty(t, l.nsPIDs(t), "processes left in the provisioning namespace")
	})

	t.Run("pxe false serves plain DHCP", func(t *testing.T) {
		sink2 := &logSink{}
		s2 := l.supervisor(t, false, sink2)
		require.NoError(t, s2.Check())
		ctx2, cancel2 := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s2.Run(ctx2) }()
		defer func() {
			cancel2()
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-time.After(20 * time.Second):
				t.Error("Run did not return")
			}
			assert.Empty(t, l.nsPIDs(t), "processes left in the provisioning namespace")
		}()
		sink2.waitCount(t, ready, 1, 20*time.Second)
		ls := l.dhcp(t, "c1", 10)
		require.NotNil(t, ls, "no DHCP answer without PXE")
		inBootstrapRange(t, ls["ip"])
		assert.Empty(t, ls["boot_file"])
		assert.Zero(t, sink2.count("TFTP root"), "TFTP enabled without PXE")
	})
}
