package dnsmasq

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"mayu/pkg/config"
)

// fakeSys is a made-up machine: its interfaces, the user dnsmasq runs as,
// and a dnsmasq that holds every port it is asked about (the fake dnsmasq
// binds nothing; readiness against real sockets is tested with real ones).
type fakeSys struct {
	ifaces []netIface
	euid   int
	err    error
}

func (f fakeSys) Interfaces() ([]netIface, error) { return f.ifaces, f.err }
func (f fakeSys) Euid() int                       { return f.euid }
func (f fakeSys) HeldUDPPorts(int) (map[int]bool, error) {
	return map[int]bool{53: true, 67: true, 69: true}, nil
}

func ipnet(t *testing.T, cidr string) *net.IPNet {
	t.Helper()
	ip, n, err := net.ParseCIDR(cidr)
	require.NoError(t, err)
	n.IP = ip
	return n
}

// seedMachine has seedNetwork's interface with its address (and the one a
// reload test moves to), plus loopback and an uplink.
func seedMachine(t *testing.T) fakeSys {
	return fakeSys{ifaces: []netIface{
		{Name: "lo", Addrs: []*net.IPNet{ipnet(t, "127.0.0.1/8")}},
		{Name: "eth0", Addrs: []*net.IPNet{ipnet(t, "10.0.0.5/24")}},
		{Name: "eth1", Addrs: []*net.IPNet{ipnet(t, "192.168.2.2/24"), ipnet(t, "192.168.3.2/24")}},
	}}
}

// tftpRoot makes a TFTP root with the boot loaders the shipped template
// names, readable by everybody.
func tftpRoot(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tftproot")
	require.NoError(t, os.Mkdir(dir, 0o755))
	for _, f := range BootFiles {
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), []byte("boot"), 0o644))
	}
	return dir
}

// shippedSupervisor renders the shipped template for network n and TFTP
// root dir, on machine sys.
func shippedSupervisor(t *testing.T, n config.Network, dir string, sys sysView, sink *logSink) *Supervisor {
	t.Helper()
	s, err := New(Config{Binary: "/bin/false", Template: shippedTemplate, RuntimeDir: t.TempDir(),
		Network: n, TFTPRoot: dir, HTTPPort: 4080, Logger: slog.New(sink)})
	require.NoError(t, err)
	s.sys = sys
	return s
}

// problems splits a Preflight error into its problems.
func problems(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	require.ErrorIs(t, err, ErrStart)
	var out []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		require.ErrorIs(t, e, ErrStart)
		out = append(out, strings.TrimPrefix(e.Error(), ErrStart.Error()+": "))
	}
	return out
}

func TestPreflightGoodMachine(t *testing.T) {
	for _, uefi := range []bool{false, true} {
		n := seedNetwork()
		n.UEFI = uefi
		sink := &logSink{}
		s := shippedSupervisor(t, n, tftpRoot(t), seedMachine(t), sink)
		assert.NoError(t, s.Preflight())
		assert.Empty(t, sink.lines, "warnings on a good machine")
	}
}

func TestPreflightListsEveryProblemAtOnce(t *testing.T) {
	n := seedNetwork()
	n.Interface = "eht1"
	n.BindAddr = "192.168.9.9"
	missing := filepath.Join(t.TempDir(), "no-such-tftproot")
	s := shippedSupervisor(t, n, missing, seedMachine(t), &logSink{})
	got := problems(t, s.Preflight())
	require.Len(t, got, 3, "%q", got)
	assert.Equal(t, `network.interface "eht1": no such network interface (this machine has: eth0, eth1, lo)`, got[0])
	assert.Equal(t, "network.bind_addr 192.168.9.9: not an address of any network interface "+
		"(lo has 127.0.0.1/8; eth0 has 10.0.0.5/24; eth1 has 192.168.2.2/24, 192.168.3.2/24)", got[1])
	assert.Equal(t, "--tftproot "+missing+": no such file or directory", got[2])
}

func TestPreflightBindAddrElsewhere(t *testing.T) {
	n := seedNetwork()
	n.BindAddr = "10.0.0.5" // eth0's, while dnsmasq serves eth1
	sink := &logSink{}
	s := shippedSupervisor(t, n, tftpRoot(t), seedMachine(t), sink)
	require.NoError(t, s.Preflight(), "an address of another interface works, if routed")
	attrs, ok := sink.find("dnsmasq may not serve as meant")
	require.True(t, ok)
	assert.Equal(t, "network.bind_addr 10.0.0.5 is an address of eth0, not of eth1: machines are told to fetch their boot script from it", attrs["reason"])
	// Said once, not on every check.
	require.NoError(t, s.Preflight())
	assert.Equal(t, 1, sink.count("dnsmasq may not serve as meant"))
}

func TestPreflightBootstrapRangeOutsideSubnet(t *testing.T) {
	n := seedNetwork()
	n.BootstrapRange = config.IPRange{Start: "10.9.0.100", End: "10.9.0.200"}
	sink := &logSink{}
	s := shippedSupervisor(t, n, tftpRoot(t), seedMachine(t), sink)
	require.NoError(t, s.Preflight(), "fine behind a DHCP relay")
	attrs, ok := sink.find("dnsmasq may not serve as meant")
	require.True(t, ok)
	assert.Equal(t, "network.bootstrap_range 10.9.0.100 is in no subnet of eth1 (eth1 has 192.168.2.2/24, 192.168.3.2/24): "+
		"dnsmasq answers no DHCP request arriving there directly", attrs["reason"])
}

func TestPreflightTFTPRoot(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(notDir, nil, 0o644))
	tests := []struct {
		name  string
		uefi  bool
		euid  int
		setup func(dir string)
		want  []string // problems, with DIR for the TFTP root
	}{
		{"boot loader missing", false, 0, func(dir string) { require.NoError(t, os.Remove(filepath.Join(dir, BIOSBootFile))) },
			[]string{"--tftproot DIR: boot file undionly.kpxe: no such file or directory"}},
		{"every client is answered: the EFI loader is needed without network.uefi too", false, 0, func(dir string) { require.NoError(t, os.Remove(filepath.Join(dir, config.DefaultEFIBootFile))) },
			[]string{"--tftproot DIR: boot file ipxe.efi: no such file or directory"}},
		{"UEFI needs both loaders", true, 0, func(dir string) { require.NoError(t, os.Remove(filepath.Join(dir, config.DefaultEFIBootFile))) },
			[]string{"--tftproot DIR: boot file ipxe.efi: no such file or directory"}},
		{"not world-readable as root", false, 0, func(dir string) { require.NoError(t, os.Chmod(filepath.Join(dir, BIOSBootFile), 0o600)) },
			[]string{"--tftproot DIR: boot file undionly.kpxe: mode 0600, not readable by others; dnsmasq running as root serves only world-readable files: chmod o+r"}},
		{"closed directory is fine as root", false, 0, func(dir string) { require.NoError(t, os.Chmod(dir, 0o700)) }, nil},
		{"boot loader is a directory", false, 0, func(dir string) {
			p := filepath.Join(dir, BIOSBootFile)
			require.NoError(t, os.Remove(p))
			require.NoError(t, os.Mkdir(p, 0o755))
		}, []string{"--tftproot DIR: boot file undionly.kpxe: not a regular file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := seedNetwork()
			n.UEFI = tt.uefi
			dir := tftpRoot(t)
			tt.setup(dir)
			sys := seedMachine(t)
			sys.euid = tt.euid
			s := shippedSupervisor(t, n, dir, sys, &logSink{})
			var want []string
			for _, w := range tt.want {
				want = append(want, strings.ReplaceAll(w, "DIR", dir))
			}
			assert.Equal(t, want, problems(t, s.Preflight()))
		})
	}
	t.Run("not a directory", func(t *testing.T) {
		s := shippedSupervisor(t, seedNetwork(), notDir, seedMachine(t), &logSink{})
		assert.Equal(t, []string{"--tftproot " + notDir + ": not a directory"}, problems(t, s.Preflight()))
	})
	t.Run("without PXE the TFTP root is not looked at", func(t *testing.T) {
		n := seedNetwork()
		n.PXE = false
		s := shippedSupervisor(t, n, notDir, seedMachine(t), &logSink{})
		assert.NoError(t, s.Preflight())
	})
}

// TestPreflightProxyDHCP: in proxy mode the PXE menu's files are checked
// too, each named once.
func TestPreflightProxyDHCP(t *testing.T) {
	n := seedNetwork()
	n.ProxyDHCP = true
	n.BootstrapRange = config.IPRange{}
	n.EFIBootFile = config.SNPOnlyEFIBootFile
	dir := tftpRoot(t)
	s := shippedSupervisor(t, n, dir, seedMachine(t), &logSink{})
	require.NoError(t, s.Preflight())
	require.NoError(t, os.Remove(filepath.Join(dir, config.SNPOnlyEFIBootFile)))
	assert.Equal(t, []string{"--tftproot " + dir + ": boot file snponly.efi: no such file or directory"}, problems(t, s.Preflight()))
}

// TestPreflightTFTPRootAsOtherUser: run by a user other than root, dnsmasq
// needs to read the directory and the files itself. The check asks the
// kernel (access(2) as the effective user); as root the test takes the
// effective uid of nobody for the checks, keeping root as saved uid to
// return to.
func TestPreflightTFTPRootAsOtherUser(t *testing.T) {
	const nobody = 65534
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	dir := filepath.Join(base, "tftproot")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, BIOSBootFile), []byte("boot"), 0o200))
	require.NoError(t, os.WriteFile(filepath.Join(dir, config.DefaultEFIBootFile), []byte("boot"), 0o644))
	t.Cleanup(func() { _ = os.Chmod(dir, 0o755) })
	sys := seedMachine(t)
	sys.euid = os.Geteuid()
	s := shippedSupervisor(t, seedNetwork(), dir, sys, &logSink{})
	check := func() []string {
		if os.Geteuid() != 0 {
			return problems(t, s.Preflight())
		}
		sys.euid = nobody
		s.sys = sys
		require.NoError(t, unix.Setresuid(-1, nobody, -1))
		err := s.Preflight()
		require.NoError(t, unix.Setresuid(-1, 0, -1))
		return problems(t, err)
	}
	got := check()
	require.Len(t, got, 1)
	assert.Contains(t, got[0], "boot file undionly.kpxe: not readable by uid")
	require.NoError(t, os.Chmod(dir, 0o300))
	got = check()
	require.Len(t, got, 1)
	assert.Contains(t, got[0], "--tftproot "+dir+": not readable by uid")
}

func TestPreflightTemplateValuesNameTheTemplate(t *testing.T) {
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "t.conf")
	require.NoError(t, os.WriteFile(tmpl, []byte("interface=br7,eth*\nlisten-address=192.168.7.1\nenable-tftp\ntftp-root=/nonexistent-tftp,eth1\n"+
		"dhcp-boot=tag:!ipxe,pxelinux.0\ndhcp-boot=tag:ipxe,http://x/y\ndhcp-boot=other.0,boothost,192.168.2.9\n"), 0o644))
	s, err := New(Config{Binary: "/bin/false", Template: tmpl, RuntimeDir: dir, Network: seedNetwork(), TFTPRoot: dir})
	require.NoError(t, err)
	s.sys = seedMachine(t)
	assert.Equal(t, []string{
		`interface= in the dnsmasq template ` + tmpl + ` "br7": no such network interface (this machine has: eth0, eth1, lo)`,
		"listen-address= in the dnsmasq template " + tmpl + " 192.168.7.1: not an address of any network interface " +
			"(lo has 127.0.0.1/8; eth0 has 10.0.0.5/24; eth1 has 192.168.2.2/24, 192.168.3.2/24)",
		"tftp-root= in the dnsmasq template " + tmpl + " /nonexistent-tftp: no such file or directory",
	}, problems(t, s.Preflight()))
}

func TestPreflightCannotListInterfaces(t *testing.T) {
	s := shippedSupervisor(t, seedNetwork(), tftpRoot(t), fakeSys{err: errors.New("netlink: boom")}, &logSink{})
	assert.Equal(t, []string{"cannot list the network interfaces: netlink: boom"}, problems(t, s.Preflight()))
}

func TestParseConf(t *testing.T) {
	f := parseConf([]byte(`# comment
interface = br0, eth*
listen-address=192.168.2.2,10.0.0.1
  enable-tftp=br0
tftp-root="/srv/tftp",br0
dhcp-boot=net:pxe,pxelinux.0
dhcp-boot=tag:ipxe,https://192.168.2.2:4080/ipxebootscript
dhcp-boot=remote.0,host,192.168.2.9
dhcp-range=set:boot,192.168.2.100,192.168.2.200,1m
dhcp-range=::1,::ff
`))
	assert.Equal(t, []string{"br0"}, f.interfaces)
	assert.Equal(t, []string{"192.168.2.2", "10.0.0.1"}, f.listen)
	assert.True(t, f.tftp)
	assert.Equal(t, []string{"/srv/tftp"}, f.tftpRoots)
	assert.Equal(t, []string{"pxelinux.0"}, f.bootFiles)
	require.Len(t, f.rangeStart, 1)
	assert.Equal(t, "192.168.2.100", f.rangeStart[0].String())
	assert.Equal(t, []int{67, 69}, f.udpPorts())
	assert.Empty(t, parseConf([]byte("listen-address=127.0.0.1\n")).udpPorts(), "DNS only: nothing mayu waits for")
}
