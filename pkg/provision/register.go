package provision

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"

	"mayu/pkg/config"
	"mayu/pkg/host"
	"mayu/pkg/store"
)

// Register returns the record of serial, creating it on first sight with
// its profile, address, machine ID and etcd token. created tells whether it
// was new. A serial host.CheckSerial refuses (vendor placeholder, template
// marker) is an error wrapping ErrInvalid, and takes nothing.
func (p *Provisioner) Register(serial string) (h host.Host, created bool, err error) {
	return p.upsert(serial, nil, nil)
}

// RegisterChecked is Register with a check of the record as it will be
// returned (a rendered first-stage script): for a new serial, check sees
// the record before it is written, and an error from check creates
// nothing.
func (p *Provisioner) RegisterChecked(serial string, check func(h host.Host) error) (h host.Host, created bool, err error) {
	return p.upsert(serial, nil, check)
}

// upsert applies steps to the record of serial in one write, creating the
// record on first sight (the new-record steps, then steps), with check as
// in write. Without steps, a stored record is only handed to check. A
// concurrent change of the record between check and write starts the
// request over (up to maxAttempts times). The serial must pass
// machineSerial.
func (p *Provisioner) upsert(serial string, steps []store.Step, check func(host.Host) error) (h host.Host, created bool, err error) {
	serial, err = machineSerial(serial)
	if err != nil {
		return host.Host{}, false, err
	}
	for attempt := 1; ; attempt++ {
		h, created, err = p.upsertOnce(serial, steps, check)
		if !errors.Is(err, errChanged) || attempt == maxAttempts {
			return h, created, err
		}
	}
}

func (p *Provisioner) upsertOnce(serial string, steps []store.Step, check func(host.Host) error) (host.Host, bool, error) {
	if h, err := p.store.Get(serial); err == nil {
		return p.updateStored(h, steps, check)
	} else if !errors.Is(err, store.ErrNotFound) {
		return host.Host{}, false, err
	}

	p.regMu.Lock()
	// Another request may have created it while we waited for the lock, or
	// be creating it now.
	if h, err := p.store.Get(serial); err == nil {
		p.regMu.Unlock()
		return p.updateStored(h, steps, check)
	}
	if reg := p.inflight[serial]; reg != nil {
		p.regMu.Unlock()
		<-reg.done
		if reg.err != nil {
			return host.Host{}, false, reg.err
		}
		if len(steps) == 0 && check == nil {
			return reg.h, false, nil
		}
		return host.Host{}, false, errChanged // start over on the record it wrote
	}
	res, err := p.reserveLocked(serial)
	p.regMu.Unlock()
	if err != nil {
		if errors.Is(err, ErrRangeFull) {
			p.log.Error("cannot register machine", "serial", serial, "err", err)
		}
		return host.Host{}, false, err
	}
	defer p.release(serial, res)

	all := append(p.newRecordSteps(res), steps...)
	h, err := p.write(serial, true, host.Host{Serial: serial}, all, check)
	res.reg.h, res.reg.err = h, err
	if err != nil {
		return host.Host{}, false, err
	}
	p.log.Info("registered new machine", "serial", serial, "profile", h.Profile, "ip", h.InternalAddr.String())
	return h, true, nil
}

// updateStored applies steps (and check) to the stored record h.
func (p *Provisioner) updateStored(h host.Host, steps []store.Step, check func(host.Host) error) (host.Host, bool, error) {
	if len(steps) == 0 {
		if check != nil {
			if err := check(h.Clone()); err != nil {
				return host.Host{}, false, err
			}
		}
		return h, false, nil
	}
	h, err := p.write(h.Serial, false, h, steps, check)
	return h, false, err
}

// machineSerial normalizes the serial a machine names itself by. A
// placeholder or an unsubstituted marker (host.CheckSerial) would give many
// machines one record (and one address): it is ErrInvalid, refused before
// anything is reserved or claimed.
func machineSerial(serial string) (string, error) {
	if err := host.CheckSerial(serial); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return Serial(serial)
}

// reservation is what a registration holds while its record is written:
// an address no other registration may take, the profile counted against
// its quantity, and the machine ID.
type reservation struct {
	ip        net.IP
	ipn       uint32
	profile   config.Profile
	machineID string
	reg       *registration
}

// reserveLocked picks the address, profile and machine ID of a new record
// of serial and reserves them; regMu must be held.
func (p *Provisioner) reserveLocked(serial string) (*reservation, error) {
	ip, err := p.freeIP()
	if err != nil {
		return nil, err
	}
	prof := p.pickProfile()
	machineID, err := p.machineID(0, 0)
	if err != nil {
		return nil, err
	}
	res := &reservation{ip: ip, ipn: config.IPToUint32(ip), profile: prof, machineID: machineID,
		reg: &registration{profile: prof.Name, done: make(chan struct{}),
			err: errors.New("provision: registration did not finish")}}
	p.resIP[res.ipn] = true
	p.inflight[serial] = res.reg
	p.ipNext = res.ipn + 1
	return res, nil
}

// release drops the reservation once the record is written (or failed to
// be), and wakes the requests that waited for it.
func (p *Provisioner) release(serial string, res *reservation) {
	p.regMu.Lock()
	delete(p.resIP, res.ipn)
	delete(p.inflight, serial)
	if res.reg.err != nil && res.ipn < p.ipNext {
		p.ipNext = res.ipn // the address is free again
	}
	p.regMu.Unlock()
	close(res.reg.done)
}

// newRecordSteps are the audited steps that create a record from its
// reservation, with the messages Mayu users know from git log.
func (p *Provisioner) newRecordSteps(res *reservation) []store.Step {
	prof := res.profile
	defaultToken := p.defaultToken()
	// As Mayu 0.11: a configured profile's own coreos_version, empty when
	// it has none, so that the machine follows default_coreos_version
	// (ImageVersion) until it reports what it runs or an operator
	// overrides it; only the implicit default profile, absent from
	// config.yaml, records default_coreos_version.
	version := prof.CoreOSVersion
	if _, configured := p.cfg.Profile(prof.Name); !configured {
		version = p.cfg.DefaultCoreOSVersion
	}
	return []store.Step{
		{Message: MsgCreated, Apply: func(h *host.Host) error {
			h.Enabled = true
			h.State = host.Configured
			return nil
		}},
		{Message: MsgPredefined, Apply: func(h *host.Host) error {
			h.MachineID = res.machineID
			h.Hostname = res.machineID[:16]
			return nil
		}},
		{Message: MsgInternalAddr, Apply: func(h *host.Host) error {
			h.InternalAddr = res.ip
			return nil
		}},
		{Message: MsgProfile, Apply: func(h *host.Host) error {
			h.Profile = prof.Name
			h.FleetMetadata = host.FleetMeta(append([]string(nil), prof.Tags...))
			h.FleetDisableEngine = prof.DisableEngine
			h.CoreOSVersion = version
			h.EtcdClusterToken = prof.EtcdClusterToken
			return nil
		}},
		{Message: MsgDefaultToken, Apply: func(h *host.Host) error {
			h.EtcdClusterToken = etcdToken(h.EtcdClusterToken, defaultToken)
			return nil
		}},
	}
}

// registration is a Register in progress; a second request for the same
// serial waits for it and shares its outcome.
type registration struct {
	profile string
	done    chan struct{}
	h       host.Host
	err     error
}

// freeIP returns the lowest free address of ip_range. It scans from the
// last allocation first (addresses below it were taken then), and the whole
// range only when that finds nothing, so a registration costs O(1) lookups
// in a growing fleet. A full range is an error, never a hang.
func (p *Provisioner) freeIP() (net.IP, error) {
	scan := func(from, to uint32) net.IP {
		for n := from; n <= to && n >= from; n++ {
			ip := config.Uint32ToIP(n)
			if p.resIP[n] || !p.cfg.Allocatable(ip) {
				continue
			}
			if _, err := p.store.ByIP(ip); errors.Is(err, store.ErrNotFound) {
				return ip
			}
			if n == to {
				break
			}
		}
		return nil
	}
	if p.ipNext <= p.ipHi {
		if ip := scan(p.ipNext, p.ipHi); ip != nil {
			return ip, nil
		}
	}
	if ip := scan(p.ipLo, p.ipHi); ip != nil {
		return ip, nil
	}
	return nil, fmt.Errorf("%w (%s-%s)", ErrRangeFull, p.cfg.Network.IPRange.Start, p.cfg.Network.IPRange.End)
}

// pickProfile returns the first profile in config order whose quantity is
// not reached yet, else the default profile.
func (p *Provisioner) pickProfile() config.Profile {
	for _, prof := range p.cfg.Profiles {
		if prof.Name == config.DefaultProfileName {
			continue
		}
		if p.profileCount(prof.Name) < prof.Quantity {
			return prof
		}
	}
	if prof, ok := p.cfg.Profile(config.DefaultProfileName); ok {
		return prof
	}
	return config.Profile{Name: config.DefaultProfileName}
}

// profileCount counts the hosts of a profile, the registrations in
// progress included. A registration's record lands in the store before its
// reservation is dropped, so each one is counted once: from the store if
// its record was there when ProfileCount read it, else as pending. If one
// landed during the read, the count is taken again.
func (p *Provisioner) profileCount(profile string) int {
	landed := func(serial string) bool {
		_, err := p.store.Get(serial)
		return err == nil
	}
	for {
		var waiting []string
		for serial, reg := range p.inflight {
			if reg.profile == profile && !landed(serial) {
				waiting = append(waiting, serial)
			}
		}
		n := p.store.ProfileCount(profile)
		stable := true
		for _, serial := range waiting {
			if landed(serial) {
				stable = false
				break
			}
		}
		if stable {
			return n + len(waiting)
		}
	}
}

// machineID is 16 random bytes in hex; byte 0 is the cabinet and byte 1 the
// machine on the cabinet.
func (p *Provisioner) machineID(cabinet, machineOnCabinet uint) (string, error) {
	b := make([]byte, 16)
	if _, err := io.ReadFull(p.rand, b); err != nil {
		return "", fmt.Errorf("provision: machine id: %w", err)
	}
	b[0], b[1] = byte(cabinet), byte(machineOnCabinet)
	return hex.EncodeToString(b), nil
}
