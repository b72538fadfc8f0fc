package etcdv3

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"mayu/pkg/host"
	"mayu/pkg/store"
)

// Reserve implements store.Store (see the package doc): the address and
// profile keys are read at one revision, and one transaction creates the
// chosen address key and profile slot key under this instance's lease if
// no one took them meanwhile; else it reads again (store.ErrConflict after
// maxReserve reads). Reservations of this instance run concurrently: an
// address one of them is reserving or holds is not picked by another
// (held), so they race in etcd only with other instances, and for the
// slots of a profile with a quantity, which the transaction guards.
func (s *Store) Reserve(serial string, req store.AllocRequest) (store.Reservation, error) {
	if err := store.CheckSerial(serial); err != nil {
		return nil, err
	}
	first, last, err := req.Span()
	if err != nil {
		return nil, err
	}
	if _, err := s.Get(serial); err == nil {
		return nil, fmt.Errorf("%w: %s", store.ErrExists, serial)
	}
	s.releaseUnfreed()
	sess, err := s.session()
	if err != nil {
		return nil, err
	}
	lease := sess.Lease()
	hk := s.keys.host(serial)
	for attempt := 1; attempt <= maxReserve; attempt++ {
		reads := []clientv3.Op{clientv3.OpGet(s.keys.addrs(), clientv3.WithPrefix(), clientv3.WithKeysOnly())}
		for _, q := range req.Profiles {
			reads = append(reads, clientv3.OpGet(s.keys.profile(q.Name), clientv3.WithPrefix(), clientv3.WithCountOnly()))
		}
		resp, err := s.txn("read the allocations", nil, reads, nil)
		if err != nil {
			return nil, err
		}
		at := resp.Header.Revision
		taken := map[netip.Addr]bool{}
		for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
			if a, err := netip.ParseAddr(strings.TrimPrefix(string(kv.Key), s.keys.addrs())); err == nil {
				taken[a] = true
			}
		}
		profile, slotPrefix := req.Default, ""
		for i, q := range req.Profiles {
			if resp.Responses[1+i].GetResponseRange().Count < int64(q.Quantity) {
				profile, slotPrefix = q.Name, s.keys.profile(q.Name)
				break
			}
		}
		addr, seq, ok := s.hold(first, last, taken, req.Allocatable)
		if !ok {
			return nil, fmt.Errorf("%w in %s (%s-%s)", store.ErrRangeFull, req.RangeName, first, last)
		}
		r := &reservation{s: s, serial: serial, lease: lease, addr: addr, addrKey: s.keys.addr(addr),
			alloc: store.Allocation{Profile: profile, Addr: net.IP(addr.AsSlice())}}
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(r.addrKey), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(hk), "=", 0),
		}
		ops := []clientv3.Op{clientv3.OpPut(r.addrKey, serial, clientv3.WithLease(lease))}
		if slotPrefix != "" {
			// A slot taken since the read makes a key of the profile newer
			// than the read: the count may have reached the quantity.
			r.slotKey = fmt.Sprintf("%sr:%x-%d", slotPrefix, int64(lease), seq)
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(slotPrefix), "<", at+1).WithPrefix())
			ops = append(ops, clientv3.OpPut(r.slotKey, serial, clientv3.WithLease(lease)))
		}
		won, err := s.txn("reserve "+addr.String()+" for "+serial, cmps, ops, []clientv3.Op{clientv3.OpGet(hk)})
		if err != nil {
			// The outcome is unknown: keep the address from this
			// instance's picks until the keys are surely gone.
			r.Release()
			return nil, err
		}
		if won.Succeeded {
			r.rev = won.Header.Revision
			return r, nil
		}
		s.unhold(addr)
		if _, _, err := s.refresh(serial, won.Responses[0], won.Header.Revision); !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("%w: %s", store.ErrExists, serial)
		}
		// Another instance took the address or a slot: read again.
	}
	return nil, fmt.Errorf("%w: allocation for %s lost to other instances %d times in a row", store.ErrConflict, serial, maxReserve)
}

// hold picks the lowest address of [first, last] that no key holds, no
// record of the table has, no reservation of this instance holds and
// allocatable accepts, and holds it for the caller (unhold gives it
// back); it returns a sequence number for the reservation's keys.
func (s *Store) hold(first, last netip.Addr, taken map[netip.Addr]bool, allocatable func(net.IP) bool) (netip.Addr, uint64, bool) {
	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	s.mu.RLock()
	defer s.mu.RUnlock()
	for a := first; a.IsValid() && a.Compare(last) <= 0; a = a.Next() {
		if taken[a] || s.held[a] {
			continue
		}
		if _, ok := s.table.ByIP(net.IP(a.AsSlice())); ok {
			continue
		}
		if allocatable == nil || allocatable(net.IP(a.AsSlice())) {
			s.held[a] = true
			s.resSeq++
			return a, s.resSeq, true
		}
	}
	return netip.Addr{}, 0, false
}

// unhold gives back an address hold took.
func (s *Store) unhold(a netip.Addr) {
	s.allocMu.Lock()
	delete(s.held, a)
	s.allocMu.Unlock()
}

// session returns this instance's session, whose lease holds its
// reservations, making a new one when there is none or it expired.
func (s *Store) session() (*concurrency.Session, error) {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if s.sess != nil {
		select {
		case <-s.sess.Done():
			s.log.Warn("lease of this instance's reservations expired; granting a new one", "lease", fmt.Sprintf("%x", int64(s.sess.Lease())))
			s.sess = nil
		default:
			return s.sess, nil
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	g, err := s.cli.Grant(ctx, s.ttl)
	if err != nil {
		return nil, s.failure("grant a lease for reservations", err)
	}
	sess, err := concurrency.NewSession(s.cli, concurrency.WithLease(g.ID), concurrency.WithTTL(int(s.ttl)), concurrency.WithContext(s.ctx))
	if err != nil {
		return nil, s.failure("keep the reservations' lease alive", err)
	}
	s.sess = sess
	return sess, nil
}

// releaseUnfreed tries again the releases that could not reach etcd, so
// that a live instance's lease does not hold them for ever.
func (s *Store) releaseUnfreed() {
	s.sessMu.Lock()
	pending := s.unfreed
	s.unfreed = nil
	s.sessMu.Unlock()
	for i, r := range pending {
		if !r.free() {
			// etcd is still out of reach: keep the rest for later too.
			s.sessMu.Lock()
			s.unfreed = append(s.unfreed, pending[i+1:]...)
			s.sessMu.Unlock()
			return
		}
	}
}

// reservation is a store.Reservation held in etcd: an address key and,
// for a profile with a quantity, a slot key, both created at rev under
// lease.
type reservation struct {
	s       *Store
	serial  string
	alloc   store.Allocation
	lease   clientv3.LeaseID
	addr    netip.Addr // held in Store.held until the reservation ends
	addrKey string
	slotKey string // "" for the default profile
	rev     int64

	mu   sync.Mutex
	done bool // used or released
}

// Allocation implements store.Reservation.
func (r *reservation) Allocation() store.Allocation {
	a := r.alloc
	a.Addr = append(net.IP(nil), a.Addr...)
	return a
}

// Create implements store.Reservation.
func (r *reservation) Create(steps ...store.Step) (host.Host, error) {
	defer r.Release()
	all := append(append([]store.Step(nil), steps...), store.Step{Apply: func(h *host.Host) error {
		if !h.InternalAddr.Equal(r.alloc.Addr) || h.Profile != r.alloc.Profile {
			return fmt.Errorf("store: the record of %s would hold address %s and profile %q, not the reserved %s and %q",
				r.serial, h.InternalAddr, h.Profile, r.alloc.Addr, r.alloc.Profile)
		}
		return nil
	}})
	return r.s.create(r.serial, all, r)
}

// held are the comparisons that hold while the reservation's keys are the
// ones it created, still under its lease.
func (r *reservation) held() []clientv3.Cmp {
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(r.addrKey), "=", r.rev),
		clientv3.Compare(clientv3.LeaseValue(r.addrKey), "=", r.lease),
	}
	if r.slotKey != "" {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(r.slotKey), "=", r.rev))
	}
	return cmps
}

// markUsed notes that Create wrote the record: Release has nothing left
// to give back.
func (r *reservation) markUsed() {
	r.mu.Lock()
	r.done = true
	r.mu.Unlock()
	r.s.unhold(r.addr)
}

// Release implements store.Reservation: the keys are deleted if they are
// still the reservation's. When etcd cannot be reached, the next Reserve
// of this instance tries again (and the lease's TTL frees them if the
// instance dies).
func (r *reservation) Release() {
	r.mu.Lock()
	if r.done {
		r.mu.Unlock()
		return
	}
	r.done = true
	r.mu.Unlock()
	r.free()
}

// free deletes the keys if they are still the reservation's; false when
// etcd could not be reached (the reservation is kept for a later try).
func (r *reservation) free() bool {
	// The keys are the reservation's while they carry its lease (Create
	// re-puts them without): this holds also when the reserving
	// transaction's outcome was unknown (rev 0).
	ops := []clientv3.Op{clientv3.OpTxn([]clientv3.Cmp{
		clientv3.Compare(clientv3.Value(r.addrKey), "=", r.serial),
		clientv3.Compare(clientv3.LeaseValue(r.addrKey), "=", r.lease),
	}, []clientv3.Op{clientv3.OpDelete(r.addrKey)}, nil)}
	if r.slotKey != "" {
		ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{
			clientv3.Compare(clientv3.LeaseValue(r.slotKey), "=", r.lease),
		}, []clientv3.Op{clientv3.OpDelete(r.slotKey)}, nil))
	}
	if _, err := r.s.txn("release the reservation of "+r.serial, nil, ops, nil); err != nil {
		r.s.log.Warn("reservation not released yet; trying again at the next registration", "serial", r.serial, "addr", r.alloc.Addr.String(), "err", err)
		r.s.sessMu.Lock()
		r.s.unfreed = append(r.s.unfreed, r)
		r.s.sessMu.Unlock()
		return false
	}
	r.s.unhold(r.addr)
	return true
}
