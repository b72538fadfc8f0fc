package provision

import (
	"errors"
	"fmt"
	"net"

	"mayu/pkg/config"
	"mayu/pkg/host"
	"mayu/pkg/store"
)

// Hosts returns every host record, never nil (an empty cluster lists as
// []).
func (p *Provisioner) Hosts() []host.Host {
	hosts := p.store.List()
	if hosts == nil {
		hosts = []host.Host{}
	}
	return hosts
}

// DefaultImageVersion is the OS version machines boot before they have a
// record: config.yaml's default_coreos_version.
func (p *Provisioner) DefaultImageVersion() string { return p.cfg.DefaultCoreOSVersion }

// ImageVersion is the OS version whose images serial boots and installs,
// chosen only from what an operator set: its Overrides["CoreOSVersion"],
// else the coreos_version of its profile in config.yaml, else the default.
// A serial without a record gets the default, as from Mayu 0.11: the
// images are the same public ones /images/vmlinuz serves.
//
// The record's CoreOSVersion is not used. boot_complete writes there the
// version the machine says it runs (Mayu 0.11 did the same, and conf.json
// keeps its fields), so a machine, or anyone posting as one, could
// otherwise pick the image of its own next reinstall. The error wraps
// ErrInvalid for a malformed serial.
func (p *Provisioner) ImageVersion(serial string) (string, error) {
	serial, err := Serial(serial)
	if err != nil {
		return "", err
	}
	h, err := p.store.Get(serial)
	if errors.Is(err, store.ErrNotFound) {
		return p.DefaultImageVersion(), nil
	}
	if err != nil {
		return "", err
	}
	if v, ok := h.OverrideString("CoreOSVersion"); ok {
		return v, nil
	}
	prof, _ := p.cfg.Profile(h.Profile) // a profile gone from config.yaml: the default
	return p.cfg.CoreOSVersion(prof), nil
}

// Host returns the record of serial (normalized), if there is one.
func (p *Provisioner) Host(serial string) (host.Host, bool) {
	h, err := p.store.Get(serial)
	return h, err == nil
}

// HostByMAC returns the host with this MAC address (normalized form).
func (p *Provisioner) HostByMAC(mac string) (host.Host, bool) {
	h, err := p.store.ByMAC(mac)
	return h, err == nil
}

// HostByIP returns the host whose InternalAddr is ip: a provisioned
// machine's address.
func (p *Provisioner) HostByIP(ip net.IP) (host.Host, bool) {
	h, err := p.store.ByIP(ip)
	return h, err == nil
}

// MachineSerial normalizes the serial a machine names itself by and
// refuses a vendor placeholder or an unsubstituted template marker
// (host.CheckSerial); the error wraps ErrInvalid.
func MachineSerial(serial string) (string, error) { return machineSerial(serial) }

// IgnoredByDHCP is the rule of which hosts DHCP leaves unanswered, so
// that they boot from their disk without mayu: installed and running ones
// (host.State.IgnoredByDHCP), unless network.installed_boot is local, when
// DHCP answers every machine and the boot script sends installed ones to
// their disk (LocalBoot). dnsmasq's hosts file follows it.
func IgnoredByDHCP(n config.Network, h host.Host) bool {
	return h.State.IgnoredByDHCP() && !n.BootsInstalledLocally()
}

// LocalBoot tells whether the machine with this MAC (any form
// host.NormalizeMAC reads) is to boot from its local disk: with
// network.installed_boot local, a host that is installed or running. It
// returns that host. A malformed MAC is ErrInvalid.
func (p *Provisioner) LocalBoot(mac string) (host.Host, bool, error) {
	norm, err := host.NormalizeMAC(mac)
	if err != nil {
		return host.Host{}, false, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if !p.cfg.Network.BootsInstalledLocally() {
		return host.Host{}, false, nil
	}
	h, ok := p.HostByMAC(norm)
	if !ok || !BootsLocally(p.cfg.Network, h) {
		return host.Host{}, false, nil
	}
	return h, true, nil
}

// BootsInstalledLocally is network.installed_boot == local: the boot script
// asks for the machine's MAC to decide (LocalBoot).
func (p *Provisioner) BootsInstalledLocally() bool { return p.cfg.Network.BootsInstalledLocally() }

// History returns the commits of serial's record, newest first: at most
// max (0: all), looking back through at most scan commits (0: all). It
// wraps store.ErrNoHistory when the store keeps none (--no-git).
func (p *Provisioner) History(serial string, max, scan int) ([]store.Commit, error) {
	serial, err := Serial(serial)
	if err != nil {
		return nil, err
	}
	h, ok := p.store.(store.Historian)
	if !ok {
		return nil, fmt.Errorf("%w: the store keeps no history", store.ErrNoHistory)
	}
	return h.History(serial, max, scan)
}

// HostOf names the host whose record holds mac, else the one whose
// InternalAddr is ip; "" when none does. It is the timeline's resolver
// (timeline.Config.Resolve).
func (p *Provisioner) HostOf(mac, ip string) string {
	if mac != "" {
		if h, ok := p.HostByMAC(mac); ok {
			return h.Serial
		}
	}
	if addr := net.ParseIP(ip); addr != nil {
		if h, ok := p.HostByIP(addr); ok {
			return h.Serial
		}
	}
	return ""
}
