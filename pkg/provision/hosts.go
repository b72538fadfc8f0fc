package provision

import (
	"errors"

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
