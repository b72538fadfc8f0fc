package provision

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"mayu/pkg/host"
	"mayu/pkg/store"
	"mayu/pkg/timeline"
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
	var w stateWatch
	steps = append(w.watch(p.attributed(steps)), capStep())
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
	h, err := commit(steps...)
	var taken *store.MACTakenError
	if errors.As(err, &taken) {
		// A shared store found the MAC taken in its own transaction
		// (another instance recorded it meanwhile): the same refusal as
		// claimMACs's.
		err = macTaken(taken.MAC, taken.Owner)
	}
	if err == nil {
		p.publishState(h, &w)
	}
	return h, err
}

// stateWatch sees, as the store applies a write's steps, whether one
// changed the state or recorded a boot, and which.
type stateWatch struct {
	from    host.State
	changed bool
	message string // the subject of the step's commit
}

// watch returns steps wrapped to fill w. The store may apply the steps more
// than once (store.Step): the first one starts w over.
func (w *stateWatch) watch(steps []store.Step) []store.Step {
	out := make([]store.Step, 0, len(steps)+1)
	out = append(out, store.Step{Apply: func(h *host.Host) error {
		*w = stateWatch{from: h.State}
		return nil
	}})
	for _, st := range steps {
		apply, msg := st.Apply, st.Message
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i] // without the actor's trailer
		}
		if apply == nil {
			out = append(out, st)
			continue
		}
		st.Apply = func(h *host.Host) error {
			state, boot := h.State, h.LastBoot
			if err := apply(h); err != nil {
				return err
			}
			if h.State != state || !h.LastBoot.Equal(boot) {
				w.changed, w.message = true, msg
			}
			return nil
		}
		out = append(out, st)
	}
	return out
}

// publishState records the state event of a write that w saw change the
// state (or record a boot) of h, as stored.
func (p *Provisioner) publishState(h host.Host, w *stateWatch) {
	if p.tl == nil || !w.changed {
		return
	}
	p.tl.Publish(timeline.Event{Kind: timeline.State, Serial: h.Serial, From: string(w.from), To: string(h.State),
		Message: w.message, Principal: p.actor.Principal})
}

// RenderFailed records in the timeline that the config what
// ("first-stage", "final") of serial did not render, with err as the
// reason. The API calls it for the first-stage script, FinalConfig for the
// final config.
func (p *Provisioner) RenderFailed(serial, what string, err error) {
	if p.tl == nil || err == nil {
		return
	}
	p.tl.Publish(timeline.Event{Kind: timeline.RenderFailed, Serial: serial, File: what, Reason: err.Error()})
}

// Timeline is where the provisioner records its events (nil: nowhere); the
// API records machines' fetches there too.
func (p *Provisioner) Timeline() *timeline.Timeline { return p.tl }

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
			return nil, macTaken(m, other)
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

// macTaken is the ErrMACConflict of mac, recorded on the host other.
func macTaken(mac string, other host.Host) error {
	return fmt.Errorf("%w: MAC %s is recorded on host %s (state %s): one network card cannot belong to two machines; "+
		"if it moved, free it first: mayuctl set %s macs <its remaining MACs, or \"\">",
		ErrMACConflict, mac, other.Serial, other.State, other.Serial)
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
