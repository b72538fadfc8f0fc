package store

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"

	"mayu/pkg/host"
)

// index holds the records in memory with the lookups the daemon needs on
// every request, so no request ever rescans the cluster directory. It is not
// locked itself: its owner serialises access.
type index struct {
	hosts    map[string]host.Host // by serial
	byMAC    map[string]string    // mac -> serial
	byIP     map[string]string    // ip string -> serial
	profiles map[string]int
}

func newIndex() *index {
	return &index{
		hosts:    map[string]host.Host{},
		byMAC:    map[string]string{},
		byIP:     map[string]string{},
		profiles: map[string]int{},
	}
}

func (ix *index) get(serial string) (host.Host, bool) {
	h, ok := ix.hosts[serial]
	return h, ok
}

func (ix *index) put(h host.Host) {
	ix.remove(h.Serial)
	ix.hosts[h.Serial] = h
	for _, m := range h.MacAddresses {
		ix.byMAC[strings.ToLower(m)] = h.Serial
	}
	if h.InternalAddr != nil {
		ix.byIP[h.InternalAddr.String()] = h.Serial
	}
	ix.profiles[h.Profile]++
}

func (ix *index) remove(serial string) {
	old, ok := ix.hosts[serial]
	if !ok {
		return
	}
	for _, m := range old.MacAddresses {
		if ix.byMAC[strings.ToLower(m)] == serial {
			delete(ix.byMAC, strings.ToLower(m))
		}
	}
	if old.InternalAddr != nil && ix.byIP[old.InternalAddr.String()] == serial {
		delete(ix.byIP, old.InternalAddr.String())
	}
	ix.profiles[old.Profile]--
	if ix.profiles[old.Profile] <= 0 {
		delete(ix.profiles, old.Profile)
	}
	delete(ix.hosts, serial)
}

func (ix *index) byMACAddr(mac string) (host.Host, bool) {
	s, ok := ix.byMAC[strings.ToLower(mac)]
	if !ok {
		return host.Host{}, false
	}
	return ix.hosts[s], true
}

func (ix *index) byIPAddr(ip net.IP) (host.Host, bool) {
	s, ok := ix.byIP[ip.String()]
	if !ok {
		return host.Host{}, false
	}
	return ix.hosts[s], true
}

func (ix *index) list() []host.Host {
	out := make([]host.Host, 0, len(ix.hosts))
	for _, h := range ix.hosts {
		out = append(out, h.Clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Serial < out[j].Serial })
	return out
}

// applySteps runs the steps on a copy of h and returns the snapshot after
// each step that changed something, paired with its message. The serial
// cannot be changed by a step.
func applySteps(h host.Host, steps []Step) (snapshots []host.Host, messages []string, err error) {
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

// notifier coalesces change notifications: however many changes happen while
// a subscriber runs, it is called once more afterwards, never concurrently
// with itself.
type notifier struct {
	mu   sync.Mutex
	subs []*subscriber
}

type subscriber struct {
	fn      func()
	pending chan struct{}
}

func (n *notifier) subscribe(fn func()) {
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

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.subs {
		select {
		case s.pending <- struct{}{}:
		default: // already pending: the coming call sees this change too
		}
	}
}

func (n *notifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.subs {
		close(s.pending)
	}
	n.subs = nil
}
