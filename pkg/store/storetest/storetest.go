package storetest

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store"
)

// Run is the contract of store.Store, run against the stores newStore
// makes (a fresh, empty one per subtest; newStore registers its cleanup).
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"NotFound", testNotFound},
		{"CreateAndGet", testCreateAndGet},
		{"CreateExisting", testCreateExisting},
		{"CreateWithoutChange", testCreateWithoutChange},
		{"Lookups", testLookups},
		{"StepErrorWritesNothing", testStepError},
		{"StepCannotChangeSerial", testStepSerial},
		{"NoOpUpdate", testNoOpUpdate},
		{"ReturnsCopies", testCopies},
		{"InvalidSerial", testInvalidSerial},
		{"ListSorted", testListSorted},
		{"ProfileCount", testProfileCount},
		{"Cluster", testCluster},
		{"Subscribe", testSubscribe},
		{"ConcurrentCreateSameSerial", testConcurrentCreate},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"FullRecord", testFullRecord},
		{"AllocateInOrder", testAllocateInOrder},
		{"ReleaseFreesAllocation", testReleaseFrees},
		{"FailedCreateFreesAllocation", testFailedCreateFrees},
		{"CreateMustHoldAllocation", testCreateHoldsAllocation},
		{"ReserveExisting", testReserveExisting},
		{"FreedAddressIsReused", testFreedAddressReused},
		{"ConcurrentAllocations", testConcurrentAllocations},
		{"ConcurrentAllocationsFillRange", testConcurrentAllocationsFull},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

// Steps as the provisioning code writes them.

func set(msg string, fn func(h *host.Host)) store.Step {
	return store.Step{Message: msg, Apply: func(h *host.Host) error { fn(h); return nil }}
}

var errRefused = errors.New("storetest: refused")

func created() store.Step {
	return set("host created", func(h *host.Host) { h.Enabled = true; h.State = host.Configured })
}

func testNotFound(t *testing.T, s store.Store) {
	_, err := s.Get("nosuch")
	assert.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.ByMAC("00:11:22:33:44:55")
	assert.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.ByIP(net.ParseIP("10.0.0.1"))
	assert.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.Update("nosuch", created())
	assert.ErrorIs(t, err, store.ErrNotFound)
	assert.Empty(t, s.List())
	assert.Equal(t, 0, s.ProfileCount("core"))
}

func testCreateAndGet(t *testing.T, s store.Store) {
	h, err := s.Create("s1",
		created(),
		set("updated with predefined settings", func(h *host.Host) { h.MachineID = "0000aa"; h.Hostname = "0000aa" }),
		set("updated host InternalAddr", func(h *host.Host) { h.InternalAddr = net.ParseIP("10.0.0.5").To4() }),
		set("updated host profile and metadata", func(h *host.Host) { h.Profile = "core"; h.FleetMetadata = host.FleetMeta{"role-core=true"} }),
	)
	require.NoError(t, err)
	assert.Equal(t, "s1", h.Serial)
	assert.True(t, h.Enabled)
	assert.Equal(t, host.Configured, h.State)
	assert.Equal(t, "core", h.Profile)

	got, err := s.Get("s1")
	require.NoError(t, err)
	assertSameJSON(t, h, got)
	list := s.List()
	require.Len(t, list, 1)
	assertSameJSON(t, h, list[0])
	assert.Equal(t, 1, s.ProfileCount("core"))
}

func testCreateExisting(t *testing.T, s store.Store) {
	_, err := s.Create("s1", created())
	require.NoError(t, err)
	_, err = s.Create("s1", set("host created", func(h *host.Host) { h.Name = "other" }))
	assert.ErrorIs(t, err, store.ErrExists)
	got, err := s.Get("s1")
	require.NoError(t, err)
	assert.Empty(t, got.Name, "a refused create must not change the record")
}

func testCreateWithoutChange(t *testing.T, s store.Store) {
	h, err := s.Create("bare", set("host created", func(*host.Host) {}))
	require.NoError(t, err)
	assert.Equal(t, "bare", h.Serial)
	_, err = s.Get("bare")
	require.NoError(t, err, "a create whose steps change nothing still creates the record")
}

func testLookups(t *testing.T, s store.Store) {
	_, err := s.Create("s1", created(), set("collected host mac addresses", func(h *host.Host) {
		h.MacAddresses = []string{"00:11:22:33:44:55", "00:11:22:33:44:66"}
		h.InternalAddr = net.ParseIP("10.0.0.5")
	}))
	require.NoError(t, err)

	tests := []struct {
		name string
		get  func() (host.Host, error)
	}{
		{"mac", func() (host.Host, error) { return s.ByMAC("00:11:22:33:44:55") }},
		{"second mac", func() (host.Host, error) { return s.ByMAC("00:11:22:33:44:66") }},
		{"mac upper case", func() (host.Host, error) { return s.ByMAC("00:11:22:33:44:6A") }},
		{"ip", func() (host.Host, error) { return s.ByIP(net.ParseIP("10.0.0.5")) }},
		{"ip 4-byte form", func() (host.Host, error) { return s.ByIP(net.ParseIP("10.0.0.5").To4()) }},
	}
	_, err = s.Update("s1", set("collected host mac addresses", func(h *host.Host) {
		h.MacAddresses = append(h.MacAddresses, "00:11:22:33:44:6a")
	}))
	require.NoError(t, err)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := tc.get()
			require.NoError(t, err)
			assert.Equal(t, "s1", h.Serial)
		})
	}

	// Moving an address or a MAC away drops the old lookup.
	_, err = s.Update("s1", set("updated host InternalAddr", func(h *host.Host) {
		h.InternalAddr = net.ParseIP("10.0.0.6")
		h.MacAddresses = h.MacAddresses[1:]
	}))
	require.NoError(t, err)
	_, err = s.ByIP(net.ParseIP("10.0.0.5"))
	assert.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.ByMAC("00:11:22:33:44:55")
	assert.ErrorIs(t, err, store.ErrNotFound)
	h, err := s.ByIP(net.ParseIP("10.0.0.6"))
	require.NoError(t, err)
	assert.Equal(t, "s1", h.Serial)
}

func testStepError(t *testing.T, s store.Store) {
	before, err := s.Create("s1", created())
	require.NoError(t, err)
	tests := []struct {
		name  string
		steps []store.Step
	}{
		{"first step fails", []store.Step{{Message: "x", Apply: func(*host.Host) error { return errRefused }}}},
		{"later step fails", []store.Step{
			set("updated host cabinet", func(h *host.Host) { h.Cabinet = 7 }),
			{Message: "updated host state", Apply: func(h *host.Host) error { h.State = host.Running; return errRefused }},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Update("s1", tc.steps...)
			assert.ErrorIs(t, err, errRefused, "the step's own error is returned")
			assert.NotErrorIs(t, err, store.ErrStorage)
			got, err := s.Get("s1")
			require.NoError(t, err)
			assertSameJSON(t, before, got)
		})
	}
	_, err = s.Create("s2", created(), store.Step{Message: "x", Apply: func(*host.Host) error { return errRefused }})
	assert.ErrorIs(t, err, errRefused)
	_, err = s.Get("s2")
	assert.ErrorIs(t, err, store.ErrNotFound, "a failed create leaves no record")
}

func testStepSerial(t *testing.T, s store.Store) {
	_, err := s.Create("s1", created())
	require.NoError(t, err)
	_, err = s.Update("s1", set("x", func(h *host.Host) { h.Serial = "s2" }))
	require.Error(t, err)
	_, err = s.Get("s2")
	assert.ErrorIs(t, err, store.ErrNotFound)
	got, err := s.Get("s1")
	require.NoError(t, err)
	assert.Equal(t, "s1", got.Serial)
}

func testNoOpUpdate(t *testing.T, s store.Store) {
	h, err := s.Create("s1", created())
	require.NoError(t, err)
	got, err := s.Update("s1", set("updated host state", func(h *host.Host) { h.State = host.Configured }))
	require.NoError(t, err)
	assertSameJSON(t, h, got)
}

func testCopies(t *testing.T, s store.Store) {
	_, err := s.Create("s1", created(), set("x", func(h *host.Host) {
		h.MacAddresses = []string{"00:11:22:33:44:55"}
		h.Overrides = map[string]interface{}{"k": "v"}
		h.FleetMetadata = host.FleetMeta{"a=b"}
	}))
	require.NoError(t, err)
	h, err := s.Get("s1")
	require.NoError(t, err)
	h.MacAddresses[0] = "ff:ff:ff:ff:ff:ff"
	h.Overrides["k"] = "changed"
	h.FleetMetadata[0] = "changed"
	for _, l := range s.List() {
		l.MacAddresses[0] = "ff:ff:ff:ff:ff:fe"
	}
	// A step that mutates and then fails must not leak its mutation.
	_, err = s.Update("s1", store.Step{Message: "x", Apply: func(h *host.Host) error {
		h.Overrides["k"] = "leaked"
		h.MacAddresses[0] = "ff:ff:ff:ff:ff:fd"
		return errRefused
	}})
	require.ErrorIs(t, err, errRefused)
	got, err := s.Get("s1")
	require.NoError(t, err)
	assert.Equal(t, []string{"00:11:22:33:44:55"}, got.MacAddresses)
	assert.Equal(t, "v", got.Overrides["k"])
	assert.Equal(t, host.FleetMeta{"a=b"}, got.FleetMetadata)
}

func testInvalidSerial(t *testing.T, s store.Store) {
	for _, serial := range []string{"", "../etc", "a/b", ".git", "UPPER", " padded", "x\x00y", "-dash"} {
		t.Run(fmt.Sprintf("%q", serial), func(t *testing.T) {
			_, err := s.Create(serial, created())
			assert.ErrorIs(t, err, host.ErrInvalidSerial)
			_, err = s.Update(serial, created())
			assert.ErrorIs(t, err, host.ErrInvalidSerial)
			_, err = s.Get(serial)
			assert.ErrorIs(t, err, host.ErrInvalidSerial)
		})
	}
	assert.Empty(t, s.List())
}

func testListSorted(t *testing.T, s store.Store) {
	serials := []string{"m3", "a1", "z9", "b-2", "b.1", "b_3", "b:4"}
	for _, serial := range serials {
		_, err := s.Create(serial, created())
		require.NoError(t, err)
	}
	var got []string
	for _, h := range s.List() {
		got = append(got, h.Serial)
	}
	want := append([]string(nil), serials...)
	sort.Strings(want)
	assert.Equal(t, want, got)
}

func testProfileCount(t *testing.T, s store.Store) {
	for i := 0; i < 3; i++ {
		_, err := s.Create(fmt.Sprintf("s%d", i), created(), set("updated host profile and metadata", func(h *host.Host) { h.Profile = "core" }))
		require.NoError(t, err)
	}
	_, err := s.Create("s9", created(), set("updated host profile and metadata", func(h *host.Host) { h.Profile = "default" }))
	require.NoError(t, err)
	assert.Equal(t, 3, s.ProfileCount("core"))
	assert.Equal(t, 1, s.ProfileCount("default"))
	_, err = s.Update("s0", set("updated host profile and metadata", func(h *host.Host) { h.Profile = "default" }))
	require.NoError(t, err)
	assert.Equal(t, 2, s.ProfileCount("core"))
	assert.Equal(t, 2, s.ProfileCount("default"))
}

func testCluster(t *testing.T, s store.Store) {
	before := s.Cluster()
	_, err := s.UpdateCluster("x", func(c *store.Cluster) error {
		c.Config.DefaultEtcdClusterToken = "leaked"
		return errRefused
	})
	assert.ErrorIs(t, err, errRefused)
	assert.Equal(t, before, s.Cluster())

	c, err := s.UpdateCluster("Set default etcd cluster to 'abc'", func(c *store.Cluster) error {
		c.Config.DefaultEtcdClusterToken = "abc"
		c.Config.EtcdDiscoveryURL = ""
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, "abc", c.Config.DefaultEtcdClusterToken)
	assert.Equal(t, c, s.Cluster())

	same, err := s.UpdateCluster("no change", func(*store.Cluster) error { return nil })
	require.NoError(t, err)
	assert.Equal(t, c, same)
}

func testSubscribe(t *testing.T, s store.Store) {
	calls := make(chan struct{}, 100)
	s.Subscribe(func() { calls <- struct{}{} })
	wait := func(what string) {
		t.Helper()
		select {
		case <-calls:
		case <-time.After(10 * time.Second):
			t.Fatalf("subscriber not called after %s", what)
		}
	}
	_, err := s.Create("s1", created())
	require.NoError(t, err)
	wait("create")
	drain(calls)
	_, err = s.Update("s1", set("updated host state to installing", func(h *host.Host) { h.State = host.Installing }))
	require.NoError(t, err)
	wait("update")
}

func drain(c chan struct{}) {
	// Let a coalesced call that is already on its way arrive first.
	time.Sleep(50 * time.Millisecond)
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

func testConcurrentCreate(t *testing.T, s store.Store) {
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = s.Create("same", created(), set("updated host cabinet", func(h *host.Host) { h.Cabinet = uint(i + 1) }))
		}(i)
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else {
			assert.ErrorIs(t, err, store.ErrExists)
		}
	}
	assert.Equal(t, 1, ok, "exactly one concurrent create of a serial succeeds")
	assert.Len(t, s.List(), 1)
}

func testConcurrentUpdates(t *testing.T, s store.Store) {
	const serials, perSerial = 4, 10
	for i := 0; i < serials; i++ {
		_, err := s.Create(fmt.Sprintf("c%d", i), created())
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	for i := 0; i < serials; i++ {
		for j := 0; j < perSerial; j++ {
			wg.Add(1)
			go func(serial string) {
				defer wg.Done()
				_, err := s.Update(serial, set("updated host cabinet", func(h *host.Host) { h.Cabinet++ }))
				assert.NoError(t, err)
			}(fmt.Sprintf("c%d", i))
		}
	}
	wg.Wait()
	for i := 0; i < serials; i++ {
		h, err := s.Get(fmt.Sprintf("c%d", i))
		require.NoError(t, err)
		assert.Equal(t, uint(perSerial), h.Cabinet, "no update may be lost")
	}
}

func testFullRecord(t *testing.T, s store.Store) {
	boot := time.Date(2016, 3, 4, 5, 6, 7, 891011121, time.UTC)
	want := host.Host{
		Id: 3, ProviderId: "p-1", Enabled: true, Name: "n", Serial: "full",
		MacAddresses: []string{"00:11:22:33:44:55"}, InternalAddr: net.ParseIP("10.0.0.9").To4(),
		BondInterfaces: []string{"eth0", "eth1"}, Cabinet: 2, MachineOnCabinet: 3,
		IPMIAddr: net.ParseIP("10.1.0.9").To4(), Hostname: "h", MachineID: "m", ConnectedNIC: "eth0",
		FleetMetadata: host.FleetMeta{"role-core=true", "a=b"}, FleetDisableEngine: true, KeepDiskData: true,
		LastBoot: boot, Profile: "core", EtcdClusterToken: "tok",
		Overrides: map[string]interface{}{"CoreOSVersion": "1000.0.0", "nested": map[string]interface{}{"a": "b"}},
		State:     host.Running, CoreOSVersion: "1", MayuVersion: "2", DockerVersion: "3", FleetVersion: "4",
		EtcdVersion: "5", RktVersion: "6", K8sVersion: "7", YochuVersion: "8",
	}
	_, err := s.Create("full", set("host created", func(h *host.Host) { *h = want.Clone() }))
	require.NoError(t, err)
	got, err := s.Get("full")
	require.NoError(t, err)
	assertSameJSON(t, want, got)
	assert.True(t, got.LastBoot.Equal(boot))
}

func assertSameJSON(t *testing.T, want, got host.Host) {
	t.Helper()
	wb, err := want.Marshal()
	require.NoError(t, err)
	gb, err := got.Marshal()
	require.NoError(t, err)
	assert.Equal(t, string(wb), string(gb))
}
