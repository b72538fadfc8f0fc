package provision

import (
	"fmt"
	"net"
	"strings"

	"mayu/pkg/host"
	"mayu/pkg/store"
)

// Facts is what the host-info helper reports while a machine installs.
type Facts struct {
	MACs         []string
	ConnectedNIC string
	IPMIAddr     string
}

// ReportFacts records a machine's MACs, connected NIC and IPMI address and
// moves it to installing: the machine has asked for its final config. An
// unknown serial is registered first.
func (p *Provisioner) ReportFacts(serial string, f Facts) (host.Host, error) {
	macs := make([]string, 0, len(f.MACs))
	for _, m := range f.MACs {
		n, err := host.NormalizeMAC(m)
		if err != nil {
			return host.Host{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if !contains(macs, n) {
			macs = append(macs, n)
		}
	}
	nic := strings.TrimSpace(f.ConnectedNIC)
	if err := checkIfName(nic); err != nil {
		return host.Host{}, err
	}
	var ipmi net.IP
	if s := strings.TrimSpace(f.IPMIAddr); s != "" {
		if ipmi = net.ParseIP(s); ipmi == nil {
			return host.Host{}, fmt.Errorf("%w: IPMI address %q does not parse", ErrInvalid, s)
		}
	}
	// Register only once the request is known to be good: a refused request
	// leaves no record behind.
	h, _, err := p.Register(serial)
	if err != nil {
		return host.Host{}, err
	}
	for _, m := range macs {
		if other, err := p.store.ByMAC(m); err == nil && other.Serial != h.Serial {
			p.log.Warn("MAC address already belongs to another machine", "mac", m, "serial", h.Serial, "other", other.Serial)
		}
	}
	return p.store.Update(h.Serial,
		store.Step{Message: MsgMACs, Apply: func(h *host.Host) error {
			if len(macs) > 0 {
				h.MacAddresses = macs
			}
			return nil
		}},
		store.Step{Message: MsgConnectedNIC, Apply: func(h *host.Host) error {
			h.ConnectedNIC = nic
			return nil
		}},
		store.Step{Message: MsgIPMIAddr, Apply: func(h *host.Host) error {
			if ipmi != nil {
				h.IPMIAddr = ipmi
			}
			return nil
		}},
		transition(MsgInstalling, host.Installing, nil),
	)
}

// SetInstalled marks the machine installed; DHCP then ignores its MACs.
func (p *Provisioner) SetInstalled(serial string) (host.Host, error) {
	return p.update(serial, transition(MsgInstalled, host.Installed, nil))
}

// Versions are the software versions a booted machine reports.
type Versions struct {
	CoreOSVersion, MayuVersion, DockerVersion, FleetVersion,
	EtcdVersion, RktVersion, K8sVersion, YochuVersion string
}

// BootComplete marks the machine running, sets LastBoot and copies the
// versions it reported (empty ones leave the record's value alone). A
// version holding a character no stored string may (host.BadRune: line
// breaks, terminal escapes, ...) is refused with ErrInvalid and nothing
// changes. The reported CoreOSVersion is shown, never used to pick images
// (see ImageVersion).
func (p *Provisioner) BootComplete(serial string, v Versions) (host.Host, error) {
	for _, f := range []struct{ what, v string }{
		{"CoreOSVersion", v.CoreOSVersion}, {"MayuVersion", v.MayuVersion}, {"DockerVersion", v.DockerVersion},
		{"FleetVersion", v.FleetVersion}, {"EtcdVersion", v.EtcdVersion}, {"RktVersion", v.RktVersion},
		{"K8sVersion", v.K8sVersion}, {"YochuVersion", v.YochuVersion},
	} {
		if err := checkText(f.what, f.v); err != nil {
			return host.Host{}, err
		}
	}
	now := p.now().UTC()
	return p.update(serial, transition(MsgRunning, host.Running, func(h *host.Host) {
		h.LastBoot = now
		set := func(dst *string, src string) {
			if s := strings.TrimSpace(src); s != "" {
				*dst = s
			}
		}
		set(&h.CoreOSVersion, v.CoreOSVersion)
		set(&h.MayuVersion, v.MayuVersion)
		set(&h.DockerVersion, v.DockerVersion)
		set(&h.FleetVersion, v.FleetVersion)
		set(&h.EtcdVersion, v.EtcdVersion)
		set(&h.RktVersion, v.RktVersion)
		set(&h.K8sVersion, v.K8sVersion)
		set(&h.YochuVersion, v.YochuVersion)
	}))
}

// SetState is the operator's state change. Moving to configured (reinstall)
// keeps the disk data; MarkFresh is the variant that wipes it.
func (p *Provisioner) SetState(serial, state string) (host.Host, error) {
	st, err := host.ParseState(state)
	if err != nil {
		return host.Host{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return p.update(serial, transition(MsgState, st, func(h *host.Host) {
		if st == host.Configured {
			h.KeepDiskData = true
		}
	}))
}

// MarkFresh sends the machine back to configured with its disk data to be
// wiped at the next install.
func (p *Provisioner) MarkFresh(serial string) (host.Host, error) {
	return p.update(serial, transition(MsgFresh, host.Configured, func(h *host.Host) {
		h.KeepDiskData = false
	}))
}
