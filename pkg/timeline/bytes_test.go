package timeline

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// checkBytes recounts what every ring holds and compares it with the
// timeline's running total, and the order lists with the maps.
func checkBytes(t *testing.T, tl *Timeline) {
	t.Helper()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var sum int64
	for _, l := range []*rings{&tl.hosts, &tl.unknown} {
		n := 0
		for r := l.head; r != nil; r = r.next {
			n++
			require.Same(t, r, l.m[r.key])
			want := int64(cap(r.buf)) * eventSlot
			for i := range r.buf {
				want += eventStrings(&r.buf[i])
			}
			require.Equal(t, want, r.bytes, "ring %s", r.key)
			sum += r.bytes
		}
		require.Equal(t, len(l.m), n)
	}
	require.Equal(t, sum, tl.bytes)
}

func TestRingsAllocateAsEventsArrive(t *testing.T) {
	tl := New(Config{PerHost: 100})
	tl.Publish(Event{Kind: HTTP, Serial: "a"})
	tl.mu.Lock()
	assert.Equal(t, 4, cap(tl.hosts.m["a"].buf), "a first event allocates a few slots, not PerHost")
	tl.mu.Unlock()
	for i := 0; i < 40; i++ {
		tl.Publish(Event{Kind: HTTP, Serial: "a", Route: "/x"})
	}
	tl.mu.Lock()
	assert.Equal(t, 64, cap(tl.hosts.m["a"].buf), "doubling as it fills")
	tl.mu.Unlock()
	for i := 0; i < 200; i++ {
		tl.Publish(Event{Kind: HTTP, Serial: "a"})
	}
	tl.mu.Lock()
	assert.Equal(t, 100, cap(tl.hosts.m["a"].buf), "never past PerHost")
	tl.mu.Unlock()
	assert.Len(t, tl.Events("a"), 100)
	checkBytes(t, tl)
}

func TestMaxBytesDropsTheLeastRecentlyActiveRings(t *testing.T) {
	const route = "/api/hosts/x/boot_complete"
	// Room for exactly 10 hosts of 8 events each.
	perHost := 8*eventSlot + 8*int64(len(HTTP)+len("host-000")+len(route))
	budget := 10 * perHost
	tl := New(Config{PerHost: 8, MaxBytes: budget})
	for h := 0; h < 100; h++ {
		for i := 0; i < 8; i++ {
			tl.Publish(Event{Kind: HTTP, Serial: fmt.Sprintf("host-%03d", h), Route: route})
		}
		checkBytes(t, tl)
		assert.LessOrEqual(t, tl.Bytes(), budget)
	}
	// The newest hosts are kept whole, the oldest are gone.
	assert.Len(t, tl.Events("host-099"), 8)
	assert.Len(t, tl.Events("host-090"), 8)
	assert.Nil(t, tl.Events("host-000"))
	assert.Nil(t, tl.Events("host-089"))

	// A host active again is kept over those that were not.
	tl.Publish(Event{Kind: HTTP, Serial: "host-091", Route: route})
	for i := 0; i < 8; i++ {
		tl.Publish(Event{Kind: HTTP, Serial: "host-100", Route: route})
	}
	assert.Nil(t, tl.Events("host-090"), "the oldest went for host-100")
	assert.NotNil(t, tl.Events("host-091"))
	assert.NotNil(t, tl.Events("host-092"))
	for i := 0; i < 8; i++ {
		tl.Publish(Event{Kind: HTTP, Serial: "host-101", Route: route})
	}
	assert.NotNil(t, tl.Events("host-091"), "active after host-092")
	assert.Nil(t, tl.Events("host-092"))
	assert.NotNil(t, tl.Events("host-093"))
	checkBytes(t, tl)
}

func TestMaxBytesCountsTheSideTableAndDropsTheOldestOfEither(t *testing.T) {
	budget := 4*4*eventSlot + 4*4*64
	tl := New(Config{PerHost: 4, PerUnknownMAC: 4, MaxBytes: budget})
	tl.Publish(Event{Kind: DHCPDiscover, MAC: "52:54:00:00:00:01"}) // oldest
	tl.Publish(Event{Kind: HTTP, Serial: "a"})
	tl.Publish(Event{Kind: DHCPDiscover, MAC: "52:54:00:00:00:02"})
	tl.Publish(Event{Kind: HTTP, Serial: "b"})
	tl.Publish(Event{Kind: HTTP, Serial: "c"}) // the fifth ring: one must go
	checkBytes(t, tl)
	un := tl.Unclaimed()
	assert.NotContains(t, un, "52:54:00:00:00:01")
	assert.Contains(t, un, "52:54:00:00:00:02")
	for _, s := range []string{"a", "b", "c"} {
		assert.NotNil(t, tl.Events(s), s)
	}
	tl.Publish(Event{Kind: HTTP, Serial: "d"}) // now host a is the oldest
	assert.Nil(t, tl.Events("a"))
	assert.Contains(t, tl.Unclaimed(), "52:54:00:00:00:02")
	checkBytes(t, tl)
}

func TestAttachKeepsTheByteCount(t *testing.T) {
	tl := New(Config{PerHost: 6})
	for i := 0; i < 5; i++ {
		tl.Publish(Event{Kind: DHCPDiscover, MAC: "52:54:00:00:00:01", Interface: "eth0"})
		tl.Publish(Event{Kind: HTTP, Serial: "a", Route: "/r"})
	}
	checkBytes(t, tl)
	tl.Attach("a", "52:54:00:00:00:01")
	assert.Empty(t, tl.Unclaimed())
	assert.Len(t, tl.Events("a"), 6)
	checkBytes(t, tl)
}

func TestASingleRingIsNeverDroppedForItsOwnEvent(t *testing.T) {
	tl := New(Config{PerHost: 50, MaxBytes: 1})
	for i := 0; i < 60; i++ {
		tl.Publish(Event{Kind: HTTP, Serial: "a"})
	}
	assert.Len(t, tl.Events("a"), 50)
	tl.Publish(Event{Kind: HTTP, Serial: "b"})
	assert.Nil(t, tl.Events("a"))
	assert.Len(t, tl.Events("b"), 1)
	checkBytes(t, tl)
}

// Eviction is O(1): a fleet far past MaxHosts pays no scan of the kept
// hosts per new host.
func BenchmarkPublishPastMaxHosts(b *testing.B) {
	tl := New(Config{})
	serials := make([]string, 50000)
	for i := range serials {
		serials[i] = fmt.Sprintf("serial-%05d", i)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tl.Publish(Event{Kind: HTTP, Serial: serials[i%len(serials)]})
	}
}
