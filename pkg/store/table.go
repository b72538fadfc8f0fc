package store

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"mayu/pkg/host"
)

// Table holds the host records in memory with the lookups the daemon needs
// on every request (by serial, MAC and IP, and the count per profile), so no
// request ever reads the disk. It is not locked itself: its owner
// serialises access. The zero value is not usable: see NewTable.
type Table struct {
	hosts    map[string]host.Host // by serial
	byMAC    map[string]string    // mac -> serial
	byIP     map[string]string    // ip string -> serial
	profiles map[string]int
	// freed is the lowest address a record gave up (removed, or changed
	// to another) since Leases last looked (takeFreed): the search for a
	// free address must start there again.
	freed netip.Addr
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{
		hosts:    map[string]host.Host{},
		byMAC:    map[string]string{},
		byIP:     map[string]string{},
		profiles: map[string]int{},
	}
}

// Get returns the record of serial, not a copy.
func (t *Table) Get(serial string) (host.Host, bool) {
	h, ok := t.hosts[serial]
	return h, ok
}

// Put adds or replaces h. The table keeps h itself: the caller hands it
// over.
func (t *Table) Put(h host.Host) {
	old, had := t.remove(h.Serial)
	if had && old.InternalAddr != nil && !old.InternalAddr.Equal(h.InternalAddr) {
		t.free(old.InternalAddr)
	}
	t.hosts[h.Serial] = h
	for _, m := range h.MacAddresses {
		t.byMAC[strings.ToLower(m)] = h.Serial
	}
	if h.InternalAddr != nil {
		t.byIP[h.InternalAddr.String()] = h.Serial
	}
	t.profiles[h.Profile]++
}

// Remove drops the record of serial, if any.
func (t *Table) Remove(serial string) {
	if old, ok := t.remove(serial); ok && old.InternalAddr != nil {
		t.free(old.InternalAddr)
	}
}

// free notes that ip may be free again.
func (t *Table) free(ip net.IP) {
	a, ok := netip.AddrFromSlice(ip.To4())
	if ok && (!t.freed.IsValid() || a.Less(t.freed)) {
		t.freed = a
	}
}

// takeFreed returns the lowest address given up since the last call, if
// any, and forgets it.
func (t *Table) takeFreed() (netip.Addr, bool) {
	a := t.freed
	t.freed = netip.Addr{}
	return a, a.IsValid()
}

func (t *Table) remove(serial string) (host.Host, bool) {
	old, ok := t.hosts[serial]
	if !ok {
		return host.Host{}, false
	}
	for _, m := range old.MacAddresses {
		if t.byMAC[strings.ToLower(m)] == serial {
			delete(t.byMAC, strings.ToLower(m))
		}
	}
	if old.InternalAddr != nil && t.byIP[old.InternalAddr.String()] == serial {
		delete(t.byIP, old.InternalAddr.String())
	}
	t.profiles[old.Profile]--
	if t.profiles[old.Profile] <= 0 {
		delete(t.profiles, old.Profile)
	}
	delete(t.hosts, serial)
	return old, true
}

// ByMAC returns the record with this MAC address (any case), not a copy.
func (t *Table) ByMAC(mac string) (host.Host, bool) {
	s, ok := t.byMAC[strings.ToLower(mac)]
	if !ok {
		return host.Host{}, false
	}
	return t.hosts[s], true
}

// ByIP returns the record whose InternalAddr is ip, not a copy.
func (t *Table) ByIP(ip net.IP) (host.Host, bool) {
	s, ok := t.byIP[ip.String()]
	if !ok {
		return host.Host{}, false
	}
	return t.hosts[s], true
}

// List returns copies of every record, sorted by serial.
func (t *Table) List() []host.Host {
	out := make([]host.Host, 0, len(t.hosts))
	for _, h := range t.hosts {
		out = append(out, h.Clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Serial < out[j].Serial })
	return out
}

// ProfileCount returns how many records have this profile.
func (t *Table) ProfileCount(profile string) int { return t.profiles[profile] }

// Serials returns the serials of every record, in no order.
func (t *Table) Serials() []string {
	out := make([]string, 0, len(t.hosts))
	for s := range t.hosts {
		out = append(out, s)
	}
	return out
}

// ApplySteps runs the steps on a copy of h and returns the snapshot after
// each step that changed something, paired with its message. The serial
// cannot be changed by a step: a step that does is an error. On error
// nothing is returned but the error (the first step's).
func ApplySteps(h host.Host, steps []Step) (snapshots []host.Host, messages []string, err error) {
	cur := h.Clone()
	prev, err := cur.Marshal()
	if err != nil {
		return nil, nil, err
	}
	for _, st := range steps {
		next := cur.Clone()
		if st.Apply != nil {
			if err := st.Apply(&next); err != nil {
				return nil, nil, err
			}
		}
		if next.Serial != h.Serial {
			return nil, nil, fmt.Errorf("store: step %q changed the serial", st.Message)
		}
		b, err := next.Marshal()
		if err != nil {
			return nil, nil, err
		}
		if string(b) == string(prev) {
			continue
		}
		prev = b
		cur = next
		snapshots = append(snapshots, next.Clone())
		messages = append(messages, st.Message)
	}
	return snapshots, messages, nil
}

// Notifier implements Store.Subscribe: it coalesces change notifications,
// so however many changes happen while a subscriber runs, it is called once
// more afterwards, never concurrently with itself. The zero value is ready
// to use.
type Notifier struct {
	mu   sync.Mutex
	subs []*subscriber
}

type subscriber struct {
	fn      func()
	pending chan struct{}
}

// Subscribe registers fn, called on its own goroutine after each Notify.
func (n *Notifier) Subscribe(fn func()) {
	s := &subscriber{fn: fn, pending: make(chan struct{}, 1)}
	n.mu.Lock()
	n.subs = append(n.subs, s)
	n.mu.Unlock()
	go func() {
		for range s.pending {
			s.fn()
		}
	}()
}

// Notify wakes every subscriber that is not already due to run.
func (n *Notifier) Notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.subs {
		select {
		case s.pending <- struct{}{}:
		default: // already pending: the coming call sees this change too
		}
	}
}

// Close ends the subscribers' goroutines once their pending call is made.
func (n *Notifier) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.subs {
		close(s.pending)
	}
	n.subs = nil
}

// reservedSerial is the one name a serial may not be: every implementation
// keeps Mayu's cluster directory layout in mind, where records live in
// <serial>/ beside cluster.json.
const reservedSerial = "cluster.json"

// CheckSerial returns an error wrapping host.ErrInvalidSerial unless serial
// is normalized (host.NormalizeSerial) and not reserved. The API
// normalizes serials, but a serial becomes a directory name in the
// git-backed store, so every implementation checks it again.
func CheckSerial(serial string) error {
	n, err := host.NormalizeSerial(serial)
	if err != nil {
		return err
	}
	if n != serial {
		return fmt.Errorf("%w %q: not normalized (want %q)", host.ErrInvalidSerial, truncate(serial, 60), n)
	}
	if serial == reservedSerial {
		return fmt.Errorf("%w %q: reserved name in the cluster directory", host.ErrInvalidSerial, serial)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
