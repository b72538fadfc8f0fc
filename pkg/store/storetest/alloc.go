package storetest

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store"
)

// allocReq hands out 10.0.0.1-10.0.0.<last> but 10.0.0.2, two "core"
// slots and one "storage" slot, then "worker".
func allocReq(last int) store.AllocRequest {
	return store.AllocRequest{
		Profiles:    []store.ProfileQuota{{Name: "core", Quantity: 2}, {Name: "storage", Quantity: 1}},
		Default:     "worker",
		First:       net.ParseIP("10.0.0.1"),
		Last:        net.IPv4(10, 0, 0, byte(last)),
		Allocatable: func(ip net.IP) bool { return !ip.Equal(net.ParseIP("10.0.0.2")) },
		RangeName:   "test range",
	}
}

// allocSteps are the steps that create a record from its allocation, as
// the provisioning code writes them.
func allocSteps(a store.Allocation) []store.Step {
	return []store.Step{
		created(),
		set("updated host InternalAddr", func(h *host.Host) { h.InternalAddr = a.Addr }),
		set("updated host profile and metadata", func(h *host.Host) { h.Profile = a.Profile }),
	}
}

// register reserves and creates the record of serial.
func register(s store.Store, serial string, req store.AllocRequest) (host.Host, error) {
	r, err := s.Reserve(serial, req)
	if err != nil {
		return host.Host{}, err
	}
	return r.Create(allocSteps(r.Allocation())...)
}

func reserve(t *testing.T, s store.Store, serial string, req store.AllocRequest) store.Reservation {
	t.Helper()
	r, err := s.Reserve(serial, req)
	require.NoError(t, err)
	return r
}

func testAllocateInOrder(t *testing.T, s store.Store) {
	want := []struct{ addr, profile string }{
		{"10.0.0.1", "core"}, {"10.0.0.3", "core"}, {"10.0.0.4", "storage"}, {"10.0.0.5", "worker"}, {"10.0.0.6", "worker"},
	}
	for i, w := range want {
		serial := fmt.Sprintf("a%d", i)
		h, err := register(s, serial, allocReq(6))
		require.NoError(t, err)
		assert.Equal(t, w.addr, h.InternalAddr.String(), serial)
		assert.Equal(t, w.profile, h.Profile, serial)
		stored, err := s.ByIP(net.ParseIP(w.addr))
		require.NoError(t, err)
		assert.Equal(t, serial, stored.Serial)
	}
	_, err := s.Reserve("a5", allocReq(6))
	require.ErrorIs(t, err, store.ErrRangeFull, "a full range is an error, never a hang")
	assert.Contains(t, err.Error(), "test range (10.0.0.1-10.0.0.6)")
	assert.Len(t, s.List(), 5)
}

func testReleaseFrees(t *testing.T, s store.Store) {
	r := reserve(t, s, "x", allocReq(9))
	assert.Equal(t, store.Allocation{Profile: "core", Addr: net.ParseIP("10.0.0.1").To4()}, r.Allocation())
	// A reservation in flight holds its address and its profile slot.
	held := reserve(t, s, "y", allocReq(9))
	assert.Equal(t, "10.0.0.3", held.Allocation().Addr.String())
	assert.Equal(t, "core", held.Allocation().Profile)
	held2 := reserve(t, s, "z", allocReq(9))
	assert.Equal(t, "storage", held2.Allocation().Profile, "both core slots are held")
	r.Release()
	r.Release() // harmless
	again := reserve(t, s, "w", allocReq(9))
	assert.Equal(t, store.Allocation{Profile: "core", Addr: net.ParseIP("10.0.0.1").To4()}, again.Allocation(),
		"a released reservation gives its address and slot back")
	for _, x := range []store.Reservation{held, held2, again} {
		x.Release()
	}
	assert.Empty(t, s.List(), "reserving writes nothing")
}

func testFailedCreateFrees(t *testing.T, s store.Store) {
	r := reserve(t, s, "f", allocReq(9))
	_, err := r.Create(append(allocSteps(r.Allocation()), store.Step{Message: "refused", Apply: func(*host.Host) error { return errRefused }})...)
	require.ErrorIs(t, err, errRefused)
	_, err = s.Get("f")
	require.ErrorIs(t, err, store.ErrNotFound, "a failed create writes nothing")
	r.Release() // after Create: nothing
	h, err := register(s, "g", allocReq(9))
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.1", h.InternalAddr.String(), "the failed create gave its address back")
	assert.Equal(t, "core", h.Profile)
}

func testCreateHoldsAllocation(t *testing.T, s store.Store) {
	r := reserve(t, s, "h", allocReq(9))
	a := r.Allocation()
	_, err := r.Create(created(),
		set("updated host InternalAddr", func(h *host.Host) { h.InternalAddr = net.ParseIP("10.0.0.7").To4() }),
		set("updated host profile and metadata", func(h *host.Host) { h.Profile = a.Profile }))
	require.Error(t, err, "a record must hold the address it reserved")
	_, err = s.Get("h")
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.ByIP(net.ParseIP("10.0.0.7"))
	require.ErrorIs(t, err, store.ErrNotFound)
}

func testReserveExisting(t *testing.T, s store.Store) {
	_, err := register(s, "e", allocReq(9))
	require.NoError(t, err)
	_, err = s.Reserve("e", allocReq(9))
	assert.ErrorIs(t, err, store.ErrExists)
	_, err = s.Reserve("Bad/Serial", allocReq(9))
	assert.ErrorIs(t, err, host.ErrInvalidSerial)

	// Two reservations of one serial: the second Create finds the first's
	// record, and its address is free again.
	r1 := reserve(t, s, "twice", allocReq(9))
	r2 := reserve(t, s, "twice", allocReq(9))
	_, err = r1.Create(allocSteps(r1.Allocation())...)
	require.NoError(t, err)
	_, err = r2.Create(allocSteps(r2.Allocation())...)
	assert.ErrorIs(t, err, store.ErrExists)
	h, err := register(s, "next", allocReq(9))
	require.NoError(t, err)
	assert.Equal(t, r2.Allocation().Addr.String(), h.InternalAddr.String())
}

func testFreedAddressReused(t *testing.T, s store.Store) {
	for _, serial := range []string{"r0", "r1", "r2"} {
		_, err := register(s, serial, allocReq(9))
		require.NoError(t, err)
	}
	// An operator moves r0 elsewhere: 10.0.0.1 is the lowest free address.
	_, err := s.Update("r0", set("updated host InternalAddr", func(h *host.Host) { h.InternalAddr = net.ParseIP("10.0.0.9").To4() }))
	require.NoError(t, err)
	h, err := register(s, "r3", allocReq(9))
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.1", h.InternalAddr.String())
	h, err = register(s, "r4", allocReq(9))
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.5", h.InternalAddr.String())
}

// testConcurrentAllocations: concurrent registrations, some of which give
// their reservation back first, never share an address, fill the profile
// slots exactly, and take the lowest addresses.
func testConcurrentAllocations(t *testing.T, s store.Store) {
	const n = 64
	req := allocReq(100)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			serial := fmt.Sprintf("node-%02d", i)
			if i%4 == 0 {
				r, err := s.Reserve(serial, req)
				if err != nil {
					errs <- err
					return
				}
				r.Release()
			}
			if _, err := register(s, serial, req); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	hosts := s.List()
	require.Len(t, hosts, n)
	addrs := map[string]string{}
	profiles := map[string]int{}
	for _, h := range hosts {
		if other, dup := addrs[h.InternalAddr.String()]; dup {
			t.Fatalf("%s and %s share %s", h.Serial, other, h.InternalAddr)
		}
		addrs[h.InternalAddr.String()] = h.Serial
		profiles[h.Profile]++
	}
	assert.Equal(t, map[string]int{"core": 2, "storage": 1, "worker": n - 3}, profiles)
	for i := 1; i <= n+1; i++ {
		if i == 2 {
			continue
		}
		_, ok := addrs[fmt.Sprintf("10.0.0.%d", i)]
		assert.True(t, ok, "10.0.0.%d is one of the lowest free addresses", i)
	}
	assert.Equal(t, 2, s.ProfileCount("core"))
}

// testConcurrentAllocationsFillRange: more registrations than addresses:
// as many succeed as there are addresses, the others get ErrRangeFull.
func testConcurrentAllocationsFull(t *testing.T, s store.Store) {
	const n, last = 48, 33 // 32 allocatable addresses
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, full := 0, 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := register(s, fmt.Sprintf("f-%02d", i), allocReq(last))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, store.ErrRangeFull):
				full++
			default:
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	assert.Equal(t, last-1, ok)
	assert.Equal(t, n-(last-1), full)
	assert.Len(t, s.List(), last-1)
}
