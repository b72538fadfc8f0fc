//go:build nettest

package netns

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/dnsmasq"
	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/pkg/proctest/netlab"
)

// netConfig is the config.yaml of a mayu serving the lab's segment.
var netConfig = proctest.Config(proctest.LoopConfig{
	Interface: "br0", BindAddr: netlab.ProvAddr, Gateway: netlab.ProvAddr,
	BootstrapStart: netlab.BootstrapStart, BootstrapEnd: netlab.BootstrapEnd,
	IPStart: "192.168.2.21", IPEnd: "192.168.2.99",
	Profiles: []proctest.Profile{{Name: "default", Tags: []string{"role-worker=true"}}},
})

// hostsFile is the name of the hosts file mayu writes for dnsmasq in its
// runtime directory.
const hostsFile = "dnsmasq.hosts"

type mayuProc struct {
	*proctest.Daemon
	l   *netlab.Lab
	run string // runtime dir
}

// startMayu runs the built mayu inside the provisioning namespace with
// real dnsmasq, serving HTTP on the lab's provisioning address.
func startMayu(t *testing.T, l *netlab.Lab, extra ...string) *mayuProc {
	t.Helper()
	return startMayuWith(t, l, netConfig, extra...)
}

// startMayuWith is startMayu with config.yaml text config.
func startMayuWith(t *testing.T, l *netlab.Lab, config string, extra ...string) *mayuProc {
	t.Helper()
	bin := proctest.Build(t)
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	f, args := proctest.MayuArgs(t, proctest.Flags{Dir: dir, ConfigText: config, Host: netlab.ProvAddr, Port: 4080,
		TFTPRoot: l.TFTPRoot, Dnsmasq: dnsmasq.DefaultBinary}, append([]string{"--no-tls", "--runtime-dir", run}, extra...)...)
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.Prov, bin.Mayu}, args...)...)
	d := proctest.StartDaemon(t, cmd, "http://"+netlab.ProvAddr+":4080")
	d.Client = netlab.HTTPClient(l.Prov)
	d.Flags = f
	return &mayuProc{Daemon: d, l: l, run: run}
}

// waitAnswers waits (60s at most) until mayu answers GET / with 200.
func (m *mayuProc) waitAnswers(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		r, err := m.Client.Get(m.Base + "/")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	}, 60*time.Second, 50*time.Millisecond, "mayu did not answer HTTP")
}

// dnsmasqPID is the process in the namespace that runs dnsmasq -k (not
// mayu, not a passing dnsmasq --test).
func (m *mayuProc) dnsmasqPID(t *testing.T) int {
	t.Helper()
	for _, f := range m.l.NSPIDs(t) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err != nil || pid == m.Cmd.Process.Pid {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && slices.Contains(strings.Split(string(b), "\x00"), "-k") {
			return pid
		}
	}
	return 0
}

func (m *mayuProc) waitDnsmasq(t *testing.T, not int) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool { pid = m.dnsmasqPID(t); return pid != 0 && pid != not },
		30*time.Second, 20*time.Millisecond, "no dnsmasq (other than %d) in the namespace", not)
	return pid
}

func TestNetMayuDaemon(t *testing.T) {
	proctest.RequireFile(t, dnsmasq.DefaultBinary, "dnsmasq-base")
	l := netlab.New(t)
	// The test plays the machine from the provisioner's own address, which
	// holds no DHCP lease: no machine auth here (TestNetMachineAuth plays
	// machines from their leases).
	m := startMayu(t, l, "--machine-auth=off")
	m.waitAnswers(t)
	pid := m.waitDnsmasq(t, 0)
	hostsPath := filepath.Join(m.run, hostsFile)
	readHosts := "read " + hostsPath
	require.Eventually(t, func() bool { return m.Out.Count(readHosts) >= 1 }, 30*time.Second, 10*time.Millisecond)
	require.NotNil(t, l.DHCP(t, "c1", 10), "machine client never got a lease")
	require.NotNil(t, l.DHCP(t, "c2", 10), "bystander client never got a lease")

	serial := "mayu-net-1"
	code, body := m.Do("GET", "/first-stage-script/"+serial, "")
	require.Equal(t, 200, code, body)
	facts := fmt.Sprintf(`{"Serial":%q,"NetDevs":[{"Name":"eth0","MacAddress":%q}],"IPMIAddress":"","ConnectedNIC":"eth0"}`, serial, netlab.MacMachine)
	code, body = m.Do("POST", "/final-cloud-config.yaml", facts)
	require.Equal(t, 200, code, body)

	// setState drives one state change over HTTP and waits until dnsmasq
	// has re-read its hosts file if the change affects it; it returns the
	// time from the request to that re-read.
	setState := func(t *testing.T, to host.State) time.Duration {
		t.Helper()
		before := m.Out.Count(readHosts)
		t0 := time.Now()
		var code int
		var body string
		switch to {
		case host.Installed:
			code, body = m.Do("PUT", "/admin/host/"+serial+"/set_installed", "")
		case host.Running:
			code, body = m.Do("PUT", "/admin/host/"+serial+"/boot_complete", `{"CoreOSVersion":"1068.6.0"}`)
		case host.Installing:
			code, body = m.Do("PUT", "/admin/host/"+serial+"/set_state", `{"State":"installing"}`)
		case host.Configured:
			code, body = m.Do("PUT", "/admin/host/"+serial+"/mark_fresh", "")
		}
		require.Equal(t, 202, code, "%s: %s", to, body)
		if to == host.Running || to == host.Installing {
			return 0 // same ignore set as the state before: nothing for dnsmasq
		}
		require.Eventually(t, func() bool { return m.Out.Count(readHosts) > before }, 10*time.Second, time.Millisecond,
			"dnsmasq did not re-read its hosts file after %s", to)
		return time.Since(t0)
	}

	t.Run("installing machine PXE-boots", func(t *testing.T) {
		ls := l.DHCP(t, "c1", 5)
		require.NotNil(t, ls)
		netlab.InBootstrapRange(t, ls["ip"])
		assert.Equal(t, "undionly.kpxe", ls["boot_file"])
		got := filepath.Join(l.Dir, "kpxe-via-mayu")
		l.Run(t, "ip", "netns", "exec", l.Cli, "tftp", "-m", "binary", netlab.ProvAddr, "-c", "get", "undionly.kpxe", got)
		assert.Equal(t, netlab.SHA256(t, proctest.RepoPath(t, "tftproot", "undionly.kpxe")), netlab.SHA256(t, got))
		ls = l.DHCP(t, "c1", 5, "-x", "0xaf:b10100")
		require.NotNil(t, ls)
		assert.Equal(t, "http://192.168.2.2:4080/ipxebootscript", ls["boot_file"])
	})

	t.Run("set_installed ignores the machine, set_state configured brings it back", func(t *testing.T) {
		d := setState(t, host.Installed)
		t.Logf("FIGURE PUT set_installed -> dnsmasq re-read hosts file (seen in mayu's log): %s", d)
		assert.Nil(t, l.DHCP(t, "c1", 3), "installed machine still answered")
		setState(t, host.Running)
		assert.Nil(t, l.DHCP(t, "c1", 3), "running machine answered")
		before := m.Out.Count(readHosts)
		code, body := m.Do("PUT", "/admin/host/"+serial+"/set_state", `{"State":"configured"}`)
		require.Equal(t, 202, code, body)
		require.Eventually(t, func() bool { return m.Out.Count(readHosts) > before }, 10*time.Second, time.Millisecond)
		assert.NotNil(t, l.DHCP(t, "c1", 5), "configured machine not answered")
		assert.Equal(t, pid, m.dnsmasqPID(t), "dnsmasq restarted")
	})

	t.Run("100 state changes over HTTP: same dnsmasq, TFTP and DHCP undisturbed", func(t *testing.T) {
		tftp := l.StartTFTP(t, "big.bin", 64<<20, [32]byte{4, 5, 6})
		bystander := l.StartProber("c2")

		// configured -> installing -> installed -> running -> configured ...
		cycle := []host.State{host.Installing, host.Installed, host.Running, host.Configured}
		var latencies []time.Duration
		duringTransfer := 0
		start := time.Now()
		for i := 0; i < 100; i++ {
			if d := setState(t, cycle[i%len(cycle)]); d > 0 {
				latencies = append(latencies, d)
			}
			if tftp.Running() {
				duringTransfer++
			}
		}
		elapsed := time.Since(start)
		exchanges := bystander.Stop(t)
		tftp.Check(t)
		assert.Equal(t, pid, m.dnsmasqPID(t), "dnsmasq PID changed across 100 state changes")
		assert.Positive(t, duringTransfer)
		probes, failures := len(exchanges), netlab.Unanswered(exchanges)
		assert.Zero(t, failures, "bystander DHCP unanswered %d of %d times", failures, probes)
		slices.Sort(latencies)
		t.Logf("FIGURE 100 HTTP state changes in %s (%d touched dnsmasq); request -> dnsmasq re-read: min %s, median %s, max %s",
			elapsed.Round(time.Millisecond), len(latencies), latencies[0], latencies[len(latencies)/2], latencies[len(latencies)-1])
		t.Logf("FIGURE bystander DHCP during them: %d exchanges, %d unanswered; TFTP 64 MiB intact, %d of 100 changes during it; dnsmasq PID %d unchanged",
			probes, failures, duringTransfer, pid)
		// The cycle ends in configured: answered.
		assert.NotNil(t, l.DHCP(t, "c1", 5))
	})

	t.Run("killed dnsmasq is brought back", func(t *testing.T) {
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		pid = m.waitDnsmasq(t, pid)
		assert.NotNil(t, l.DHCP(t, "c2", 10), "no DHCP after the restart")
		assert.Contains(t, m.Out.String(), "exited unexpectedly")
	})

	t.Run("stopping mayu leaves no dnsmasq", func(t *testing.T) {
		require.NoError(t, m.Stop())
		assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "dnsmasq pid %d still exists", pid)
		assert.Empty(t, l.NSPIDs(t))
	})

	t.Run("broken template stops mayu at start with dnsmasq's complaint", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "broken.conf")
		require.NoError(t, os.WriteFile(bad, []byte("interface={{.Network.Interface}}\nno-such-option=1\n"), 0o644))
		m2 := startMayu(t, l, "--dnsmasq-template", bad)
		select {
		case <-m2.Done():
			require.Error(t, m2.Err(), "mayu started with a broken dnsmasq template")
		case <-time.After(60 * time.Second):
			t.Fatal("mayu did not stop on a broken dnsmasq template")
		}
		assert.Contains(t, m2.Out.String(), "bad option at line 2")
		assert.Empty(t, l.NSPIDs(t))
	})
}
