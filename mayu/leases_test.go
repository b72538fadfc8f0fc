package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
	"mayu/pkg/dnsmasq"
)

// TestMachineLeasesFile: the machine guard ties addresses to MACs by the
// lease file of the DHCP server that leases them. A proxyDHCP dnsmasq
// leases nothing, so then mayu has no lease table (trust on first use,
// bounded by --anonymous-limit) unless --dhcp-leases-file names the site's.
func TestMachineLeasesFile(t *testing.T) {
	runDir := t.TempDir()
	newPrepared := func(proxy bool) *prepared {
		n := config.Network{PXE: true, ProxyDHCP: proxy, BindAddr: "192.168.2.2"}
		sup, err := dnsmasq.New(dnsmasq.Config{Template: filepath.Join("..", "templates", "dnsmasq_template.conf"),
			RuntimeDir: runDir, Network: n, TFTPRoot: t.TempDir(), HTTPPort: 4080})
		require.NoError(t, err)
		return &prepared{cfg: &config.Config{Network: n}, dnsmasq: sup}
	}
	assert.Equal(t, filepath.Join(runDir, "dnsmasq.leases"), machineLeasesFile(options{}, newPrepared(false)), "mayu's own leases")
	assert.Equal(t, "", machineLeasesFile(options{}, newPrepared(true)), "proxyDHCP: mayu leases nothing")
	assert.Equal(t, "/var/lib/misc/site.leases", machineLeasesFile(options{leasesFile: "/var/lib/misc/site.leases"}, newPrepared(true)),
		"the site's lease file when given")
	assert.Equal(t, "", machineLeasesFile(options{}, &prepared{cfg: &config.Config{}}), "--no-dnsmasq")
}
