//go:build linux

package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/stretchr/testify/require"
)

// Firmware is what a DHCP client says it is, as the firmware kinds mayu
// answers do (RFC 4578 option 93, option 60, iPXE's option 175 and user
// class; the UEFI specification's HTTP boot vendor class).
type Firmware struct {
	Arch        *iana.Arch // option 93; nil sends none
	VendorClass string     // option 60
	IPXE        bool       // option 175 and user class "iPXE", as iPXE sends
}

// The firmware kinds of the tests.
var (
	archBIOS   = iana.INTEL_X86PC
	archEFI7   = iana.EFI_X86_64
	archEFI9   = iana.EFI_BC
	archEFI16  = iana.EFI_X86_64_HTTP
	archARM64  = iana.EFI_ARM64
	archARM64H = iana.EFI_ARM64_HTTP
	FwBIOS     = Firmware{Arch: &archBIOS, VendorClass: "PXEClient:Arch:00000:UNDI:002001"}
	FwEFI7     = Firmware{Arch: &archEFI7, VendorClass: "PXEClient:Arch:00007:UNDI:003016"}
	FwEFI9     = Firmware{Arch: &archEFI9, VendorClass: "PXEClient:Arch:00009:UNDI:003016"}
	FwHTTPBoot = Firmware{Arch: &archEFI16, VendorClass: "HTTPClient:Arch:00016:UNDI:003001"}
	FwNoArch   = Firmware{VendorClass: "PXEClient"}
	// arm64 UEFI (AAVMF under qemu sends "PXEClient:Arch:00011:UNDI:003000")
	// and arm64 UEFI HTTP boot.
	FwARM64     = Firmware{Arch: &archARM64, VendorClass: "PXEClient:Arch:00011:UNDI:003000"}
	FwARM64HTTP = Firmware{Arch: &archARM64H, VendorClass: "HTTPClient:Arch:00019:UNDI:003000"}
	FwIPXEBIOS  = Firmware{Arch: &archBIOS, VendorClass: "PXEClient:Arch:00000:UNDI:002001", IPXE: true}
	FwIPXEEFI   = Firmware{Arch: &archEFI7, VendorClass: "PXEClient:Arch:00007:UNDI:003016", IPXE: true}
)

// ArchBIOS is the client architecture of BIOS PXE (0), for PXEBootRequest.
const ArchBIOS = uint16(iana.INTEL_X86PC)

// Modifiers are the options a DISCOVER of this firmware carries.
func (f Firmware) Modifiers() []dhcpv4.Modifier {
	var m []dhcpv4.Modifier
	if f.Arch != nil {
		m = append(m, dhcpv4.WithOption(dhcpv4.OptClientArch(*f.Arch)))
	}
	if f.VendorClass != "" {
		m = append(m, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(f.VendorClass)))
	}
	if f.IPXE {
		// An encapsulated option 175 as iPXE sends it (sub-option 177,
		// the bus id, is enough to be there), and its user class.
		m = append(m, dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{177, 5, 1, 0x80, 0x86, 0x10, 0x0e}),
			dhcpv4.WithUserClass("iPXE", false))
	}
	return m
}

// Discover broadcasts one DHCPDISCOVER of firmware fw from the client
// interface iface (in the client namespace, broadcast flag set as PXE ROMs
// do) and returns the first OFFER from ProvAddr, or nil when none came
// within tries seconds (one DISCOVER a second). The raw socket is opened in
// the client namespace, so the exchange never leaves the lab.
func (l *Lab) Discover(t *testing.T, iface string, fw Firmware, tries int) *dhcpv4.DHCPv4 {
	t.Helper()
	var c *nclient4.Client
	require.NoError(t, InNetns(l.Cli, func() (err error) {
		c, err = nclient4.New(iface, nclient4.WithTimeout(time.Second), nclient4.WithRetry(tries))
		return err
	}))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(tries+5)*time.Second)
	defer cancel()
	mods := append(fw.Modifiers(), dhcpv4.WithBroadcast(true))
	offer, err := c.SendAndRead(ctx, c.RemoteAddr(), mustDiscover(t, c.InterfaceAddr(), mods), nclient4.IsAll(
		nclient4.IsMessageType(dhcpv4.MessageTypeOffer), fromServer(ProvAddr)))
	if errors.Is(err, nclient4.ErrNoResponse) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	require.NoError(t, err)
	return offer
}

func mustDiscover(t *testing.T, mac net.HardwareAddr, mods []dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.NewDiscovery(mac, mods...)
	require.NoError(t, err)
	return d
}

// fromServer matches answers sent by the DHCP server at addr (its server
// identifier, option 54).
func fromServer(addr string) nclient4.Matcher {
	want := net.ParseIP(addr)
	return func(p *dhcpv4.DHCPv4) bool { return p.ServerIdentifier().Equal(want) }
}

// PXEBootRequest plays the PXE client's second step with a proxyDHCP
// server (PXE specification 2.1, boot server discovery): from its own
// address src (it has one from the site's DHCP server), a DHCPREQUEST to
// ProvAddr port 4011 with client architecture arch. When the proxy OFFER
// carried a boot menu (option 43, sub-option 9), the request names its
// first item (sub-option 71, layer 0), as a PXE ROM booting it at once
// does; a UEFI client's OFFER has none (dnsmasq sends EFI clients to 4011
// straight away). It returns the ACK, whose file field is the boot file,
// or fails t.
func (l *Lab) PXEBootRequest(t *testing.T, src string, mac net.HardwareAddr, arch uint16, vendorClass string, offer *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	t.Helper()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(net.ParseIP(src)),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.Arch(arch))),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(vendorClass)),
	}
	if item, ok := firstMenuItem(offer.Options.Get(dhcpv4.OptionVendorSpecificInformation)); ok {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{71, 4, item[0], item[1], 0, 0, 255}))
	}
	req, err := dhcpv4.New(mods...)
	require.NoError(t, err)
	var conn *net.UDPConn
	require.NoError(t, InNetns(l.Cli, func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src), Port: 68})
		return err
	}))
	defer conn.Close()
	_, err = conn.WriteToUDP(req.ToBytes(), &net.UDPAddr{IP: net.ParseIP(ProvAddr), Port: 4011})
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFromUDP(buf)
		require.NoError(t, err, "no answer from the PXE boot server at %s:4011", ProvAddr)
		ack, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || ack.TransactionID != req.TransactionID {
			continue
		}
		require.Equal(t, ProvAddr, from.IP.String())
		return ack
	}
}

// firstMenuItem returns the boot server type of the first entry of a PXE
// boot menu (PXE_BOOT_MENU, sub-option 9 of option 43: type (2 bytes),
// description length, description, ...).
func firstMenuItem(opt43 []byte) ([2]byte, bool) {
	for i := 0; i+1 < len(opt43); {
		code, n := opt43[i], int(opt43[i+1])
		if code == 255 || i+2+n > len(opt43) {
			break
		}
		if code == 9 && n >= 3 {
			return [2]byte{opt43[i+2], opt43[i+3]}, true
		}
		i += 2 + n
	}
	return [2]byte{}, false
}

// SetClientAddr gives client interface iface the address addr/24, as the
// site's DHCP server would have, so it can talk to a proxyDHCP boot server.
func (l *Lab) SetClientAddr(t *testing.T, iface, addr string) {
	t.Helper()
	l.Run(t, "ip", "-n", l.Cli, "addr", "add", addr+"/24", "dev", iface)
	t.Cleanup(func() { _ = exec.Command("ip", "-n", l.Cli, "addr", "del", addr+"/24", "dev", iface).Run() })
}

// Describe is a one-line summary of a DHCP answer for failure messages.
func Describe(p *dhcpv4.DHCPv4) string {
	if p == nil {
		return "no answer"
	}
	return fmt.Sprintf("%s yiaddr=%s siaddr=%s file=%q option60=%q options=%s",
		p.MessageType(), p.YourIPAddr, p.ServerIPAddr, p.BootFileName, p.ClassIdentifier(), p.Options.Summary(nil))
}
