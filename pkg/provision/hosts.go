package provision

import (
	"errors"
	"net"

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

// ImageVersion is the OS version whose images serial boots and installs:
// its Overrides["CoreOSVersion"], else the version its record names (from
// its profile, or as it last reported), else the default. A serial without
// a record gets the default, as from Mayu 0.11: the images are the same
// public ones /images/vmlinuz serves. The error wraps ErrInvalid for a
// malformed serial.
func (p *Provisioner) ImageVersion(serial string) (string, error) {
	serial, err := Serial(serial)
	if err != nil {
		return "", err
	}
	version := p.DefaultImageVersion()
	h, err := p.store.Get(serial)
	if errors.Is(err, store.ErrNotFound) {
		return version, nil
	}
	if err != nil {
		return "", err
	}
	if h.CoreOSVersion != "" {
		version = h.CoreOSVersion
	}
	if v, ok := h.OverrideString("CoreOSVersion"); ok {
		version = v
	}
	return version, nil
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
