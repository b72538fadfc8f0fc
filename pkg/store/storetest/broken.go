// Package storetest holds what tests of store.Store users and implementers
// share: a Broken store for the failure paths, and Run, the conformance
// suite every implementation passes.
package storetest

import (
	"fmt"
	"net"
	"sync"
	"testing"

	"mayu/pkg/host"
	"mayu/pkg/store"
)

// Broken is a store.Store whose disk has failed: every mutation runs its
// steps (so a step's own error, such as a forbidden state change, still
// wins, as with a real store) and then fails with an error wrapping
// store.ErrStorage. Reads are served from Reads when set (seed it with the
// records a test needs), else find nothing; ReadErr, when set, is returned
// by Get, ByMAC and ByIP instead.
type Broken struct {
	// Reads serves the reads; nil means an empty store.
	Reads store.Store
	// ReadErr, if set, is returned by every lookup.
	ReadErr error
	// Err is wrapped into the mutation errors; nil means "disk full".
	Err error

	mu       sync.Mutex
	attempts int
	empty    store.Store // the reads when Reads is nil
}

// NewBroken returns a Broken store whose reads see the given hosts.
func NewBroken(t testing.TB, hosts ...host.Host) *Broken {
	t.Helper()
	m := store.NewMemory()
	for _, h := range hosts {
		h := h
		if _, err := m.Create(h.Serial, store.Step{Message: "seed", Apply: func(r *host.Host) error {
			*r = h.Clone()
			return nil
		}}); err != nil {
			t.Fatalf("storetest: seed %q: %v", h.Serial, err)
		}
	}
	return &Broken{Reads: m}
}

// Attempts returns how many mutations were tried.
func (b *Broken) Attempts() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.attempts
}

func (b *Broken) fail(what string) error {
	b.mu.Lock()
	b.attempts++
	b.mu.Unlock()
	cause := b.Err
	if cause == nil {
		cause = fmt.Errorf("write: no space left on device")
	}
	return fmt.Errorf("%w: %s: %w", store.ErrStorage, what, cause)
}

func (b *Broken) read() store.Store {
	if b.Reads != nil {
		return b.Reads
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.empty == nil {
		b.empty = store.NewMemory()
	}
	return b.empty
}

// Get implements store.Store.
func (b *Broken) Get(serial string) (host.Host, error) {
	if b.ReadErr != nil {
		return host.Host{}, b.ReadErr
	}
	return b.read().Get(serial)
}

// ByMAC implements store.Store.
func (b *Broken) ByMAC(mac string) (host.Host, error) {
	if b.ReadErr != nil {
		return host.Host{}, b.ReadErr
	}
	return b.read().ByMAC(mac)
}

// ByIP implements store.Store.
func (b *Broken) ByIP(ip net.IP) (host.Host, error) {
	if b.ReadErr != nil {
		return host.Host{}, b.ReadErr
	}
	return b.read().ByIP(ip)
}

// List implements store.Store.
func (b *Broken) List() []host.Host { return b.read().List() }

// ProfileCount implements store.Store.
func (b *Broken) ProfileCount(profile string) int { return b.read().ProfileCount(profile) }

// Create implements store.Store: the steps run on a fresh record, then the
// write fails.
func (b *Broken) Create(serial string, steps ...store.Step) (host.Host, error) {
	if _, err := b.read().Get(serial); err == nil {
		return host.Host{}, fmt.Errorf("%w: %s", store.ErrExists, serial)
	}
	if err := runSteps(host.Host{Serial: serial}, steps); err != nil {
		return host.Host{}, err
	}
	return host.Host{}, b.fail("create " + serial)
}

// Reserve implements store.Store: the reservation is made in the reads'
// store (so it counts against what is there, and Release gives it back);
// its Create runs the steps on a fresh record, then fails.
func (b *Broken) Reserve(serial string, req store.AllocRequest) (store.Reservation, error) {
	r, err := b.read().Reserve(serial, req)
	if err != nil {
		return nil, err
	}
	return brokenReservation{Reservation: r, b: b, serial: serial}, nil
}

type brokenReservation struct {
	store.Reservation
	b      *Broken
	serial string
}

func (r brokenReservation) Create(steps ...store.Step) (host.Host, error) {
	defer r.Release()
	return r.b.Create(r.serial, steps...)
}

// Update implements store.Store: the steps run on the read record, then
// the write fails.
func (b *Broken) Update(serial string, steps ...store.Step) (host.Host, error) {
	h, err := b.read().Get(serial)
	if err != nil {
		return host.Host{}, err
	}
	if err := runSteps(h, steps); err != nil {
		return host.Host{}, err
	}
	return host.Host{}, b.fail("update " + serial)
}

func runSteps(h host.Host, steps []store.Step) error {
	for _, st := range steps {
		if st.Apply == nil {
			continue
		}
		if err := st.Apply(&h); err != nil {
			return err
		}
	}
	return nil
}

// Cluster implements store.Store.
func (b *Broken) Cluster() store.Cluster { return b.read().Cluster() }

// UpdateCluster implements store.Store.
func (b *Broken) UpdateCluster(message string, apply func(c *store.Cluster) error) (store.Cluster, error) {
	cur := b.read().Cluster()
	c := cur
	if err := apply(&c); err != nil {
		return cur, err
	}
	return cur, b.fail("update cluster.json")
}

// Subscribe implements store.Store: nothing ever changes.
func (b *Broken) Subscribe(func()) {}

// Close implements store.Store.
func (b *Broken) Close() error { return nil }

var _ store.Store = (*Broken)(nil)
