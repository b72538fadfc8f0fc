package provision

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"mayu/pkg/host"
	"mayu/pkg/store"
)

// MaxRecordBytes caps one host record as conf.json holds it. A Mayu 0.11
// record is under 1 KiB; every change commits a full copy of the record,
// so without a cap a few large overrides grow the git history by
// megabytes per request.
const MaxRecordBytes = 64 << 10

// errChanged: the record changed between the dry run a check saw and the
// write; the request starts over on the record as it now is. Should that
// keep happening (maxAttempts), the caller gets it: a 409 to retry.
var errChanged = fmt.Errorf("%w: the record kept changing while the request was prepared; try again", ErrConflict)

// maxAttempts bounds how often a checked write starts over because a
// concurrent request changed the record.
const maxAttempts = 5

// capStep refuses a record larger than MaxRecordBytes. It changes nothing,
// so it is never committed; it runs last, on the record as it would be
// written.
func capStep() store.Step {
	return store.Step{Apply: func(h *host.Host) error {
		b, err := h.Marshal()
		if err != nil {
			return err
		}
		if len(b) > MaxRecordBytes {
			return fmt.Errorf("%w: the record of %s would be %d bytes, over the cap of %d (%d KiB); keep overrides and metadata small",
				ErrTooLarge, h.Serial, len(b), MaxRecordBytes, MaxRecordBytes>>10)
		}
		return nil
	}}
}

// dryRun applies steps to a copy of base, as the store will.
func dryRun(base host.Host, steps []store.Step) (host.Host, error) {
	h := base.Clone()
	for _, st := range steps {
		if st.Apply == nil {
			continue
		}
		if err := st.Apply(&h); err != nil {
			return host.Host{}, err
		}
	}
	return h, nil
}

// write applies steps to a record in one store write (commit: an Update,
// or the Create of a reservation), ending with the record cap. With a
// check, the steps are first run on a copy of base (the record as last
// read, or the bare new record) and check sees the result; the write then
// happens only if the record is still what check saw (else errChanged), so
// what check produced, a rendered config, matches what is stored, and a
// check that fails leaves everything as it was.
func (p *Provisioner) write(base host.Host, steps []store.Step, check func(host.Host) error, commit func(...store.Step) (host.Host, error)) (host.Host, error) {
	steps = append(p.attributed(steps), capStep())
	if check != nil {
		want, err := dryRun(base, steps)
		if err != nil {
			return host.Host{}, err
		}
		if err := check(want.Clone()); err != nil {
			return host.Host{}, err
		}
		wantJSON, err := want.Marshal()
		if err != nil {
			return host.Host{}, err
		}
		steps = append(steps, store.Step{Apply: func(h *host.Host) error {
			got, err := h.Marshal()
			if err != nil {
				return err
			}
			if !bytes.Equal(got, wantJSON) {
				return errChanged
			}
			return nil
		}})
	}
	return commit(steps...)
}

// updater returns the commit of write for the existing record of serial.
func (p *Provisioner) updater(serial string) func(...store.Step) (host.Host, error) {
	return func(steps ...store.Step) (host.Host, error) { return p.store.Update(serial, steps...) }
}

// attributed returns a copy of steps whose audit messages end with the
// actor's trailer. A step without a message commits nothing and keeps none.
func (p *Provisioner) attributed(steps []store.Step) []store.Step {
	out := append([]store.Step(nil), steps...)
	if t := p.actor.trailer(); t != "" {
		for i := range out {
			if out[i].Message != "" {
				out[i].Message += t
			}
		}
	}
	return out
}

// claimMACs reserves macs for serial while its write is under way, so that
// two machines reporting the same MAC at once cannot both get it. A MAC
// recorded on (or being claimed by) another host is refused with
// ErrMACConflict naming that host. release must be called once the write
// is done, whatever its outcome.
func (p *Provisioner) claimMACs(serial string, macs []string) (release func(), err error) {
	p.macMu.Lock()
	defer p.macMu.Unlock()
	for _, m := range macs {
		if other, ok := p.macClaims[m]; ok && other != serial {
			return nil, fmt.Errorf("%w: MAC %s is being recorded on host %s right now", ErrMACConflict, m, other)
		}
		other, err := p.store.ByMAC(m)
		if err == nil && other.Serial != serial {
			return nil, fmt.Errorf("%w: MAC %s is recorded on host %s (state %s): one network card cannot belong to two machines; "+
				"if it moved, free it first: mayuctl set %s macs <its remaining MACs, or \"\">",
				ErrMACConflict, m, other.Serial, other.State, other.Serial)
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	var mine []string
	for _, m := range macs {
		if _, ok := p.macClaims[m]; !ok {
			p.macClaims[m] = serial
			mine = append(mine, m)
		}
	}
	return func() {
		p.macMu.Lock()
		for _, m := range mine {
			delete(p.macClaims, m)
		}
		p.macMu.Unlock()
	}, nil
}

// normalizeMACs normalizes and de-duplicates MAC addresses, keeping their
// order. An empty or malformed one is an ErrInvalid.
func normalizeMACs(in []string) ([]string, error) {
	macs := make([]string, 0, len(in))
	for _, m := range in {
		if strings.TrimSpace(m) == "" {
			return nil, fmt.Errorf("%w: empty MAC address", ErrInvalid)
		}
		n, err := host.NormalizeMAC(m)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if !contains(macs, n) {
			macs = append(macs, n)
		}
	}
	return macs, nil
}
