package storetest

import (
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store"
)

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
		h, err := Register(s, serial, AllocRequest(6))
		require.NoError(t, err)
		assert.Equal(t, w.addr, h.InternalAddr.String(), serial)
		assert.Equal(t, w.profile, h.Profile, serial)
		stored, err := s.ByIP(net.ParseIP(w.addr))
		require.NoError(t, err)
		assert.Equal(t, serial, stored.Serial)
	}
	_, err := s.Reserve("a5", AllocRequest(6))
	require.ErrorIs(t, err, store.ErrRangeFull, "a full range is an error, never a hang")
	assert.Contains(t, err.Error(), "test range (10.0.0.1-10.0.0.6)")
	assert.Len(t, s.List(), 5)
}

func testReleaseFrees(t *testing.T, s store.Store) {
	r := reserve(t, s, "x", AllocRequest(9))
	assert.Equal(t, store.Allocation{Profile: "core", Addr: net.ParseIP("10.0.0.1").To4()}, r.Allocation())
	// A reservation in flight holds its address and its profile slot.
	held := reserve(t, s, "y", AllocRequest(9))
	assert.Equal(t, "10.0.0.3", held.Allocation().Addr.String())
	assert.Equal(t, "core", held.Allocation().Profile)
	held2 := reserve(t, s, "z", AllocRequest(9))
	assert.Equal(t, "storage", held2.Allocation().Profile, "both core slots are held")
	r.Release()
	r.Release() // harmless
	again := reserve(t, s, "w", AllocRequest(9))
	assert.Equal(t, store.Allocation{Profile: "core", Addr: net.ParseIP("10.0.0.1").To4()}, again.Allocation(),
		"a released reservation gives its address and slot back")
	for _, x := range []store.Reservation{held, held2, again} {
		x.Release()
	}
	assert.Empty(t, s.List(), "reserving writes nothing")
}

func testFailedCreateFrees(t *testing.T, s store.Store) {
	r := reserve(t, s, "f", AllocRequest(9))
	_, err := r.Create(append(allocSteps(r.Allocation()), store.Step{Message: "refused", Apply: func(*host.Host) error { return errRefused }})...)
	require.ErrorIs(t, err, errRefused)
	_, err = s.Get("f")
	require.ErrorIs(t, err, store.ErrNotFound, "a failed create writes nothing")
	r.Release() // after Create: nothing
	h, err := Register(s, "g", AllocRequest(9))
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.1", h.InternalAddr.String(), "the failed create gave its address back")
	assert.Equal(t, "core", h.Profile)
}

func testCreateHoldsAllocation(t *testing.T, s store.Store) {
	r := reserve(t, s, "h", AllocRequest(9))
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
	_, err := Register(s, "e", AllocRequest(9))
	require.NoError(t, err)
	_, err = s.Reserve("e", AllocRequest(9))
	assert.ErrorIs(t, err, store.ErrExists)
	_, err = s.Reserve("Bad/Serial", AllocRequest(9))
	assert.ErrorIs(t, err, host.ErrInvalidSerial)

	// Two reservations of one serial: the second Create finds the first's
	// record, and its address is free again.
	r1 := reserve(t, s, "twice", AllocRequest(9))
	r2 := reserve(t, s, "twice", AllocRequest(9))
	_, err = r1.Create(allocSteps(r1.Allocation())...)
	require.NoError(t, err)
	_, err = r2.Create(allocSteps(r2.Allocation())...)
	assert.ErrorIs(t, err, store.ErrExists)
	h, err := Register(s, "next", AllocRequest(9))
	require.NoError(t, err)
	assert.Equal(t, r2.Allocation().Addr.String(), h.InternalAddr.String())
}

func testFreedAddressReused(t *testing.T, s store.Store) {
	for _, serial := range []string{"r0", "r1", "r2"} {
		_, err := Register(s, serial, AllocRequest(9))
		require.NoError(t, err)
	}
	// An operator moves r0 elsewhere: 10.0.0.1 is the lowest free address.
	_, err := s.Update("r0", set("updated host InternalAddr", func(h *host.Host) { h.InternalAddr = net.ParseIP("10.0.0.9").To4() }))
	require.NoError(t, err)
	h, err := Register(s, "r3", AllocRequest(9))
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.1", h.InternalAddr.String())
	h, err = Register(s, "r4", AllocRequest(9))
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.5", h.InternalAddr.String())
}

// testConcurrentAllocations: concurrent registrations, some of which give
// their reservation back first, never share an address, fill the profile
// slots exactly, and take the lowest addresses.
func testConcurrentAllocations(t *testing.T, s store.Store) {
	const n = 64
	req := AllocRequest(100)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, serial := range Serials("node", n) {
		wg.Add(1)
		go func(i int, serial string) {
			defer wg.Done()
			if i%4 == 0 {
				r, err := s.Reserve(serial, req)
				if err != nil {
					errs <- err
					return
				}
				r.Release()
			}
			if _, err := Register(s, serial, req); err != nil {
				errs <- err
			}
		}(i, serial)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	hosts := s.List()
	require.Len(t, hosts, n)
	addrs := CheckFleet(t, hosts, map[string]int{"core": 2, "storage": 1, "worker": n - 3})
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
	got := RegisterAtOnce(t, []store.Store{s}, Serials("f", n), AllocRequest(last))
	assert.Equal(t, Outcome{OK: last - 1, RangeFull: n - (last - 1)}, got)
	assert.Len(t, s.List(), last-1)
}
