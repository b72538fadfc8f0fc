package provision

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
	"mayu/pkg/host"
	"mayu/pkg/store"
)

// The pool after registrations and state changes: addresses, the
// profiles' slots in config order, every state of every profile.
func TestPool(t *testing.T) {
	p, _ := newTest(t, "192.168.2.40")
	for i := 0; i < 7; i++ {
		_, created, err := p.Register(fmt.Sprintf("pool-%d", i))
		require.NoError(t, err)
		require.True(t, created)
	}
	_, err := p.SetState("pool-0", "installing")
	require.NoError(t, err)
	pool := p.Pool()
	assert.Equal(t, Range{"192.168.2.21", "192.168.2.40"}, pool.IPRange)
	assert.Equal(t, uint64(20), pool.Addresses)
	assert.Equal(t, uint64(7), pool.Used)
	assert.Equal(t, uint64(13), pool.Free)
	assert.Equal(t, 7, pool.Total)
	assert.Equal(t, []ProfileSlots{
		{Name: "core-services", Limited: true, Quantity: 3, Used: 3, Free: 0},
		{Name: "storage", Limited: true, Quantity: 2, Used: 2, Free: 0},
		{Name: "default", Used: 2},
	}, pool.Profiles)
	count := map[string]int{}
	for _, m := range pool.Machines {
		count[string(m.State)+"/"+m.Profile] = m.Count
	}
	assert.Len(t, pool.Machines, len(host.States)*3, "every state of every profile")
	assert.Equal(t, 1, count["installing/core-services"])
	assert.Equal(t, 2, count["configured/core-services"])
	assert.Equal(t, 2, count["configured/default"])
	assert.Equal(t, 0, count["running/storage"])

	c := p.Counts()
	assert.Equal(t, Counts{Registrations: 7}, c)
}

// BenchmarkPool is the cost of one scrape's pass over the records.
func BenchmarkPool(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			cfg, err := config.Parse([]byte(fmt.Sprintf(testConfig, "192.168.255.254")))
			if err != nil {
				b.Fatal(err)
			}
			p, err := New(Config{Cluster: cfg, Store: store.NewMemory()})
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < n; i++ {
				if _, _, err := p.Register(fmt.Sprintf("bench-%d", i)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				_ = p.Pool()
			}
		})
	}
}
