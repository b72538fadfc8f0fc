package store

import (
	"fmt"
	"net"
	"sync"

	"mayu/pkg/host"
)

// Memory is a Store that keeps everything in memory. It records the audit
// messages it would have committed, so tests can check them.
type Memory struct {
	mu       sync.RWMutex
	hosts    *Table
	leases   *Leases
	cluster  Cluster
	messages []string
	notes    Notifier
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	m := &Memory{hosts: NewTable()}
	m.leases = NewLeases(&m.mu, m.createLeased)
	return m
}

// Get implements Store.
func (m *Memory) Get(serial string) (host.Host, error) {
	if err := CheckSerial(serial); err != nil {
		return host.Host{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	h, ok := m.hosts.Get(serial)
	if !ok {
		return host.Host{}, fmt.Errorf("%w: %s", ErrNotFound, serial)
	}
	return h.Clone(), nil
}

// ByMAC implements Store.
func (m *Memory) ByMAC(mac string) (host.Host, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	h, ok := m.hosts.ByMAC(mac)
	if !ok {
		return host.Host{}, fmt.Errorf("%w: mac %s", ErrNotFound, mac)
	}
	return h.Clone(), nil
}

// ByIP implements Store.
func (m *Memory) ByIP(ip net.IP) (host.Host, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	h, ok := m.hosts.ByIP(ip)
	if !ok {
		return host.Host{}, fmt.Errorf("%w: ip %s", ErrNotFound, ip)
	}
	return h.Clone(), nil
}

// List implements Store.
func (m *Memory) List() []host.Host {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.hosts.List()
}

// ProfileCount implements Store.
func (m *Memory) ProfileCount(profile string) int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.hosts.ProfileCount(profile)
}

// Create implements Store.
func (m *Memory) Create(serial string, steps ...Step) (host.Host, error) {
	if err := CheckSerial(serial); err != nil {
		return host.Host{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.hosts.Get(serial); ok {
		return host.Host{}, fmt.Errorf("%w: %s", ErrExists, serial)
	}
	return m.apply(host.Host{Serial: serial}, steps)
}

// Reserve implements Store.
func (m *Memory) Reserve(serial string, req AllocRequest) (Reservation, error) {
	return m.leases.Reserve(func() *Table { return m.hosts }, serial, req)
}

func (m *Memory) createLeased(l *Lease, steps []Step) (host.Host, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.hosts.Get(l.Serial()); ok {
		return host.Host{}, fmt.Errorf("%w: %s", ErrExists, l.Serial())
	}
	if err := l.CheckLocked(m.hosts); err != nil {
		return host.Host{}, err
	}
	h, err := m.apply(host.Host{Serial: l.Serial()}, steps)
	if err == nil {
		l.EndLocked(true)
	}
	return h, err
}

// Update implements Store.
func (m *Memory) Update(serial string, steps ...Step) (host.Host, error) {
	if err := CheckSerial(serial); err != nil {
		return host.Host{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.hosts.Get(serial)
	if !ok {
		return host.Host{}, fmt.Errorf("%w: %s", ErrNotFound, serial)
	}
	return m.apply(h, steps)
}

func (m *Memory) apply(h host.Host, steps []Step) (host.Host, error) {
	snaps, msgs, err := ApplySteps(h, steps)
	if err != nil {
		return host.Host{}, err
	}
	if len(snaps) == 0 {
		if _, ok := m.hosts.Get(h.Serial); !ok {
			// A create whose steps changed nothing still creates the
			// record, audited as the git-backed store commits it.
			m.hosts.Put(h)
			m.messages = append(m.messages, h.Serial+": host created")
			m.notes.Notify()
		}
		return h.Clone(), nil
	}
	final := snaps[len(snaps)-1]
	m.hosts.Put(final)
	for _, msg := range msgs {
		m.messages = append(m.messages, h.Serial+": "+msg)
	}
	m.notes.Notify()
	return final.Clone(), nil
}

// Cluster implements Store.
func (m *Memory) Cluster() Cluster {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.cluster
}

// UpdateCluster implements Store.
func (m *Memory) UpdateCluster(message string, apply func(c *Cluster) error) (Cluster, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.cluster
	if err := apply(&c); err != nil {
		return m.cluster, err
	}
	if c != m.cluster {
		m.cluster = c
		m.messages = append(m.messages, message)
	}
	return c, nil
}

// Subscribe implements Store.
func (m *Memory) Subscribe(fn func()) { m.notes.Subscribe(fn) }

// Messages returns the audit messages recorded so far, oldest first.
func (m *Memory) Messages() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]string(nil), m.messages...)
}

// Close implements Store.
func (m *Memory) Close() error {
	m.notes.Close()
	return nil
}

var _ Store = (*Memory)(nil)
