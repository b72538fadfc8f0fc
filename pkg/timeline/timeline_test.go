package timeline

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func seqs(es []Event) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func TestPerHostRingKeepsTheNewest(t *testing.T) {
	tl := New(Config{PerHost: 3})
	for i := 0; i < 7; i++ {
		tl.Publish(Event{Kind: HTTP, Serial: "a", Status: 200 + i})
	}
	got := tl.Events("a")
	assert.Equal(t, []uint64{5, 6, 7}, seqs(got))
	assert.Equal(t, 206, got[2].Status)
	assert.Nil(t, tl.Events("b"))
}

func TestMaxHostsDropsTheLeastRecentlyActive(t *testing.T) {
	tl := New(Config{MaxHosts: 2})
	tl.Publish(Event{Kind: HTTP, Serial: "a"})
	tl.Publish(Event{Kind: HTTP, Serial: "b"})
	tl.Publish(Event{Kind: HTTP, Serial: "a"}) // a is now the most recent
	tl.Publish(Event{Kind: HTTP, Serial: "c"}) // b goes
	assert.Len(t, tl.Events("a"), 2)
	assert.Nil(t, tl.Events("b"))
	assert.Len(t, tl.Events("c"), 1)
}

func TestUnknownMACsWaitBoundedThenAttach(t *testing.T) {
	claims := map[string]string{}
	var mu sync.Mutex
	tl := New(Config{MaxUnknownMACs: 2, PerUnknownMAC: 2, Resolve: func(mac, ip string) string {
		mu.Lock()
		defer mu.Unlock()
		return claims[mac]
	}})
	tl.Publish(Event{Kind: DHCPDiscover, MAC: "m1"})
	tl.Publish(Event{Kind: DHCPOffer, MAC: "m1"})
	tl.Publish(Event{Kind: DHCPRequest, MAC: "m1"})     // m1 keeps its last 2
	tl.Publish(Event{Kind: DHCPDiscover, MAC: "m2"})    // seq 4
	tl.Publish(Event{Kind: HTTP, Serial: "s", IP: "x"}) // seq 5, claimed already
	tl.Publish(Event{Kind: DHCPDiscover, MAC: "m3"})    // m1 (last seq 3) goes
	un := tl.Unclaimed()
	assert.NotContains(t, un, "m1")
	assert.Len(t, un, 2)

	mu.Lock()
	claims["m2"] = "s"
	mu.Unlock()
	tl.Reattribute()
	got := tl.Events("s")
	assert.Equal(t, []uint64{4, 5}, seqs(got), "moved events keep their order")
	assert.Equal(t, "s", got[0].Serial)
	assert.NotContains(t, tl.Unclaimed(), "m2")

	// Claimed MACs resolve at Publish.
	e := tl.Publish(Event{Kind: DHCPAck, MAC: "m2"})
	assert.Equal(t, "s", e.Serial)

	tl.Attach("t", "m3")
	assert.Len(t, tl.Events("t"), 1)
	assert.Empty(t, tl.Unclaimed())
}

func TestAttachKeepsThePerHostBound(t *testing.T) {
	tl := New(Config{PerHost: 3})
	tl.Publish(Event{Kind: DHCPDiscover, MAC: "m"})
	tl.Publish(Event{Kind: DHCPOffer, MAC: "m"})
	for i := 0; i < 3; i++ {
		tl.Publish(Event{Kind: HTTP, Serial: "s"})
	}
	tl.Attach("s", "m")
	assert.Equal(t, []uint64{3, 4, 5}, seqs(tl.Events("s")))
}

func TestPublishFillsTimeAndSeq(t *testing.T) {
	now := time.Date(2026, 11, 29, 22, 0, 0, 0, time.FixedZone("x", 3600))
	tl := New(Config{Now: func() time.Time { return now }})
	e := tl.Publish(Event{Kind: State, Serial: "s", From: "configured", To: "installing"})
	assert.Equal(t, uint64(1), e.Seq)
	assert.Equal(t, time.UTC, e.Time.Location())
	assert.True(t, e.Time.Equal(now))
	var nilTL *Timeline
	assert.Equal(t, uint64(0), nilTL.Publish(Event{Kind: HTTP}).Seq, "a nil timeline drops events")
}

func TestRecentIsBoundedAndHoldsUnattributedEvents(t *testing.T) {
	tl := New(Config{Recent: 3})
	tl.Publish(Event{Kind: TFTPSent, IP: "10.0.0.1", File: "undionly.kpxe"})
	for i := 0; i < 3; i++ {
		tl.Publish(Event{Kind: HTTP, Serial: "s"})
	}
	assert.Equal(t, []uint64{2, 3, 4}, seqs(tl.Recent()))
}

func TestJSONFieldNames(t *testing.T) {
	e := Event{Seq: 1, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Kind: HTTP, Serial: "s",
		Method: "GET", Route: "/ipxebootscript", Status: 200, Bytes: 10, DurationSeconds: 0.5}
	b, err := json.Marshal(e)
	require.NoError(t, err)
	assert.JSONEq(t, `{"seq":1,"time":"2026-01-02T03:04:05Z","kind":"http","serial":"s","method":"GET",
		"route":"/ipxebootscript","status":200,"bytes":10,"duration_seconds":0.5}`, string(b))
}

func TestSlowSubscriberDropsAndNeverBlocks(t *testing.T) {
	tl := New(Config{})
	slow, err := tl.Subscribe(2)
	require.NoError(t, err)
	fast, err := tl.Subscribe(100)
	require.NoError(t, err)

	done := make(chan struct{})
	go func() {
		for i := 0; i < 50; i++ {
			tl.Publish(Event{Kind: HTTP, Serial: fmt.Sprint(i)})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish blocked on a subscriber that reads nothing")
	}
	assert.Equal(t, uint64(48), slow.Dropped())
	assert.Equal(t, uint64(0), fast.Dropped())
	assert.Equal(t, uint64(1), (<-slow.C()).Seq, "the slow one keeps the first events it had room for")
	for i := 1; i <= 50; i++ {
		assert.Equal(t, uint64(i), (<-fast.C()).Seq)
	}
	slow.Close()
	slow.Close()
	assert.Equal(t, 1, tl.Subscribers())
}

func TestSubscribersAreBoundedAndCloseEndsThem(t *testing.T) {
	tl := New(Config{MaxSubscribers: 1})
	s, err := tl.Subscribe(0)
	require.NoError(t, err)
	_, err = tl.Subscribe(0)
	assert.ErrorIs(t, err, ErrTooManySubscribers)

	tl.Close()
	_, ok := <-s.C()
	assert.False(t, ok, "Close closes the subscribers' channels")
	s.Close() // after the timeline's Close: no double close
	_, err = tl.Subscribe(0)
	assert.ErrorIs(t, err, ErrClosed)
	tl.Publish(Event{Kind: HTTP, Serial: "s"})
	assert.Len(t, tl.Events("s"), 1, "publishing goes on after Close")
}

func TestAnAddressGetsTheMACOfItsLastAckBounded(t *testing.T) {
	tl := New(Config{MaxLeases: 2})
	tl.Publish(Event{Kind: DHCPAck, MAC: "m1", IP: "10.0.0.1"})
	e := tl.Publish(Event{Kind: TFTPSent, IP: "10.0.0.1", File: "undionly.kpxe"})
	assert.Equal(t, "m1", e.MAC)
	assert.Len(t, tl.Unclaimed()["m1"], 2, "the transfer waits with the MAC's DHCP events")

	tl.Publish(Event{Kind: DHCPAck, MAC: "m2", IP: "10.0.0.2"})
	tl.Publish(Event{Kind: DHCPAck, MAC: "m3", IP: "10.0.0.3"}) // 10.0.0.1 is forgotten
	assert.Empty(t, tl.Publish(Event{Kind: HTTP, IP: "10.0.0.1"}).MAC)
	tl.Publish(Event{Kind: DHCPAck, MAC: "m4", IP: "10.0.0.2"}) // a new holder
	assert.Equal(t, "m4", tl.Publish(Event{Kind: HTTP, IP: "10.0.0.2"}).MAC)

	tl.SetResolve(func(mac, ip string) string {
		if mac == "m4" {
			return "s4"
		}
		return ""
	})
	assert.Equal(t, "s4", tl.Publish(Event{Kind: HTTP, IP: "10.0.0.2"}).Serial)
}

func TestObserversSeeEveryEventInOrder(t *testing.T) {
	tl := New(Config{})
	counts := map[Kind]int{}
	var seqs []uint64
	tl.Observe(func(e Event) { counts[e.Kind]++; seqs = append(seqs, e.Seq) })
	slow, err := tl.Subscribe(1)
	require.NoError(t, err)
	for i := 0; i < 5; i++ {
		tl.Publish(Event{Kind: DHCPDiscover, MAC: "m"})
	}
	tl.Publish(Event{Kind: TFTPSent, IP: "10.0.0.1"})
	assert.Equal(t, map[Kind]int{DHCPDiscover: 5, TFTPSent: 1}, counts, "observers count what a slow subscriber loses")
	assert.Equal(t, []uint64{1, 2, 3, 4, 5, 6}, seqs)
	assert.Equal(t, uint64(5), slow.Dropped())
}
