package provision

import (
	"mayu/pkg/host"
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
// its profile), else the default. The error wraps store.ErrNotFound for a
// serial without a record.
func (p *Provisioner) ImageVersion(serial string) (string, error) {
	serial, err := Serial(serial)
	if err != nil {
		return "", err
	}
	h, err := p.store.Get(serial)
	if err != nil {
		return "", err
	}
	version := p.DefaultImageVersion()
	if h.CoreOSVersion != "" {
		version = h.CoreOSVersion
	}
	if v, ok := h.OverrideString("CoreOSVersion"); ok {
		version = v
	}
	return version, nil
}
