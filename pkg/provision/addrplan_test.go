package provision

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
	"mayu/pkg/store"
)

// planConfig's ip_range holds every kind of address the plan excludes: a
// broadcast and a network address (192.168.1.255, 192.168.2.0), the router,
// mayu's bind_addr, a DNS server and part of the bootstrap range. Five
// addresses are left to hand out.
const planConfig = `
default_coreos_version: 1068.6.0
network:
  pxe: true
  interface: eth1
  bind_addr: 192.168.2.2
  router: 192.168.2.1
  dns: [192.168.2.3]
  bootstrap_range: {start: 192.168.2.5, end: 192.168.2.7}
  ip_range: {start: 192.168.1.254, end: 192.168.2.10}
profiles:
  - name: default
`

func TestAllocationSkipsExcludedAddresses(t *testing.T) {
	cfg, err := config.Parse([]byte(planConfig))
	require.NoError(t, err)
	require.NotEmpty(t, cfg.Warnings, "the plan is accepted with warnings")
	st := store.NewMemory()
	t.Cleanup(func() { _ = st.Close() })
	p, err := New(Config{Cluster: cfg, Store: st})
	require.NoError(t, err)

	var got []string
	for i := 0; i < 5; i++ {
		h, created, err := p.Register(fmt.Sprintf("plan-%d", i))
		require.NoError(t, err)
		require.True(t, created)
		got = append(got, h.InternalAddr.String())
	}
	assert.Equal(t, []string{"192.168.1.254", "192.168.2.4", "192.168.2.8", "192.168.2.9", "192.168.2.10"}, got)

	// Only allocatable addresses count: the range is full now although
	// six of its addresses were never handed out.
	_, _, err = p.Register("plan-5")
	assert.ErrorIs(t, err, ErrRangeFull)
}
