package provision

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"mayu/pkg/host"
	"mayu/pkg/render"
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
// unknown serial is registered first, in the same write.
//
// The MACs bind the serial to the machine: a report for a serial whose
// recorded MACs are all different (another machine with the same serial, or
// a replaced board) is refused, as is a MAC recorded on another host; both
// are ErrMACConflict and logged. An empty or malformed MAC is ErrInvalid.
// A report without MACs keeps the recorded ones.
func (p *Provisioner) ReportFacts(serial string, f Facts) (host.Host, error) {
	return p.reportFacts(serial, f, nil)
}

// FinalConfig is ReportFacts plus the final config of the machine, rendered
// by render from the record as the report leaves it. Both happen or
// neither: a render that fails leaves the record and its history as they
// were.
func (p *Provisioner) FinalConfig(serial string, f Facts, render func(render.FinalData) ([]byte, error)) ([]byte, host.Host, error) {
	var out []byte
	h, err := p.reportFacts(serial, f, func(h host.Host) error {
		var err error
		if out, err = render(p.FinalData(h)); err != nil {
			p.RenderFailed(h.Serial, "final", err)
		}
		return err
	})
	if err != nil {
		return nil, host.Host{}, err
	}
	p.counts.finalConfigs.Add(1)
	return out, h, nil
}

func (p *Provisioner) reportFacts(serial string, f Facts, check func(host.Host) error) (host.Host, error) {
	serial, err := machineSerial(serial)
	if err != nil {
		return host.Host{}, err
	}
	macs, err := normalizeMACs(f.MACs)
	if err != nil {
		return host.Host{}, err
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
	release, err := p.claimMACs(serial, macs)
	if err != nil {
		p.log.Warn("facts report refused", "serial", serial, "macs", macs, "err", err)
		return host.Host{}, err
	}
	defer release()
	// A refused request leaves no record behind: registration and facts
	// are one write.
	h, _, err := p.upsert(serial, []store.Step{
		{Message: MsgMACs, Apply: func(h *host.Host) error {
			if len(macs) == 0 {
				return nil
			}
			if len(h.MacAddresses) > 0 && disjoint(h.MacAddresses, macs) {
				return fmt.Errorf("%w: %s is bound to MACs %s but the machine now reporting reports %s: "+
					"a different machine with the same serial? If its network cards or board were replaced, re-bind it: mayuctl set %s macs %s",
					ErrMACConflict, h.Serial, strings.Join(h.MacAddresses, ","), strings.Join(macs, ","), h.Serial, strings.Join(macs, ","))
			}
			h.MacAddresses = macs
			return nil
		}},
		{Message: MsgConnectedNIC, Apply: func(h *host.Host) error {
			h.ConnectedNIC = nic
			return nil
		}},
		{Message: MsgIPMIAddr, Apply: func(h *host.Host) error {
			if ipmi != nil {
				h.IPMIAddr = ipmi
			}
			return nil
		}},
		transition(MsgInstalling, host.Installing, nil),
	}, check)
	if errors.Is(err, ErrMACConflict) {
		p.log.Warn("facts report refused", "serial", serial, "macs", macs, "err", err)
	}
	return h, err
}

// disjoint reports whether a and b share no element.
func disjoint(a, b []string) bool {
	for _, x := range a {
		if contains(b, x) {
			return false
		}
	}
	return true
}

// SetMACs is the operator's re-binding of a serial to its machine's MAC
// addresses, after its network cards or board were replaced: DHCP ignores
// the new ones once the machine is installed, and its next facts report
// must match them. An empty list unbinds the serial, so that the next
// report binds whatever the machine reports; a machine DHCP ignores
// (installed, running) cannot be unbound. A MAC recorded on another host
// is ErrMACConflict.
func (p *Provisioner) SetMACs(serial string, macs []string) (host.Host, error) {
	serial, err := Serial(serial)
	if err != nil {
		return host.Host{}, err
	}
	norm, err := normalizeMACs(macs)
	if err != nil {
		return host.Host{}, err
	}
	release, err := p.claimMACs(serial, norm)
	if err != nil {
		return host.Host{}, err
	}
	defer release()
	return p.update(serial, store.Step{Message: MsgSetMACs, Apply: func(h *host.Host) error {
		if len(norm) == 0 && h.State.IgnoredByDHCP() {
			return fmt.Errorf("%w: %s is %s: without MAC addresses DHCP could not ignore it and it would PXE-boot "+
				"and install again; give its new MACs instead, or set it configured first", ErrConflict, h.Serial, h.State)
		}
		h.MacAddresses = norm
		return nil
	}})
}

// SetInstalled marks the machine installed; DHCP then ignores its MACs.
func (p *Provisioner) SetInstalled(serial string) (host.Host, error) {
	h, err := p.update(serial, transition(MsgInstalled, host.Installed, nil))
	if err == nil {
		p.counts.installs.Add(1)
	}
	return h, err
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
// changes; the CoreOS version must also have a version's shape. The
// reported CoreOSVersion is shown, never used to pick images (see
// ImageVersion).
func (p *Provisioner) BootComplete(serial string, v Versions) (host.Host, error) {
	if err := checkVersion("CoreOSVersion", strings.TrimSpace(v.CoreOSVersion)); err != nil {
		return host.Host{}, err
	}
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
	h, err := p.update(serial, transition(MsgRunning, host.Running, func(h *host.Host) {
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
	if err == nil {
		p.counts.bootCompletions.Add(1)
	}
	return h, err
}

// SetState is the operator's state change. Moving to configured (reinstall)
// keeps the disk data; MarkFresh is the variant that wipes it. Running is
// refused (host.ErrForbiddenTransition): a machine reports it itself at
// boot (BootComplete), and Mayu 0.11 read "set state running" as "reinstall
// with the data wiped", which MarkFresh does; doing anything else under
// that name would surprise its users.
func (p *Provisioner) SetState(serial, state string) (host.Host, error) {
	st, err := host.ParseState(state)
	if err != nil {
		return host.Host{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if st == host.Running {
		return p.update(serial, store.Step{Apply: func(h *host.Host) error {
			return fmt.Errorf("%w from %s to running: a machine reports running itself when it boots (boot_complete); "+
				"Mayu 0.11's \"set state running\" meant reinstall with the data disk wiped, which is mayuctl mark-fresh",
				host.ErrForbiddenTransition, h.State)
		}})
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
