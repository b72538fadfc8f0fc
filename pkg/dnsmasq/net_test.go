//go:build nettest

// Network tests: real dnsmasq supervised by this package, on a bridge in a
// network namespace of the test's own, with real DHCP (busybox udhcpc) and
// TFTP (tftp-hpa, busybox tftp) clients in a second namespace. Root only;
// run with `make test-net` (go test -tags nettest). Traffic never leaves the
// two namespaces: the bridge has no uplink and the namespaces no routes.
package dnsmasq

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/pkg/proctest/netlab"
)

// lab is netlab's provisioning segment with a wrapper that runs dnsmasq
// inside its provisioning namespace (exec keeps the PID, so the
// supervisor signals dnsmasq itself).
type lab struct {
	*netlab.Lab
	wrapper string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	requireDnsmasq(t)
	l := &lab{Lab: netlab.New(t)}
	l.wrapper = filepath.Join(l.Dir, "dnsmasq-in-netns")
	require.NoError(t, os.WriteFile(l.wrapper, []byte(fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", l.Prov, DefaultBinary)), 0o755))
	return l
}

// supervisor builds a Supervisor over the shipped template, logging into
// sink; the last lines are printed if the test fails.
func (l *lab) supervisor(t *testing.T, pxe bool, sink *logSink) *Supervisor {
	t.Helper()
	s, err := New(Config{
		Binary: l.wrapper, Template: shippedTemplate, RuntimeDir: filepath.Join(l.Dir, "run"),
		Network: l.Network(pxe), TFTPRoot: l.TFTPRoot, NoTLS: false, HTTPPort: 4443,
		Logger: slog.New(sink), RestartBackoff: 100 * time.Millisecond, StopTimeout: 5 * time.Second,
	})
	require.NoError(t, err)
	// dnsmasq runs in the provisioning namespace: check what it will see.
	s.sys = nsSys{ns: l.Prov}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last log lines:\n%s", sink.tail(60))
		}
	})
	return s
}

func machine(st host.State) host.Host {
	return host.Host{Serial: "machine-1", State: st, MacAddresses: []string{netlab.MacMachine}}
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
	require.NotNil(t, l.DHCP(t, "c1", 10), "machine client never got a lease")
	require.NotNil(t, l.DHCP(t, "c2", 10), "bystander client never got a lease")

	t.Run("PXE client gets undionly.kpxe over TFTP", func(t *testing.T) {
		ls := l.DHCP(t, "c1", 5)
		require.NotNil(t, ls, "no DHCP answer")
		netlab.InBootstrapRange(t, ls["ip"])
		assert.Equal(t, "undionly.kpxe", ls["boot_file"])
		assert.Equal(t, netlab.ProvAddr, ls["siaddr"])
		assert.Equal(t, netlab.ProvAddr, ls["router"])
		assert.Equal(t, "120", ls["lease"], "bootstrap leases are 1 minute (dnsmasq's minimum is 2m)")

		got := filepath.Join(l.Dir, "undionly.kpxe.got")
		l.Run(t, "ip", "netns", "exec", l.Cli, "tftp", "-m", "binary", netlab.ProvAddr, "-c", "get", ls["boot_file"], got)
		assert.Equal(t, netlab.SHA256(t, proctest.RepoPath(t, "tftproot", "undionly.kpxe")), netlab.SHA256(t, got), "TFTP download differs from tftproot/undionly.kpxe")
	})

	t.Run("iPXE client gets the boot script URL", func(t *testing.T) {
		ls := l.DHCP(t, "c1", 5, "-x", "0xaf:b10100")
		require.NotNil(t, ls, "no DHCP answer")
		netlab.InBootstrapRange(t, ls["ip"])
		assert.Equal(t, "https://192.168.2.2:4443/ipxebootscript", ls["boot_file"])
	})

	t.Run("installed MAC is ignored, configured answered again", func(t *testing.T) {
		before := sink.count(readHosts)
		t0 := time.Now()
		s.Sync(fleet(host.Installed))
		sink.waitCount(t, readHosts, before+1, 10*time.Second)
		at, _ := sink.nth(readHosts, before+1)
		t.Logf("FIGURE Sync(installed) -> dnsmasq re-read hosts file: %s", at.Sub(t0))
		ignoredBefore := sink.count("DHCPDISCOVER(br0) " + netlab.MacMachine + " ignored")
		assert.Nil(t, l.DHCP(t, "c1", 3), "installed machine still answered")
		assert.Greater(t, sink.count("DHCPDISCOVER(br0) "+netlab.MacMachine+" ignored"), ignoredBefore, "dnsmasq did not log the ignored DISCOVER")
		assert.NotNil(t, l.DHCP(t, "c2", 5), "bystander not answered while the machine is ignored")

		before = sink.count(readHosts)
		s.Sync(fleet(host.Configured))
		sink.waitCount(t, readHosts, before+1, 10*time.Second)
		ls := l.DHCP(t, "c1", 5)
		require.NotNil(t, ls, "configured machine not answered again")
		assert.Equal(t, "undionly.kpxe", ls["boot_file"])
		assert.Equal(t, pid, s.PID(), "dnsmasq restarted")
	})

	t.Run("100 state changes: same PID, TFTP transfer intact, DHCP available", func(t *testing.T) {
		tftp := l.StartTFTP(t, "big.bin", 64<<20, [32]byte{1, 2, 3})
		// The bystander DHCPs in a loop the whole time.
		bystander := l.StartProber("c2")

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
			if tftp.Running() {
				duringTransfer++
			}
		}
		syncEnd := time.Now()
		// The bystander finishes a few more rounds after the last change.
		probes := bystander.Stop(t)
		tftp.Check(t)
		assert.Equal(t, pid, s.PID(), "dnsmasq PID changed across 100 state changes")
		assert.Equal(t, 0, s.Restarts())
		assert.Positive(t, duringTransfer, "the TFTP transfer was not under way during the state changes")

		failed, maxExchange := netlab.Unanswered(probes), time.Duration(0)
		for _, p := range probes {
			maxExchange = max(maxExchange, p.To.Sub(p.From))
		}
		assert.Zero(t, failed, "bystander DHCP went unanswered %d of %d times during the state changes", failed, len(probes))
		slices.Sort(latencies)
		t.Logf("FIGURE 100 state changes in %s; Sync -> dnsmasq re-read hosts file: min %s, median %s, p95 %s, max %s",
			syncEnd.Sub(syncStart).Round(time.Millisecond), latencies[0], latencies[50], latencies[94], latencies[99])
		t.Logf("FIGURE bystander DHCP during them: %d exchanges, %d unanswered, longest exchange %s",
			len(probes), failed, maxExchange.Round(time.Millisecond))
		t.Logf("FIGURE TFTP 64 MiB (blksize 1468) took %s, %d of 100 state changes happened during it, PID %d unchanged",
			tftp.End.Sub(tftp.Start).Round(time.Millisecond), duringTransfer, pid)
		ls := l.DHCP(t, "c1", 5)
		require.NotNil(t, ls, "machine (configured after the last change) not answered")
	})

	t.Run("killed dnsmasq comes back with its leases", func(t *testing.T) {
		leases, err := os.ReadFile(leasePath)
		require.NoError(t, err)
		require.Contains(t, string(leases), netlab.MacMachine)
		require.Contains(t, string(leases), netlab.MacOther)
		readyBefore := sink.count(ready)
		old := s.PID()
		require.NoError(t, syscall.Kill(old, syscall.SIGKILL))
		pid = waitPID(t, s, old)
		sink.waitCount(t, ready, readyBefore+1, 20*time.Second)
		assert.Equal(t, 1, s.Restarts())
		attrs, ok := sink.find("exited unexpectedly")
		require.True(t, ok)
		assert.Equal(t, "signal: killed", attrs["status"])

		ls := l.DHCP(t, "c2", 10)
		require.NotNil(t, ls, "no DHCP answer after the restart")
		// dnsmasq rewrote the lease file after c2's exchange; the machine's
		// lease from before the restart is still in it, so leases were
		// loaded, not lost.
		leases, err = os.ReadFile(leasePath)
		require.NoError(t, err)
		assert.Contains(t, string(leases), netlab.MacMachine)
		assert.Contains(t, string(leases), netlab.MacOther)
	})

	t.Run("stop leaves no dnsmasq", func(t *testing.T) {
		last := s.PID()
		require.NotZero(t, last)
		stop()
		assert.Zero(t, s.PID())
		assert.ErrorIs(t, syscall.Kill(last, 0), syscall.ESRCH, "dnsmasq pid %d still exists", last)
		assert.Empty(t, l.NSPIDs(t), "processes left in the provisioning namespace")
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
			assert.Empty(t, l.NSPIDs(t), "processes left in the provisioning namespace")
		}()
		sink2.waitCount(t, ready, 1, 20*time.Second)
		ls := l.DHCP(t, "c1", 10)
		require.NotNil(t, ls, "no DHCP answer without PXE")
		netlab.InBootstrapRange(t, ls["ip"])
		assert.Empty(t, ls["boot_file"])
		assert.Zero(t, sink2.count("TFTP root"), "TFTP enabled without PXE")
	})
}
