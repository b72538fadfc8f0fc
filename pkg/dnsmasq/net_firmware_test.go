//go:build nettest

package dnsmasq

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
	"mayu/pkg/host"
	"mayu/pkg/proctest/netlab"
	"mayu/pkg/provision"
)

// serve starts the shipped template on the lab with network n (edited from
// the lab's PXE network) and hosts, and runs the supervisor until the test
// ends. HTTP port 4080 without TLS: the URLs below say so.
// opts edit the supervisor's Config (a SecureBoot rule).
func (l *lab) serve(t *testing.T, edit func(n *config.Network), ignores func(host.Host) bool, hosts []host.Host, opts ...func(*Config)) *Supervisor {
	t.Helper()
	n := l.Network(true)
	edit(&n)
	sink := &logSink{}
	cfg := Config{
		Binary: l.wrapper, Template: shippedTemplate, RuntimeDir: filepath.Join(l.Dir, "run"),
		Network: n, TFTPRoot: l.TFTPRoot, NoTLS: true, HTTPPort: 4080, Ignores: ignores,
		Logger: slog.New(sink), RestartBackoff: 100 * time.Millisecond, StopTimeout: 5 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := New(cfg)
	require.NoError(t, err)
	s.sys = nsSys{ns: l.Prov}
	require.NoError(t, s.Check(), "the real dnsmasq rejects the rendered configuration")
	require.NoError(t, s.Preflight())
	s.Sync(hosts)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last log lines:\n%s", sink.tail(60))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, s.Start(ctx))
	runUntilCleanup(t, s)
	return s
}

const (
	bootScript = "http://" + netlab.ProvAddr + ":4080/ipxebootscript"
	httpBoot   = "http://" + netlab.ProvAddr + ":4080/tftproot/"
)

// TestNetFirmwareAnswers: one configuration answers every client by what
// it is (DHCP option 93, vendor class, option 175), each checked on the
// wire with a DHCP client sending exactly that.
func TestNetFirmwareAnswers(t *testing.T) {
	l := newLab(t)
	l.serve(t, func(*config.Network) {}, nil, nil)
	offer := func(t *testing.T, fw netlab.Firmware) *dhcpv4.DHCPv4 {
		t.Helper()
		o := l.Discover(t, "c1", fw, 10)
		require.NotNil(t, o, "no OFFER")
		t.Logf("answer: %s", netlab.Describe(o))
		netlab.InBootstrapRange(t, o.YourIPAddr.String())
		return o
	}
	tftp := func(t *testing.T, o *dhcpv4.DHCPv4, file string) {
		t.Helper()
		assert.Equal(t, file, o.BootFileName)
		assert.Equal(t, netlab.ProvAddr, o.ServerIPAddr.String(), "next server: dnsmasq's TFTP")
		assert.NotEqual(t, "HTTPClient", o.ClassIdentifier())
	}
	t.Run("BIOS", func(t *testing.T) { tftp(t, offer(t, netlab.FwBIOS), "undionly.kpxe") })
	t.Run("UEFI arch 7", func(t *testing.T) { tftp(t, offer(t, netlab.FwEFI7), "ipxe.efi") })
	t.Run("UEFI arch 9", func(t *testing.T) { tftp(t, offer(t, netlab.FwEFI9), "ipxe.efi") })
	t.Run("no option 93 is BIOS", func(t *testing.T) { tftp(t, offer(t, netlab.FwNoArch), "undionly.kpxe") })
	t.Run("UEFI HTTP boot", func(t *testing.T) {
		o := offer(t, netlab.FwHTTPBoot)
		assert.Equal(t, httpBoot+"ipxe.efi", o.BootFileName)
		assert.Equal(t, "HTTPClient", o.ClassIdentifier(), "option 60 echoed, as the UEFI specification requires")
	})
	t.Run("iPXE under BIOS", func(t *testing.T) { assert.Equal(t, bootScript, offer(t, netlab.FwIPXEBIOS).BootFileName) })
	t.Run("iPXE under UEFI", func(t *testing.T) { assert.Equal(t, bootScript, offer(t, netlab.FwIPXEEFI).BootFileName) })
	// Without network.arm64 an arm64 client is answered as Mayu 0.11 did:
	// as BIOS (no arm64 loader is configured).
	t.Run("arm64 arch 11 without network.arm64", func(t *testing.T) { tftp(t, offer(t, netlab.FwARM64), "undionly.kpxe") })
}

// TestNetFirmwareARM64: with network.arm64, arm64 UEFI PXE clients (option
// 93 = 11) get GRUB's arm64 network image over TFTP, arm64 UEFI HTTP boot
// clients (19) an address but no boot file (their firmware then tries its
// PXE option), and every x86 client exactly what it gets without arm64.
func TestNetFirmwareARM64(t *testing.T) {
	l := newLab(t)
	l.serve(t, func(n *config.Network) { n.ARM64 = true }, nil, nil)
	for _, tt := range []struct {
		name string
		fw   netlab.Firmware
		file string
	}{
		{"arm64 UEFI arch 11", netlab.FwARM64, "grubaa64.efi"},
		{"arm64 UEFI HTTP boot arch 19", netlab.FwARM64HTTP, ""},
		{"BIOS", netlab.FwBIOS, "undionly.kpxe"},
		{"UEFI arch 7", netlab.FwEFI7, "ipxe.efi"},
		{"UEFI arch 9", netlab.FwEFI9, "ipxe.efi"},
		{"x86-64 UEFI HTTP boot", netlab.FwHTTPBoot, httpBoot + "ipxe.efi"},
		{"no option 93 is BIOS", netlab.FwNoArch, "undionly.kpxe"},
		{"iPXE under UEFI", netlab.FwIPXEEFI, bootScript},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := l.Discover(t, "c1", tt.fw, 10)
			require.NotNil(t, o, "no OFFER")
			t.Logf("answer: %s", netlab.Describe(o))
			netlab.InBootstrapRange(t, o.YourIPAddr.String())
			assert.Equal(t, tt.file, o.BootFileName)
			if tt.fw.Arch != nil && *tt.fw.Arch == iana.EFI_ARM64_HTTP {
				assert.NotEqual(t, "HTTPClient", o.ClassIdentifier(), "no HTTP boot answer for arm64")
			}
		})
	}
}

// TestNetFirmwareARM64SecureBoot: with network.arm64 and secure_boot, arm64
// UEFI PXE clients get Debian's Microsoft-signed arm64 shim (which loads
// grubaa64.efi) instead of GRUB: every one with network.secure_boot, the
// ones whose host's profile asks for it (a hosts-file tag) otherwise, and
// the untagged ones GRUB as without Secure Boot. x86 clients keep their
// own chain's answers.
func TestNetFirmwareARM64SecureBoot(t *testing.T) {
	hosts := []host.Host{{Serial: "m1", Profile: "secure", State: host.Installing, MacAddresses: []string{netlab.MacMachine}}}
	byProfile := func(c *Config) {
		c.SecureBoot = func(h host.Host) bool { return h.Profile == "secure" }
	}
	type answer struct {
		name, iface string
		fw          netlab.Firmware
		want        string
	}
	check := func(t *testing.T, l *lab, cases []answer) {
		for _, tt := range cases {
			t.Run(tt.name, func(t *testing.T) {
				offersBootFile(t, l, tt.iface, tt.fw, tt.want)
			})
		}
	}
	t.Run("per profile", func(t *testing.T) {
		l := newLab(t)
		s := l.serve(t, func(n *config.Network) { n.ARM64 = true }, nil, hosts, byProfile)
		_, hostsPath, _ := s.Paths()
		require.Eventually(t, func() bool {
			b, err := os.ReadFile(hostsPath)
			return err == nil && strings.Contains(string(b), netlab.MacMachine+",set:secureboot")
		}, 10*time.Second, 20*time.Millisecond, "hosts file")
		check(t, l, []answer{
			{"tagged arm64 UEFI arch 11", "c1", netlab.FwARM64, config.ARM64ShimBootFile},
			{"tagged UEFI arch 7", "c1", netlab.FwEFI7, config.ShimBootFile},
			{"tagged arm64 HTTP boot arch 19", "c1", netlab.FwARM64HTTP, ""},
			{"bystander arm64 UEFI arch 11", "c2", netlab.FwARM64, config.ARM64GRUBBootFile},
			{"bystander UEFI arch 7", "c2", netlab.FwEFI7, "ipxe.efi"},
		})
	})
	t.Run("network.secure_boot", func(t *testing.T) {
		l := newLab(t)
		l.serve(t, func(n *config.Network) { n.ARM64, n.SecureBoot = true, true }, nil, nil)
		check(t, l, []answer{
			{"arm64 UEFI arch 11", "c2", netlab.FwARM64, config.ARM64ShimBootFile},
			{"arm64 UEFI HTTP boot arch 19", "c2", netlab.FwARM64HTTP, ""},
			{"UEFI arch 9", "c2", netlab.FwEFI9, config.ShimBootFile},
			{"BIOS", "c2", netlab.FwBIOS, "undionly.kpxe"},
		})
	})
}

// TestNetFirmwareOptions: network.efi_boot_file picks the EFI binary (by
// TFTP and HTTP boot alike); network.uefi gives it to clients that name no
// architecture, as Mayu 1.x's switch did, and leaves BIOS clients theirs.
func TestNetFirmwareOptions(t *testing.T) {
	l := newLab(t)
	l.serve(t, func(n *config.Network) { n.EFIBootFile = config.SNPOnlyEFIBootFile; n.UEFI = true }, nil, nil)
	for _, tt := range []struct {
		name string
		fw   netlab.Firmware
		file string
	}{
		{"UEFI arch 7", netlab.FwEFI7, "snponly.efi"},
		{"UEFI arch 9", netlab.FwEFI9, "snponly.efi"},
		{"HTTP boot", netlab.FwHTTPBoot, httpBoot + "snponly.efi"},
		{"no option 93 with network.uefi", netlab.FwNoArch, "snponly.efi"},
		{"BIOS", netlab.FwBIOS, "undionly.kpxe"},
		{"iPXE", netlab.FwIPXEEFI, bootScript},
	} {
		t.Run(tt.name, func(t *testing.T) {
			offersBootFile(t, l, "c1", tt.fw, tt.file)
		})
	}
}

// TestNetProxyDHCP: beside the site's DHCP server, dnsmasq offers no
// address, only boot information. A BIOS PXE ROM gets a one-entry menu in
// the proxy OFFER, a UEFI one is sent to the boot server straight away
// (siaddr); both then get their boot file from the boot server on port
// 4011, named as it is in tftproot (no ".0" is added to a name with a
// suffix). iPXE gets the boot script in the proxy OFFER itself.
func TestNetProxyDHCP(t *testing.T) {
	l := newLab(t)
	l.serve(t, func(n *config.Network) { n.ProxyDHCP = true; n.BootstrapRange = config.IPRange{} }, nil, nil)

	t.Run("PXE ROM: proxy OFFER without an address, then the boot server", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			fw   netlab.Firmware
			arch uint16
			file string
			src  string // the address the site's DHCP server gave it
			menu bool
		}{
			{"BIOS", netlab.FwBIOS, netlab.ArchBIOS, "undionly.kpxe", "192.168.2.70", true},
			{"UEFI arch 7", netlab.FwEFI7, 7, "ipxe.efi", "192.168.2.71", false},
			{"UEFI arch 9", netlab.FwEFI9, 9, "ipxe.efi", "192.168.2.72", false},
		} {
			t.Run(tt.name, func(t *testing.T) {
				o := l.Discover(t, "c1", tt.fw, 10)
				require.NotNil(t, o, "no proxy OFFER")
				t.Logf("proxy OFFER: %s", netlab.Describe(o))
				assert.True(t, o.YourIPAddr.IsUnspecified(), "a proxyDHCP server offers no address: %s", o.YourIPAddr)
				assert.Equal(t, "PXEClient", o.ClassIdentifier(), "a proxy OFFER says PXEClient (PXE 2.1)")
				if tt.menu {
					assert.NotEmpty(t, o.Options.Get(dhcpv4.OptionVendorSpecificInformation), "the PXE menu (option 43)")
				} else {
					assert.Equal(t, netlab.ProvAddr, o.ServerIPAddr.String(), "a UEFI client is sent to the boot server")
				}

				l.SetClientAddr(t, "c1", tt.src)
				ack := l.PXEBootRequest(t, tt.src, mustMAC(t, netlab.MacMachine), tt.arch, tt.fw.VendorClass, o)
				t.Logf("boot server ACK: %s", netlab.Describe(ack))
				assert.Equal(t, dhcpv4.MessageTypeAck, ack.MessageType())
				assert.True(t, ack.YourIPAddr.IsUnspecified() || ack.YourIPAddr.String() == tt.src,
					"the boot server hands out no address either (at most it names the client's own): %s", ack.YourIPAddr)
				assert.Equal(t, tt.file, ack.BootFileName, "the file the PXE ROM fetches")
				_, err := os.Stat(filepath.Join(l.TFTPRoot, ack.BootFileName))
				assert.NoError(t, err, "the file the client is told is in tftproot")
			})
		}
	})
	t.Run("UEFI HTTP boot is not answered (README: proxy-mode limits)", func(t *testing.T) {
		o := l.Discover(t, "c2", netlab.FwHTTPBoot, 3)
		assert.Nil(t, o, "dnsmasq answered an HTTPClient in proxy mode: %s", netlab.Describe(o))
	})
	t.Run("no lease is handed out", func(t *testing.T) {
		assert.Nil(t, l.DHCP(t, "c2", 3), "udhcpc got an address from a proxyDHCP server")
	})
	t.Run("iPXE gets the boot script", func(t *testing.T) {
		for name, fw := range map[string]netlab.Firmware{"BIOS": netlab.FwIPXEBIOS, "UEFI": netlab.FwIPXEEFI} {
			o := l.Discover(t, "c2", fw, 10)
			require.NotNil(t, o, "no proxy OFFER for iPXE under %s", name)
			t.Logf("proxy OFFER to iPXE under %s: %s", name, netlab.Describe(o))
			assert.True(t, o.YourIPAddr.IsUnspecified(), "a proxyDHCP server offers no address: %s", o.YourIPAddr)
			assert.Equal(t, bootScript, o.BootFileName, name)
		}
	})
}

// TestNetInstalledBoot: with installed_boot ignore an installed machine is
// not answered at all (Mayu 0.11); with local it is answered like any
// other, and the boot script decides (pkg/api). In proxy mode dnsmasq
// would answer an ignored MAC anyway (checked with a hosts file that says
// ignore: see the proxy rows), which is why proxy mode boots locally.
func TestNetInstalledBoot(t *testing.T) {
	installed := []host.Host{{Serial: "m1", State: host.Installed, MacAddresses: []string{netlab.MacMachine}}}
	for _, tt := range []struct {
		mode     string
		proxy    bool
		hostsIgn bool // the hosts file says "<mac>,ignore" whatever the rule
		answered bool
	}{
		{config.InstalledBootIgnore, false, false, false},
		{config.InstalledBootLocal, false, false, true},
		// A proxyDHCP dnsmasq answers a MAC marked ignore all the same,
		// so proxy mode boots installed machines locally (config.Network.
		// BootsInstalledLocally) and ignores no one.
		{config.InstalledBootIgnore, true, true, true},
		{config.InstalledBootIgnore, true, false, true},
		{config.InstalledBootLocal, true, false, true},
	} {
		name := tt.mode
		if tt.proxy {
			name += " proxyDHCP"
		}
		if tt.hostsIgn {
			name += " hosts file says ignore"
		}
		t.Run(name, func(t *testing.T) {
			l := newLab(t)
			n := config.Network{InstalledBoot: tt.mode, ProxyDHCP: tt.proxy}
			ignores := func(h host.Host) bool { return provision.IgnoredByDHCP(n, h) }
			if tt.hostsIgn {
				ignores = func(h host.Host) bool { return h.State.IgnoredByDHCP() }
			}
			s := l.serve(t, func(nw *config.Network) {
				nw.InstalledBoot = tt.mode
				if tt.proxy {
					nw.ProxyDHCP, nw.BootstrapRange = true, config.IPRange{}
				}
			}, ignores, installed)
			_, hostsPath, _ := s.Paths()
			require.Eventually(t, func() bool {
				b, err := os.ReadFile(hostsPath)
				return err == nil && strings.Contains(string(b), netlab.MacMachine+",ignore") == (tt.hostsIgn || !n.BootsInstalledLocally())
			}, 10*time.Second, 20*time.Millisecond, "hosts file")
			o := l.Discover(t, "c1", netlab.FwIPXEBIOS, 4)
			if !tt.answered {
				assert.Nil(t, o, "an installed machine is answered: %s", netlab.Describe(o))
			} else {
				require.NotNil(t, o, "an installed machine is not answered")
				assert.Equal(t, bootScript, o.BootFileName)
			}
			other := l.Discover(t, "c2", netlab.FwIPXEBIOS, 10)
			require.NotNil(t, other, "a bystander is not answered")
		})
	}
}

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	mac, err := net.ParseMAC(s)
	require.NoError(t, err)
	return mac
}

// offersBootFile checks that dnsmasq's OFFER to the client on iface with
// firmware fw names the boot file want (BOOTP file field, RFC 2131).
func offersBootFile(t *testing.T, l *lab, iface string, fw netlab.Firmware, want string) {
	t.Helper()
	o := l.Discover(t, iface, fw, 10)
	require.NotNil(t, o, "no OFFER")
	t.Logf("answer: %s", netlab.Describe(o))
	assert.Equal(t, want, o.BootFileName)
}

// TestNetBootLoadersOverTFTP: the EFI binaries are served by dnsmasq's
// TFTP byte for byte.
func TestNetBootLoadersOverTFTP(t *testing.T) {
	l := newLab(t)
	l.serve(t, func(*config.Network) {}, nil, nil)
	for _, name := range append(append(append([]string{}, netlab.BootFiles...), netlab.SecureBootFiles...), netlab.ARM64Files...) {
		want, err := os.ReadFile(filepath.Join(l.TFTPRoot, name))
		require.NoError(t, err)
		assert.Equal(t, sha256.Sum256(want), sha256.Sum256(l.TFTPGet(t, name)), name)
	}
}

// TestNetSecureBoot: the Secure Boot chain's shim goes to x86-64 UEFI PXE
// clients whose host's profile asks for it (a hosts-file tag), or to every
// one with network.secure_boot; BIOS, HTTP boot and iPXE clients keep
// their answers. Firmware does not say whether Secure Boot is on, so the
// choice is mayu's configuration, and this is all DHCP can show of it.
func TestNetSecureBoot(t *testing.T) {
	hosts := []host.Host{{Serial: "m1", Profile: "secure", State: host.Installing, MacAddresses: []string{netlab.MacMachine}}}
	byProfile := func(c *Config) {
		c.SecureBoot = func(h host.Host) bool { return h.Profile == "secure" }
	}
	t.Run("per profile", func(t *testing.T) {
		l := newLab(t)
		s := l.serve(t, func(*config.Network) {}, nil, hosts, byProfile)
		_, hostsPath, _ := s.Paths()
		require.Eventually(t, func() bool {
			b, err := os.ReadFile(hostsPath)
			return err == nil && strings.Contains(string(b), netlab.MacMachine+",set:secureboot")
		}, 10*time.Second, 20*time.Millisecond, "hosts file")
		for _, tt := range []struct {
			name, iface string
			fw          netlab.Firmware
			want        string
		}{
			{"tagged UEFI arch 7", "c1", netlab.FwEFI7, config.ShimBootFile},
			{"tagged UEFI arch 9", "c1", netlab.FwEFI9, config.ShimBootFile},
			{"tagged BIOS", "c1", netlab.FwBIOS, "undionly.kpxe"},
			{"tagged iPXE", "c1", netlab.FwIPXEEFI, bootScript},
			{"bystander UEFI", "c2", netlab.FwEFI7, "ipxe.efi"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				offersBootFile(t, l, tt.iface, tt.fw, tt.want)
			})
		}
	})
	t.Run("network.secure_boot", func(t *testing.T) {
		l := newLab(t)
		l.serve(t, func(n *config.Network) { n.SecureBoot = true }, nil, nil)
		for _, tt := range []struct {
			name string
			fw   netlab.Firmware
			want string
		}{
			{"UEFI arch 7", netlab.FwEFI7, config.ShimBootFile},
			{"BIOS", netlab.FwBIOS, "undionly.kpxe"},
			{"HTTP boot stays on iPXE", netlab.FwHTTPBoot, httpBoot + "ipxe.efi"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				offersBootFile(t, l, "c2", tt.fw, tt.want)
			})
		}
	})
}
