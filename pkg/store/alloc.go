package store

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"mayu/pkg/host"
)

// Allocation: how a new record gets its profile and its address.
//
// Store.Reserve picks both for a serial, atomically against the stored
// records and the other reservations in flight, and holds them until the
// reservation is used (Reservation.Create, which writes the record and
// ends the reservation in one atomic step) or given back
// (Reservation.Release). The choice is made inside the store because only
// the store sees every record at once: two processes sharing one fleet
// cannot coordinate through memory of their own.
//
// Reserving and creating are two calls, not one, so that what the caller
// does between them (render the machine's install script from the record
// it will get, and give up when that fails) stays out of the store's
// critical section: a boot storm's registrations still share the store's
// group commit, and a failed render writes nothing.
//
// How a backend keeps reservations is its own business:
//   - In one process (Memory, gitdir), Leases holds them in memory,
//     guarded by the lock of the store's Table, so that a record landing
//     in the table and its reservation ending are one step to any
//     allocation. A reservation never outlives the process.
//   - A store shared by several processes (an etcd v3 backend) would
//     reserve with a transaction that creates, under a lease with a TTL,
//     one key per address ("alloc/addr/<ip>") and one per profile slot
//     ("alloc/profile/<name>/<i>", i < Quantity), each guarded by
//     CreateRevision == 0, after reading the records and the allocation
//     keys at one revision; on a lost race it reads again and picks the
//     next candidate. Create is one more transaction: if the serial's key
//     is absent and the lease still holds the reservation keys, put the
//     record and re-put the address and slot keys without the lease.
//     Release revokes the lease, and so does a crashed process's TTL.

// Errors of Reserve and Reservation.Create.
var (
	// ErrRangeFull: no address of the request's range is free (the API
	// answers 503).
	ErrRangeFull = errors.New("store: no free address left")
	// ErrReservationLost: the reserved address was recorded on another
	// host before Create (an operator's hand edit picked up meanwhile).
	// Nothing was written; reserve again.
	ErrReservationLost = errors.New("store: the reserved address was taken meanwhile")
)

// AllocRequest says what a new record needs: a profile slot and an
// address.
type AllocRequest struct {
	// Profiles are the candidate profiles in order of preference: the
	// first whose Quantity is not reached, counting the stored records
	// and the reservations in flight, is taken.
	Profiles []ProfileQuota
	// Default is the profile taken when every candidate is at its
	// quantity; it has no quantity.
	Default string
	// First and Last bound the addresses, IPv4, both included.
	First, Last net.IP
	// Allocatable tells which addresses of the range may be handed out;
	// nil means all of them. It must be pure: the store calls it while it
	// holds its lock.
	Allocatable func(net.IP) bool
	// RangeName names the range in errors ("network.ip_range").
	RangeName string
}

// ProfileQuota is a candidate profile and how many records may have it.
type ProfileQuota struct {
	Name     string
	Quantity int
}

// Allocation is what a reservation holds.
type Allocation struct {
	Profile string
	// Addr is the lowest free allocatable address of the range, 4 bytes.
	Addr net.IP
}

// Reservation is an allocation held for one serial.
type Reservation interface {
	// Allocation returns what is held.
	Allocation() Allocation
	// Create makes the record of the reserved serial as Store.Create
	// does, and ends the reservation whatever the outcome. The record as
	// the steps leave it must hold the reserved address (InternalAddr)
	// and profile, or nothing is written. ErrExists if the serial got a
	// record meanwhile, ErrReservationLost if its address did.
	Create(steps ...Step) (host.Host, error)
	// Release gives the allocation back without creating anything. It
	// does nothing after Create or a first Release.
	Release()
}

// Leases is the reservation bookkeeping of a store whose records live in
// a Table of this process (Memory, gitdir): the addresses and profile
// slots of the reservations in flight, and where each range's search for
// a free address starts. It takes the lock given to NewLeases, the write
// lock of the store's Table, in Reserve and Lease.Release; the methods
// named ...Locked must be called with it held (CheckLocked: at least for
// reading), so that a record landing in the table and its lease ending
// (EndLocked) are one step to Reserve.
type Leases struct {
	lock   sync.Locker
	create func(l *Lease, steps []Step) (host.Host, error)

	addrs    map[netip.Addr]string // held address -> serial
	profiles map[string]int        // profile -> slots held
	// next maps a range to the address its search starts at: every
	// allocatable address below it was taken when it was set, and one
	// freed since lowers it (Table.freed, EndLocked).
	next  map[[2]netip.Addr]netip.Addr
	table *Table // the table next was computed against
}

// NewLeases returns the bookkeeping of a store: lock is the write lock of
// the store's Table, create writes a leased record (see Lease.Create)
// and, in the critical section where the record lands in the table,
// calls EndLocked(true) on the lease.
func NewLeases(lock sync.Locker, create func(l *Lease, steps []Step) (host.Host, error)) *Leases {
	return &Leases{lock: lock, create: create, addrs: map[netip.Addr]string{}, profiles: map[string]int{},
		next: map[[2]netip.Addr]netip.Addr{}}
}

// Lease is a Reservation of a Leases.
type Lease struct {
	owner  *Leases
	serial string
	alloc  Allocation
	addr   netip.Addr
	span   [2]netip.Addr
	ended  bool // guarded by owner.lock
}

// Reserve implements Store.Reserve for a store whose records are in the
// table table returns (it is called with the lock held, so a store may
// replace its table under that lock).
func (ls *Leases) Reserve(table func() *Table, serial string, req AllocRequest) (Reservation, error) {
	if err := CheckSerial(serial); err != nil {
		return nil, err
	}
	ls.lock.Lock()
	defer ls.lock.Unlock()
	l, err := ls.reserve(table(), serial, req)
	if err != nil {
		return nil, err
	}
	return l, nil
}

func (ls *Leases) reserve(t *Table, serial string, req AllocRequest) (*Lease, error) {
	if _, ok := t.Get(serial); ok {
		return nil, fmt.Errorf("%w: %s", ErrExists, serial)
	}
	span, err := req.span()
	if err != nil {
		return nil, err
	}
	if ls.table != t {
		// A reload replaced the table: nothing known about it.
		ls.table, ls.next = t, map[[2]netip.Addr]netip.Addr{}
	}
	if f, ok := t.takeFreed(); ok {
		ls.lower(f)
	}
	free := func(a netip.Addr) bool {
		if _, held := ls.addrs[a]; held {
			return false
		}
		if _, taken := t.byIP[a.String()]; taken {
			return false
		}
		return req.Allocatable == nil || req.Allocatable(net.IP(a.AsSlice()))
	}
	start, ok := ls.next[span]
	if !ok {
		start = span[0]
	}
	addr, found := scan(start, span[1], free)
	if !found && start != span[0] {
		addr, found = scan(span[0], start.Prev(), free)
	}
	if !found {
		return nil, fmt.Errorf("%w in %s (%s-%s)", ErrRangeFull, req.RangeName, span[0], span[1])
	}
	if n := addr.Next(); n.IsValid() && n.Compare(span[1]) <= 0 {
		ls.next[span] = n
	} else {
		ls.next[span] = span[0]
	}

	profile := req.Default
	for _, q := range req.Profiles {
		if t.ProfileCount(q.Name)+ls.profiles[q.Name] < q.Quantity {
			profile = q.Name
			break
		}
	}
	ls.addrs[addr] = serial
	ls.profiles[profile]++
	return &Lease{owner: ls, serial: serial, addr: addr, span: span,
		alloc: Allocation{Profile: profile, Addr: net.IP(addr.AsSlice())}}, nil
}

// Span returns the request's range, checked: its first and last address,
// or an error if they are not an IPv4 range.
func (req AllocRequest) Span() (first, last netip.Addr, err error) {
	s, err := req.span()
	return s[0], s[1], err
}

// span returns the request's range, checked.
func (req AllocRequest) span() ([2]netip.Addr, error) {
	lo, ok1 := netip.AddrFromSlice(req.First.To4())
	hi, ok2 := netip.AddrFromSlice(req.Last.To4())
	if !ok1 || !ok2 || hi.Less(lo) {
		return [2]netip.Addr{}, fmt.Errorf("store: %s %s-%s is not an IPv4 range", req.RangeName, req.First, req.Last)
	}
	return [2]netip.Addr{lo, hi}, nil
}

// scan returns the first address from a to last (included) that free
// accepts.
func scan(a, last netip.Addr, free func(netip.Addr) bool) (netip.Addr, bool) {
	for ; a.IsValid() && a.Compare(last) <= 0; a = a.Next() {
		if free(a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// lower makes every range holding a start its search there at the latest.
func (ls *Leases) lower(a netip.Addr) {
	for span, next := range ls.next {
		if a.Compare(span[0]) >= 0 && a.Compare(span[1]) <= 0 && a.Less(next) {
			ls.next[span] = a
		}
	}
}

// Serial returns the serial the lease is for.
func (l *Lease) Serial() string { return l.serial }

// Allocation implements Reservation.
func (l *Lease) Allocation() Allocation {
	a := l.alloc
	a.Addr = append(net.IP(nil), a.Addr...)
	return a
}

// Create implements Reservation.
func (l *Lease) Create(steps ...Step) (host.Host, error) {
	defer l.Release()
	all := append(append([]Step(nil), steps...), Step{Apply: func(h *host.Host) error {
		if !h.InternalAddr.Equal(l.alloc.Addr) || h.Profile != l.alloc.Profile {
			return fmt.Errorf("store: the record of %s would hold address %s and profile %q, not the reserved %s and %q",
				l.serial, h.InternalAddr, h.Profile, l.alloc.Addr, l.alloc.Profile)
		}
		return nil
	}})
	return l.owner.create(l, all)
}

// Release implements Reservation.
func (l *Lease) Release() {
	l.owner.lock.Lock()
	defer l.owner.lock.Unlock()
	l.EndLocked(false)
}

// CheckLocked returns ErrReservationLost when t records the lease's
// address on another host.
func (l *Lease) CheckLocked(t *Table) error {
	if other, ok := t.byIP[l.addr.String()]; ok && other != l.serial {
		return fmt.Errorf("%w: %s is recorded on %s", ErrReservationLost, l.addr, other)
	}
	return nil
}

// EndLocked ends the lease: landed says its record is now in the table
// (which holds its address from now on), else the address is free again.
// Ending twice does nothing.
func (l *Lease) EndLocked(landed bool) {
	if l.ended {
		return
	}
	l.ended = true
	ls := l.owner
	if ls.addrs[l.addr] == l.serial {
		delete(ls.addrs, l.addr)
	}
	if ls.profiles[l.alloc.Profile]--; ls.profiles[l.alloc.Profile] <= 0 {
		delete(ls.profiles, l.alloc.Profile)
	}
	if !landed {
		ls.lower(l.addr)
	}
}
