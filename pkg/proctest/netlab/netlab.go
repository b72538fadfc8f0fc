//go:build linux

// Package netlab builds a provisioning segment for the network tests (root
// only): a namespace "prov" with a bridge br0 at ProvAddr/24, and a
// namespace "cli" whose veths sit on that bridge, with real DHCP (busybox
// udhcpc) and TFTP clients run inside it. Traffic never leaves the two
// namespaces: the bridge has no uplink and the namespaces no routes. Both
// are removed, and what still runs in them killed by PID, when the test
// ends.
package netlab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"mayu/pkg/config"
	"mayu/pkg/proctest"
)

// Addresses and MACs inside the lab's namespaces.
const (
	ProvAddr       = "192.168.2.2"   // the provisioner, on br0 in Prov
	TFTPClient     = "192.168.2.250" // static address of c0 in Cli
	BootstrapStart = "192.168.2.100" // the bootstrap range the tests configure
	BootstrapEnd   = "192.168.2.200"
	MacMachine     = "02:4d:41:59:55:01" // c1: the machine whose state changes
	MacOther       = "02:4d:41:59:55:02" // c2: a bystander that keeps DHCPing
	PXEVendor      = "PXEClient:Arch:00000:UNDI:002001"
)

// BootFiles are the boot loaders of the repository's tftproot (Debian's
// ipxe package) that a lab's TFTPRoot holds; mayu serves them over HTTP
// too.
var BootFiles = []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"}

// SecureBootFiles are the Secure Boot chain's loaders of the repository's
// tftproot (Debian's shim-signed and grub-efi-amd64-signed), which a lab's
// TFTPRoot holds too; they are served over TFTP only.
var SecureBootFiles = []string{"shimx64.efi", "grubx64.efi"}

// ARM64Files are the arm64 loaders of the repository's tftproot (Debian's
// grub-efi-arm64-signed: grubnetaa64.efi.signed, and shim-signed of arm64:
// shimaa64.efi.signed), which a lab's TFTPRoot holds too.
var ARM64Files = []string{"grubaa64.efi", "shimaa64.efi"}

// Lab is a provisioning segment: namespace Prov with bridge br0 at
// ProvAddr/24, namespace Cli with veths on that bridge: c0 (static
// TFTPClient, the TFTP client), c1 (MacMachine), c2 (MacOther).
type Lab struct {
	t        *testing.T
	Prov     string // provisioning namespace
	Cli      string // client namespace
	Dir      string // the lab's scratch directory
	TFTPRoot string // Dir/tftproot, holding the repository's BootFiles, SecureBootFiles and ARM64Files
	script   string // udhcpc script that records the lease
}

// Require is proctest.RequireE2E unless the test runs as root and the
// lab's tools are installed (ip, busybox, tftp-hpa).
func Require(t *testing.T) {
	t.Helper()
	proctest.RequireRoot(t, "create network namespaces")
	proctest.RequireFile(t, "/usr/bin/busybox", "busybox-static")
	proctest.RequireFile(t, "/usr/bin/tftp", "tftp-hpa")
	proctest.RequireCommand(t, "ip", "iproute2")
}

// New creates a lab with namespace names unique to this run; see Require.
func New(t *testing.T) *Lab {
	t.Helper()
	Require(t)
	sfx := fmt.Sprintf("%d-%04x", os.Getpid()%100000, rand.IntN(0x10000))
	l := &Lab{t: t, Prov: "mayu-dp-" + sfx, Cli: "mayu-dc-" + sfx, Dir: t.TempDir()}
	for _, ns := range []string{l.Prov, l.Cli} {
		l.must("ip", "netns", "add", ns)
		t.Cleanup(func() { l.deleteNamespace(ns) })
	}
	l.must("ip", "-n", l.Prov, "link", "set", "lo", "up")
	l.must("ip", "-n", l.Prov, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
	l.must("ip", "-n", l.Prov, "addr", "add", ProvAddr+"/24", "dev", "br0")
	l.must("ip", "-n", l.Prov, "link", "set", "br0", "up")
	for i, mac := range []string{"02:4d:41:59:55:00", MacMachine, MacOther} {
		vp, c := fmt.Sprintf("vp%d", i), fmt.Sprintf("c%d", i)
		l.must("ip", "-n", l.Prov, "link", "add", vp, "type", "veth", "peer", "name", c, "netns", l.Cli)
		l.must("ip", "-n", l.Prov, "link", "set", vp, "master", "br0", "up")
		l.must("ip", "-n", l.Cli, "link", "set", c, "address", mac, "up")
	}
	l.must("ip", "-n", l.Cli, "addr", "add", TFTPClient+"/24", "dev", "c0")

	l.TFTPRoot = filepath.Join(l.Dir, "tftproot")
	require.NoError(t, os.MkdirAll(l.TFTPRoot, 0o755))
	for _, f := range append(append(append([]string{}, BootFiles...), SecureBootFiles...), ARM64Files...) {
		b, err := os.ReadFile(proctest.RepoPath(t, "tftproot", f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(l.TFTPRoot, f), b, 0o644))
	}

	l.script = filepath.Join(l.Dir, "udhcpc.script")
	require.NoError(t, os.WriteFile(l.script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && env > \"$MAYU_DHCP_OUT\"\nexit 0\n"), 0o755))
	return l
}

// deleteNamespace kills what still runs in it (by PID) and removes it.
func (l *Lab) deleteNamespace(ns string) {
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

func (l *Lab) must(args ...string) string { return l.Run(l.t, args...) }

// Run runs a command (30s at most) and returns its combined output; a
// failure fails t.
func (l *Lab) Run(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	require.NoError(t, err, "%s: %s", strings.Join(args, " "), out)
	return string(out)
}

// TFTPGet fetches name from ProvAddr over TFTP (RFC 1350; busybox tftp
// from the client namespace with a 1468-byte block size, RFC 2348) and
// returns its bytes; a failed transfer (30 s at most) fails t.
func (l *Lab) TFTPGet(t *testing.T, name string) []byte {
	t.Helper()
	got := filepath.Join(t.TempDir(), "tftp")
	l.Run(t, "ip", "netns", "exec", l.Cli, "busybox", "tftp", "-g", "-b", "1468", "-r", name, "-l", got, ProvAddr)
	b, err := os.ReadFile(got)
	require.NoError(t, err)
	return b
}

// NSPIDs lists the processes running in the provisioning namespace.
func (l *Lab) NSPIDs(t *testing.T) []string {
	return strings.Fields(l.Run(t, "ip", "netns", "pids", l.Prov))
}

// Network is the network section of a config.yaml serving this lab.
func (l *Lab) Network(pxe bool) config.Network {
	return config.Network{
		PXE:            pxe,
		Interface:      "br0",
		BindAddr:       ProvAddr,
		BootstrapRange: config.IPRange{Start: BootstrapStart, End: BootstrapEnd},
		IPRange:        config.IPRange{Start: "192.168.2.21", End: "192.168.2.99"},
		DNS:            []string{ProvAddr},
		Router:         ProvAddr,
		NetworkModel:   "singlenic",
	}
}

// Lease is what udhcpc's script saw when it got a lease.
type Lease map[string]string

// DHCP runs one DHCP exchange (busybox udhcpc, broadcast flag set as PXE
// ROMs and iPXE do) on a client interface, sending up to tries DISCOVERs a
// second apart. It returns the lease, or nil when nobody answered.
func (l *Lab) DHCP(t *testing.T, iface string, tries int, extra ...string) Lease {
	t.Helper()
	ls, err := l.TryDHCP(iface, tries, extra...)
	require.NoError(t, err)
	return ls
}

// TryDHCP is DHCP for goroutines that must not fail the test themselves.
func (l *Lab) TryDHCP(iface string, tries int, extra ...string) (Lease, error) {
	out := filepath.Join(l.Dir, fmt.Sprintf("lease-%s-%d", iface, rand.Int()))
	defer os.Remove(out)
	args := append([]string{"netns", "exec", l.Cli, "busybox", "udhcpc", "-B", "-i", iface, "-f", "-q", "-n",
		"-t", fmt.Sprint(tries), "-T", "1", "-s", l.script, "-V", PXEVendor}, extra...)
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
	ls := Lease{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			ls[k] = v
		}
	}
	return ls, nil
}

// InBootstrapRange asserts that ip is in BootstrapStart-BootstrapEnd.
func InBootstrapRange(t *testing.T, ip string) {
	t.Helper()
	a := net.ParseIP(ip).To4()
	require.NotNil(t, a, "no IPv4 address in lease: %q", ip)
	n := config.IPToUint32(a)
	assert.True(t, n >= config.IPToUint32(net.ParseIP(BootstrapStart)) && n <= config.IPToUint32(net.ParseIP(BootstrapEnd)),
		"%s is outside the bootstrap range", ip)
}

// SHA256 is the SHA-256 of the file at path.
func SHA256(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return sha256.Sum256(b)
}

// HTTPClient is an HTTP client whose sockets are created inside the
// namespace ns, so a test (in the host's namespace) reaches a server there
// without any route between the two.
func HTTPClient(ns string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			return nil, err
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			return nil, err
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			return nil, fmt.Errorf("setns %s: %w", ns, err)
		}
		conn, derr := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays locked and in the wrong namespace; the
			// runtime discards it when this goroutine ends.
			if conn != nil {
				conn.Close()
			}
			return nil, fmt.Errorf("setns back: %w", err)
		}
		runtime.UnlockOSThread()
		return conn, derr
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// Transfer is a TFTP download (busybox tftp, block size 1468) of a large
// file, running in the client namespace from c0.
type Transfer struct {
	Want       [32]byte  // SHA-256 of the file served
	Got        string    // where the download is written
	Start, End time.Time // End is set once it finished
	out        bytes.Buffer
	done       chan struct{}
	err        error
	cancel     context.CancelFunc
}

// StartTFTP writes size bytes of pseudo-random data (from seed) as name
// into TFTPRoot, starts downloading it from ProvAddr (10 minutes at most),
// and waits (30s at most) until the first bytes have arrived.
func (l *Lab) StartTFTP(t *testing.T, name string, size int, seed [32]byte) *Transfer {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.NewChaCha8(seed).Read(data)
	require.NoError(t, os.WriteFile(filepath.Join(l.TFTPRoot, name), data, 0o644))
	x := &Transfer{Want: sha256.Sum256(data), Got: filepath.Join(l.Dir, name+".got"), done: make(chan struct{})}
	var ctx context.Context
	ctx, x.cancel = context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(x.cancel)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.Cli, "busybox", "tftp", "-g", "-b", "1468",
		"-r", name, "-l", x.Got, ProvAddr)
	cmd.Stdout, cmd.Stderr = &x.out, &x.out
	x.Start = time.Now()
	require.NoError(t, cmd.Start())
	go func() { x.err = cmd.Wait(); x.End = time.Now(); close(x.done) }()
	require.Eventually(t, func() bool { fi, err := os.Stat(x.Got); return err == nil && fi.Size() > 0 },
		30*time.Second, 10*time.Millisecond, "TFTP download did not start")
	return x
}

// Running tells whether the download is still under way.
func (x *Transfer) Running() bool {
	select {
	case <-x.done:
		return false
	default:
		return true
	}
}

// Check waits for the download to finish and asserts that it succeeded
// and is the file served, byte for byte.
func (x *Transfer) Check(t *testing.T) {
	t.Helper()
	<-x.done // bounded by the command's own 10-minute context
	require.NoError(t, x.err, "busybox tftp: %s", x.out.String())
	assert.Equal(t, x.Want, SHA256(t, x.Got), "TFTP download corrupted")
}

// Exchange is one DHCP exchange of a Prober.
type Exchange struct {
	OK       bool // a lease was offered
	From, To time.Time
}

// Prober runs DHCP exchanges on one client interface in a loop, as a
// bystander machine that must keep getting answers.
type Prober struct {
	mu        sync.Mutex
	exchanges []Exchange
	stop      chan struct{}
	done      chan struct{}
}

// StartProber starts DHCPing on iface in a loop (each exchange up to 5
// DISCOVERs).
func (l *Lab) StartProber(iface string) *Prober {
	p := &Prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			from := time.Now()
			ls, err := l.TryDHCP(iface, 5)
			p.mu.Lock()
			p.exchanges = append(p.exchanges, Exchange{OK: ls != nil && err == nil, From: from, To: time.Now()})
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *Prober) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.exchanges)
}

// Stop lets the prober finish two more exchanges (30s at most), so that
// the moments just after the caller's last change are probed too, then
// stops it and returns every exchange.
func (p *Prober) Stop(t *testing.T) []Exchange {
	t.Helper()
	n := p.count()
	require.Eventually(t, func() bool { return p.count() >= n+2 }, 30*time.Second, 10*time.Millisecond)
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exchanges
}

// Unanswered counts the exchanges that got no lease.
func Unanswered(exchanges []Exchange) int {
	n := 0
	for _, e := range exchanges {
		if !e.OK {
			n++
		}
	}
	return n
}

// InNetns runs fn on a thread that is in network namespace ns, so sockets
// fn creates live there. If the thread cannot be brought back, it stays
// locked and the runtime discards it when the goroutine ends.
func InNetns(ns string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", ns, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns back: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// HoldUDP binds a UDP socket at addr ("host:port") inside the provisioning
// namespace, as another server would, until the test ends.
func (l *Lab) HoldUDP(t *testing.T, addr string) {
	t.Helper()
	var pc net.PacketConn
	require.NoError(t, InNetns(l.Prov, func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }))
	t.Cleanup(func() { pc.Close() })
}

// Machine is a namespace of its own playing one machine on the lab's
// segment: one veth "eth0" with MAC on br0, the address DHCP gives it
// configured on that NIC, so that what it sends comes from its lease as a
// real installer's requests do.
type Machine struct {
	l    *Lab
	NS   string
	MAC  string
	Addr string // its address once DHCP or SetAddr gave it one
}

// NewMachine adds a machine with mac to the lab; its namespace is removed
// (what runs in it killed by PID) when the test ends.
func (l *Lab) NewMachine(t *testing.T, mac string) *Machine {
	t.Helper()
	m := &Machine{l: l, NS: fmt.Sprintf("%s-m%s", l.Cli, strings.ReplaceAll(mac[len(mac)-5:], ":", "")), MAC: mac}
	l.must("ip", "netns", "add", m.NS)
	t.Cleanup(func() { l.deleteNamespace(m.NS) })
	peer := "vm" + strings.ReplaceAll(mac[len(mac)-5:], ":", "")
	l.must("ip", "-n", l.Prov, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", m.NS)
	l.must("ip", "-n", l.Prov, "link", "set", peer, "master", "br0", "up")
	l.must("ip", "-n", m.NS, "link", "set", "lo", "up")
	l.must("ip", "-n", m.NS, "link", "set", "eth0", "address", mac, "up")
	return m
}

// DHCP gets a lease for the machine (busybox udhcpc, up to 10 DISCOVERs)
// and configures its address on eth0.
func (m *Machine) DHCP(t *testing.T) Lease {
	t.Helper()
	out := filepath.Join(m.l.Dir, "lease-"+m.NS)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", m.NS, "busybox", "udhcpc", "-B", "-i", "eth0", "-f", "-q", "-n",
		"-t", "10", "-T", "1", "-s", m.l.script, "-V", PXEVendor)
	cmd.Env = append(os.Environ(), "MAYU_DHCP_OUT="+out)
	res, err := cmd.CombinedOutput()
	require.NoError(t, err, "udhcpc in %s: %s", m.NS, res)
	b, err := os.ReadFile(out)
	require.NoError(t, err, "udhcpc got no lease: %s", res)
	ls := Lease{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			ls[k] = v
		}
	}
	require.NotEmpty(t, ls["ip"], "no address in the lease: %s", b)
	m.SetAddr(t, ls["ip"])
	return ls
}

// SetAddr makes addr the machine's only address (as the installed system
// configures its static address).
func (m *Machine) SetAddr(t *testing.T, addr string) {
	t.Helper()
	m.l.Run(t, "ip", "-n", m.NS, "addr", "flush", "dev", "eth0")
	m.l.Run(t, "ip", "-n", m.NS, "addr", "add", addr+"/24", "dev", "eth0")
	m.Addr = addr
}

// HTTPClient sends from the machine's namespace (and address).
func (m *Machine) HTTPClient() *http.Client { return HTTPClient(m.NS) }
