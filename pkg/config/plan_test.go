package config

import (
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMayu011OverlappingRangesParseWithAWarning(t *testing.T) {
	c, err := Load("testdata/mayu-0.11.yaml")
	require.NoError(t, err)
	assert.Equal(t, []string{
		"line 12: network.ip_range 10.0.3.1-10.0.3.254 overlaps network.bootstrap_range 10.0.3.10-10.0.3.30: its 21 addresses 10.0.3.10-10.0.3.30 are leased by DHCP during installation and never handed out as static addresses",
		"line 12: network.ip_range 10.0.3.1-10.0.3.254 contains addresses that are never handed out: 10.0.3.251 (mayu's bind_addr, router)",
	}, c.Warnings)

	for ip, want := range map[string]bool{
		"10.0.3.1": true, "10.0.3.9": true, "10.0.3.10": false, "10.0.3.20": false, "10.0.3.30": false,
		"10.0.3.31": true, "10.0.3.250": true, "10.0.3.251": false, "10.0.3.254": true,
		"10.0.3.0": false, "10.0.3.255": false, "10.0.4.1": false, "0.0.0.0": false,
	} {
		assert.Equal(t, want, c.Allocatable(net.ParseIP(ip)), ip)
	}
	assert.False(t, c.Allocatable(net.ParseIP("2001:db8::1")))
}

// An operator's range over the whole segment is common: the network and
// broadcast addresses, the router and mayu are skipped with a warning
// naming them, not refused.
func TestReservedAddressesInsideIPRange(t *testing.T) {
	c := mustParse(t,
		"{start: 192.168.2.21, end: 192.168.2.99}", "{start: 192.168.2.0, end: 192.168.3.255}",
		"ntp: [pool.ntp.org, 192.168.2.3]", "ntp: [pool.ntp.org, 192.168.3.3]",
		"dns: [8.8.8.8]", "dns: [8.8.8.8, 192.168.3.53]",
		"subnet_gateway: 192.168.2.1", "subnet_gateway: 192.168.3.1",
	)
	require.Len(t, c.Warnings, 2)
	assert.Contains(t, c.Warnings[0], "line 8: network.ip_range 192.168.2.0-192.168.3.255 overlaps network.bootstrap_range")
	assert.Equal(t, "line 8: network.ip_range 192.168.2.0-192.168.3.255 contains addresses that are never handed out: "+
		"192.168.2.0 (network address of 192.168.2.0/24), 192.168.2.1 (router), 192.168.2.2 (mayu's bind_addr), "+
		"192.168.2.255 (broadcast address of 192.168.2.0/24), 192.168.3.0 (network address of 192.168.3.0/24), "+
		"192.168.3.1 (subnet_gateway), 192.168.3.3 (an NTP server), 192.168.3.53 (a DNS server), "+
		"192.168.3.255 (broadcast address of 192.168.3.0/24)", c.Warnings[1])
	for _, ip := range []string{"192.168.2.0", "192.168.2.1", "192.168.2.2", "192.168.2.150", "192.168.2.255",
		"192.168.3.0", "192.168.3.1", "192.168.3.3", "192.168.3.53", "192.168.3.255"} {
		assert.False(t, c.Allocatable(net.ParseIP(ip)), ip)
	}
	for _, ip := range []string{"192.168.2.3", "192.168.2.99", "192.168.2.201", "192.168.3.2", "192.168.3.254"} {
		assert.True(t, c.Allocatable(net.ParseIP(ip)), ip)
	}
}

func TestSubnetSizeDecidesNetworkAndBroadcast(t *testing.T) {
	for _, tt := range []struct {
		size        string
		allocatable []string
		excluded    []string
	}{
		{`"22"`, []string{"192.168.2.255", "192.168.3.0"}, []string{"192.168.0.0", "192.168.3.255"}},
		{"255.255.254.0", []string{"192.168.2.255", "192.168.3.0"}, []string{"192.168.2.0", "192.168.3.255"}},
		{`""`, []string{"192.168.2.254"}, []string{"192.168.2.255", "192.168.3.0"}},
		{"31", []string{"192.168.2.255", "192.168.3.0", "192.168.3.255"}, []string{"192.168.2.1"}},
	} {
		t.Run(tt.size, func(t *testing.T) {
			c := mustParse(t,
				"{start: 192.168.2.21, end: 192.168.2.99}", "{start: 192.168.0.0, end: 192.168.3.255}",
				"bootstrap_range: {start: 192.168.2.100, end: 192.168.2.200}", "bootstrap_range: {start: 192.168.4.100, end: 192.168.4.200}",
				`subnet_size: "24"`, "subnet_size: "+tt.size,
			)
			for _, ip := range tt.allocatable {
				assert.True(t, c.Allocatable(net.ParseIP(ip)), ip)
			}
			for _, ip := range tt.excluded {
				assert.False(t, c.Allocatable(net.ParseIP(ip)), ip)
			}
		})
	}
}

// A range over many subnets names a bounded number of them.
func TestExcludedListIsBounded(t *testing.T) {
	c := mustParse(t, "{start: 192.168.2.21, end: 192.168.2.99}", "{start: 10.0.0.0, end: 10.255.255.255}")
	require.Len(t, c.Warnings, 1)
	assert.True(t, strings.HasPrefix(c.Warnings[0], "line 8: network.ip_range 10.0.0.0-10.255.255.255 contains addresses that are never handed out: "+
		"10.0.0.0 (network address of 10.0.0.0/24), 10.0.0.255 (broadcast address of 10.0.0.0/24), 10.0.1.0 (network address of 10.0.1.0/24)"), c.Warnings[0])
	assert.True(t, strings.HasSuffix(c.Warnings[0], " and more"), c.Warnings[0])
	assert.Equal(t, maxListed, strings.Count(c.Warnings[0], " ("))
}

func TestNothingToHandOutIsRefused(t *testing.T) {
	for name, rng := range map[string]string{
		"inside bootstrap_range": "{start: 192.168.2.150, end: 192.168.2.160}",
		"network address only":   "{start: 192.168.2.0, end: 192.168.2.0}",
		"router and mayu only":   "{start: 192.168.2.1, end: 192.168.2.2}",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(strings.Replace(full, "{start: 192.168.2.21, end: 192.168.2.99}", rng, 1)))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "line 8: network.ip_range "+strings.NewReplacer("{start: ", "", ", end: ", "-", "}", "").Replace(rng)+" has no address to hand out")
		})
	}
}

// A bootstrap range covering nearly all of a huge ip_range is stepped over,
// not walked.
func TestHugeBootstrapOverlapIsCheap(t *testing.T) {
	c := mustParse(t,
		"{start: 192.168.2.21, end: 192.168.2.99}", "{start: 10.0.0.1, end: 10.255.255.254}",
		"{start: 192.168.2.100, end: 192.168.2.200}", "{start: 10.0.0.1, end: 10.255.255.253}",
	)
	assert.True(t, c.Allocatable(net.ParseIP("10.255.255.254")))
	assert.False(t, c.Allocatable(net.ParseIP("10.255.255.253")))
	assert.Contains(t, c.Warnings[0], "its 16777213 addresses 10.0.0.1-10.255.255.253")
}

// A Config made without Parse (as some callers build one) plans from its
// fields.
func TestAllocatableWithoutParse(t *testing.T) {
	c := &Config{Network: Network{
		BindAddr:       "192.168.2.21",
		IPRange:        IPRange{Start: "192.168.2.20", End: "192.168.2.30"},
		BootstrapRange: IPRange{Start: "192.168.2.25", End: "192.168.2.40"},
	}}
	assert.True(t, c.Allocatable(net.ParseIP("192.168.2.20")))
	assert.False(t, c.Allocatable(net.ParseIP("192.168.2.21")), "bind_addr")
	assert.True(t, c.Allocatable(net.ParseIP("192.168.2.24")))
	assert.False(t, c.Allocatable(net.ParseIP("192.168.2.25")), "bootstrap")
	assert.False(t, (&Config{}).Allocatable(net.ParseIP("192.168.2.25")), "no ip_range")
}

// AllocatableCount agrees with Allocatable asked for every address of the
// range, whatever the overlaps, subnet sizes and reserved addresses.
func TestAllocatableCountMatchesAllocatable(t *testing.T) {
	for name, repl := range map[string][]string{
		"shipped":     nil,
		"whole /23":   {"{start: 192.168.2.21, end: 192.168.2.99}", "{start: 192.168.2.0, end: 192.168.3.255}", "subnet_gateway: 192.168.2.1", "subnet_gateway: 192.168.3.1"},
		"/22 subnets": {"{start: 192.168.2.21, end: 192.168.2.99}", "{start: 192.168.0.0, end: 192.168.7.255}", `subnet_size: "24"`, `subnet_size: "22"`},
		"/31 subnets": {"{start: 192.168.2.21, end: 192.168.2.99}", "{start: 192.168.2.0, end: 192.168.3.255}", `subnet_size: "24"`, `subnet_size: "31"`},
		"boot across a subnet edge": {"{start: 192.168.2.21, end: 192.168.2.99}", "{start: 192.168.1.7, end: 192.168.4.9}",
			"{start: 192.168.2.100, end: 192.168.2.200}", "{start: 192.168.2.250, end: 192.168.3.4}"},
		"boot covers it all but one": {"{start: 192.168.2.21, end: 192.168.2.99}", "{start: 192.168.2.4, end: 192.168.2.120}",
			"{start: 192.168.2.100, end: 192.168.2.200}", "{start: 192.168.2.5, end: 192.168.2.200}"},
	} {
		t.Run(name, func(t *testing.T) {
			c := mustParse(t, repl...)
			lo, hi := c.Network.IPRange.Bounds()
			var want uint64
			for n := IPToUint32(lo); ; n++ {
				if c.Allocatable(Uint32ToIP(n)) {
					want++
				}
				if n == IPToUint32(hi) {
					break
				}
			}
			assert.Equal(t, want, c.AllocatableCount())
		})
	}
	// A huge range is counted, not walked.
	c := mustParse(t, "{start: 192.168.2.21, end: 192.168.2.99}", "{start: 10.0.0.0, end: 10.255.255.255}")
	assert.Equal(t, uint64(1<<24-2*(1<<16)), c.AllocatableCount(), "every /24's network and broadcast address excluded")
	assert.Equal(t, uint64(10), (&Config{Network: Network{
		BindAddr: "192.168.2.21", IPRange: IPRange{Start: "192.168.2.20", End: "192.168.2.30"},
	}}).AllocatableCount(), "without Parse")
}
