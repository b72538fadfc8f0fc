package provision

import (
	"mayu/pkg/config"
	"mayu/pkg/host"
)

// The boot-time decisions every network boot loader follows: iPXE's boot
// script (api's /ipxebootscript) and GRUB's configuration of the Secure
// Boot chain (pkg/grubnet) ask these, so both install and boot from disk
// under the same rules.

// InstallKernelArgs is the PXE kernel's command line on the install path
// (what follows the kernel image): the stand-in for CoreOS's first-stage
// unit reads mayu= and next-script= (with __SERIAL__, which the machine
// replaces by its DMI serial) and, with TLS, mayu-pin=, the pin of mayu's
// key (curl's --pinnedpubkey form); pin is empty without TLS. base is
// mayu's base URL (Site.BaseURL).
func InstallKernelArgs(base, pin string) string {
	args := "coreos.autologin maybe-install-coreos=stable console=ttyS0,115200n8 mayu=" + base +
		" next-script=" + base + "/first-stage-script/__SERIAL__"
	if pin != "" {
		args += " mayu-pin=" + pin
	}
	return args
}

// BootsLocally tells whether a machine that boots from the network is to
// be sent on to its local disk: with network.installed_boot local, an
// installed or running host. Under the default (ignore) DHCP does not
// answer such a host at all (IgnoredByDHCP), so no boot loader asks.
func BootsLocally(n config.Network, h host.Host) bool {
	return n.BootsInstalledLocally() && h.State.IgnoredByDHCP()
}

// SecureBoot tells whether DHCP gives h the Secure Boot chain (shim, then
// GRUB) rather than iPXE when it PXE-boots as x86-64 UEFI: network.secure_boot,
// or secure_boot in h's profile.
func SecureBoot(c *config.Config, h host.Host) bool {
	if c.Network.SecureBoot {
		return true
	}
	p, ok := c.Profile(h.Profile)
	return ok && p.SecureBoot
}
