package provision

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"

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
	reg := &registration{done: make(chan struct{}), err: errors.New("provision: registration did not finish")}
	p.inflight[serial] = reg
	p.regMu.Unlock()
	defer p.finish(serial, reg)

	h, err := p.register(serial, steps, check)
	reg.h, reg.err = h, err
	if err != nil {
		return host.Host{}, false, err
	}
	p.counts.registrations.Add(1)
	p.log.Info("registered new machine", "serial", serial, "profile", h.Profile, "ip", h.InternalAddr.String())
	return h, true, nil
}

// register creates the record of serial: the store reserves its profile
// and address, the new-record steps and steps are written with check as
// in write, and the reservation is given back if anything fails.
func (p *Provisioner) register(serial string, steps []store.Step, check func(host.Host) error) (host.Host, error) {
	machineID, err := p.machineID(0, 0)
	if err != nil {
		return host.Host{}, err
	}
	res, err := p.store.Reserve(serial, p.alloc)
	if errors.Is(err, store.ErrExists) {
		return host.Host{}, errChanged // it landed meanwhile: start over on it
	}
	if err != nil {
		if errors.Is(err, ErrRangeFull) {
			p.log.Error("cannot register machine", "serial", serial, "err", err)
		}
		return host.Host{}, err
	}
	defer res.Release()
	all := append(p.newRecordSteps(res.Allocation(), machineID), steps...)
	h, err := p.write(host.Host{Serial: serial}, all, check, res.Create)
	if errors.Is(err, store.ErrReservationLost) || errors.Is(err, store.ErrExists) {
		// Its address, or the serial itself, got a record meanwhile (a
		// hand edit, another mayu sharing the store): start over.
		return host.Host{}, errChanged
	}
	return h, err
}

// finish ends a registration and wakes the requests that waited for it.
func (p *Provisioner) finish(serial string, reg *registration) {
	p.regMu.Lock()
	delete(p.inflight, serial)
	p.regMu.Unlock()
	close(reg.done)
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
	h, err := p.write(h, steps, check, p.updater(h.Serial))
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

// newRecordSteps are the audited steps that create a record from its
// allocation, with the messages Mayu users know from git log.
func (p *Provisioner) newRecordSteps(a store.Allocation, machineID string) []store.Step {
	prof, ok := p.cfg.Profile(a.Profile)
	if !ok {
		prof = config.Profile{Name: a.Profile}
	}
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
			h.MachineID = machineID
			h.Hostname = machineID[:16]
			return nil
		}},
		{Message: MsgInternalAddr, Apply: func(h *host.Host) error {
			h.InternalAddr = a.Addr
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
	done chan struct{}
	h    host.Host
	err  error
}

// allocRequest is what every new record asks the store for: the
// configured profiles in config order with their quantities, then the
// default profile; the lowest allocatable address of ip_range.
func allocRequest(cfg *config.Config) store.AllocRequest {
	lo, hi := cfg.Network.IPRange.Bounds()
	req := store.AllocRequest{Default: config.DefaultProfileName, First: lo, Last: hi,
		Allocatable: cfg.Allocatable, RangeName: "network.ip_range"}
	for _, prof := range cfg.Profiles {
		if prof.Name != config.DefaultProfileName {
			req.Profiles = append(req.Profiles, store.ProfileQuota{Name: prof.Name, Quantity: prof.Quantity})
		}
	}
	return req
}

// machineID is 16 random bytes in hex; byte 0 is the cabinet and byte 1 the
// machine on the cabinet.
func (p *Provisioner) machineID(cabinet, machineOnCabinet uint) (string, error) {
	b := make([]byte, 16)
	p.randMu.Lock()
	_, err := io.ReadFull(p.rand, b)
	p.randMu.Unlock()
	if err != nil {
		return "", fmt.Errorf("provision: machine id: %w", err)
	}
	b[0], b[1] = byte(cabinet), byte(machineOnCabinet)
	return hex.EncodeToString(b), nil
}
