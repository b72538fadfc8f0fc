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

// AllocRequest hands out 10.0.0.1-10.0.0.<last> but 10.0.0.2 (last-1
// addresses), two "core" slots and one "storage" slot, then "worker".
func AllocRequest(last int) store.AllocRequest {
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

// Register reserves and creates the record of serial as the provisioning
// code does (three audit messages). Errors: those of Reserve
// (store.ErrRangeFull among them) and Create.
func Register(s store.Store, serial string, req store.AllocRequest) (host.Host, error) {
	r, err := s.Reserve(serial, req)
	if err != nil {
		return host.Host{}, err
	}
	return r.Create(allocSteps(r.Allocation())...)
}

// Outcome counts the registrations of RegisterAtOnce.
type Outcome struct {
	OK, RangeFull int
}

// RegisterAtOnce registers every serial at once, each through
// stores[i%len(stores)], and counts the successes and the
// store.ErrRangeFull refusals; any other error fails the test.
func RegisterAtOnce(t testing.TB, stores []store.Store, serials []string, req store.AllocRequest) Outcome {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var out Outcome
	for i, serial := range serials {
		wg.Add(1)
		go func(s store.Store, serial string) {
			defer wg.Done()
			_, err := Register(s, serial, req)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				out.OK++
			case errors.Is(err, store.ErrRangeFull):
				out.RangeFull++
			default:
				t.Errorf("%s: %v", serial, err)
			}
		}(stores[i%len(stores)], serial)
	}
	wg.Wait()
	return out
}

// Serials returns n serials "<prefix>-00", "<prefix>-01", ...
func Serials(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	return out
}

// CheckFleet fails the test when two hosts share an InternalAddr or the
// hosts per profile differ from profiles; it returns the serial by
// address for further checks.
func CheckFleet(t testing.TB, hosts []host.Host, profiles map[string]int) map[string]string {
	t.Helper()
	addrs := map[string]string{}
	got := map[string]int{}
	for _, h := range hosts {
		if other, dup := addrs[h.InternalAddr.String()]; dup {
			require.Failf(t, "shared address", "%s and %s share %s", h.Serial, other, h.InternalAddr)
		}
		addrs[h.InternalAddr.String()] = h.Serial
		got[h.Profile]++
	}
	assert.Equal(t, profiles, got, "hosts per profile")
	return addrs
}
