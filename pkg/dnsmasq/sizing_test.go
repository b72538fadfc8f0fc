package dnsmasq

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
)

func TestSizeFromRanges(t *testing.T) {
	r := func(a, b string) config.IPRange { return config.IPRange{Start: a, End: b} }
	tests := []struct {
		name      string
		boot, ips config.IPRange
		want      Limits
	}{
		{"seed ranges keep the defaults", r("192.168.2.100", "192.168.2.200"), r("192.168.2.21", "192.168.2.99"),
			Limits{LeaseMax: 1000, TFTPMax: 101}},
		{"a /21 bootstrap range and a /20 of static addresses", r("10.8.0.0", "10.8.7.255"), r("10.9.0.0", "10.9.15.255"),
			// (2048 + 4096) * 5/4 = 7680
			Limits{LeaseMax: 7680, TFTPMax: 2048}},
		{"tiny ranges get dnsmasq's defaults", r("10.0.0.10", "10.0.0.12"), r("10.0.0.20", "10.0.0.20"),
			Limits{LeaseMax: DefaultLeaseMax, TFTPMax: DefaultTFTPMax}},
		{"a /8 is capped", r("10.0.0.0", "10.255.255.255"), r("11.0.0.0", "11.0.0.255"),
			Limits{LeaseMax: MaxLeaseMax, TFTPMax: MaxTFTPMax}},
		{"no bootstrap range (pxe off)", config.IPRange{}, r("10.0.0.0", "10.0.3.255"),
			Limits{LeaseMax: 1280, TFTPMax: DefaultTFTPMax}},
		{"reversed or bad ranges count as empty", r("10.0.0.9", "10.0.0.1"), r("x", "y"),
			Limits{LeaseMax: DefaultLeaseMax, TFTPMax: DefaultTFTPMax}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, Size(config.Network{BootstrapRange: tt.boot, IPRange: tt.ips}))
		})
	}
}

// TestLimitsRendered: the shipped template carries the limits, with PXE and
// without (no TFTP then). TestLegacyTemplateSeesHosts keeps 0.11 templates rendering.
func TestLimitsRendered(t *testing.T) {
	n := seedNetwork()
	n.BootstrapRange = config.IPRange{Start: "192.168.8.0", End: "192.168.15.255"}
	n.IPRange = config.IPRange{Start: "192.168.16.1", End: "192.168.16.200"}
	s, err := New(Config{
		Binary: "/usr/sbin/dnsmasq", Template: shippedTemplate, RuntimeDir: t.TempDir(),
		Network: n, TFTPRoot: "/usr/lib/mayu/tftproot", NoTLS: true, HTTPPort: 4080,
	})
	assert.NoError(t, err)
	got, err := s.render()
	assert.NoError(t, err)
	assert.Contains(t, string(got), "\ndhcp-lease-max=2810\n") // (2048 + 200) * 5/4
	assert.Contains(t, string(got), "\ntftp-max=2048\n")

	n.PXE = false
	s2, err := New(Config{
		Binary: "/usr/sbin/dnsmasq", Template: shippedTemplate, RuntimeDir: t.TempDir(),
		Network: n, TFTPRoot: "/usr/lib/mayu/tftproot", NoTLS: true, HTTPPort: 4080,
	})
	assert.NoError(t, err)
	got, err = s2.render()
	assert.NoError(t, err)
	assert.Contains(t, string(got), "\ndhcp-lease-max=2810\n")
	assert.NotContains(t, string(got), "tftp-max")
}

func TestNeighbourWarning(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gc_thresh3")
	old := neighbourLimitPath
	neighbourLimitPath = p
	t.Cleanup(func() { neighbourLimitPath = old })
	n := config.Network{
		BootstrapRange: config.IPRange{Start: "10.0.0.1", End: "10.0.3.254"}, // 1022
		IPRange:        config.IPRange{Start: "10.0.4.1", End: "10.0.4.100"}, // 100
	}
	assert.Empty(t, NeighbourWarning(n), "no limit readable: no warning")
	require.NoError(t, os.WriteFile(p, []byte("1024\n"), 0o644))
	w := NeighbourWarning(n)
	assert.Contains(t, w, "hold 1122 machines")
	assert.Contains(t, w, "takes 1024 entries")
	assert.Contains(t, w, "gc_thresh3=2244")
	require.NoError(t, os.WriteFile(p, []byte("4096\n"), 0o644))
	assert.Empty(t, NeighbourWarning(n))
}
