package config

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
)

const valid = `
default_coreos_version: 1068.6.0
network:
  pxe: true
  interface: eth1
  bind_addr: 192.168.2.2
  bootstrap_range: {start: 192.168.2.100, end: 192.168.2.200}
  ip_range: {start: 192.168.2.21, end: 192.168.2.99}
  dns: [8.8.8.8]
  router: 192.168.2.2
profiles:
  - name: core-services
    quantity: 3
    tags: ["role-core=true"]
  - name: default
templates_env:
  ssh_authorized_keys: ["ssh-rsa AAAA"]
`

func TestParseValid(t *testing.T) {
	c, err := Parse([]byte(valid))
	require.NoError(t, err)
	assert.Equal(t, "1068.6.0", c.DefaultCoreOSVersion)
	assert.Equal(t, "singlenic", c.Network.NetworkModel, "default network model")
	assert.True(t, c.Network.PXE)
	p, ok := c.Profile("core-services")
	require.True(t, ok)
	assert.Equal(t, 3, p.Quantity)
	assert.Equal(t, "1068.6.0", c.CoreOSVersion(p))
	assert.NotNil(t, c.TemplatesEnv["ssh_authorized_keys"])
}

func TestFirmwareOptions(t *testing.T) {
	c, err := Parse([]byte(valid))
	require.NoError(t, err)
	assert.Equal(t, "ipxe.efi", c.Network.EFIBootFile, "default EFI binary")
	assert.Equal(t, "ignore", c.Network.InstalledBoot, "default is Mayu 0.11's behaviour")
	assert.False(t, c.Network.ProxyDHCP)
	assert.False(t, c.Network.BootsInstalledLocally())

	c, err = Parse([]byte(strings.Replace(valid, "  pxe: true", "  pxe: true\n  efi_boot_file: snponly.efi\n  installed_boot: local", 1)))
	require.NoError(t, err)
	assert.Equal(t, "snponly.efi", c.Network.EFIBootFile)
	assert.True(t, c.Network.BootsInstalledLocally())

	// proxyDHCP: no bootstrap range needed; one given is not leased.
	proxy := strings.Replace(valid, "  bootstrap_range: {start: 192.168.2.100, end: 192.168.2.200}\n", "", 1)
	proxy = strings.Replace(proxy, "  pxe: true", "  pxe: true\n  proxy_dhcp: true", 1)
	c, err = Parse([]byte(proxy))
	require.NoError(t, err)
	assert.True(t, c.Network.ProxyDHCP)
	assert.Empty(t, c.Warnings)
	c, err = Parse([]byte(strings.Replace(valid, "  pxe: true", "  pxe: true\n  proxy_dhcp: true", 1)))
	require.NoError(t, err)
	require.Len(t, c.Warnings, 1)
	assert.Contains(t, c.Warnings[0], "network.bootstrap_range is not leased with network.proxy_dhcp")

	assert.True(t, c.Network.BootsInstalledLocally(), "proxyDHCP cannot ignore: installed machines boot locally through iPXE")
	c, err = Parse([]byte(strings.Replace(proxy, "  proxy_dhcp: true", "  proxy_dhcp: true\n  installed_boot: ignore", 1)))
	require.NoError(t, err)
	require.Len(t, c.Warnings, 1)
	assert.Contains(t, c.Warnings[0], "network.installed_boot ignore acts as local with network.proxy_dhcp")

	// Without proxy_dhcp the bootstrap range stays required with PXE.
	_, err = Parse([]byte(strings.Replace(valid, "  bootstrap_range: {start: 192.168.2.100, end: 192.168.2.200}\n", "", 1)))
	require.ErrorContains(t, err, "network.bootstrap_range is required")
}

func TestShippedExampleIsValid(t *testing.T) {
	b, err := os.ReadFile("../../config.yaml.example")
	require.NoError(t, err)
	c, err := Parse(b)
	require.NoError(t, err)
	p, ok := c.Profile("core-services")
	require.True(t, ok)
	assert.Equal(t, 3, p.Quantity)
	assert.Equal(t, "192.168.2.2", c.Network.BindAddr)
}

func TestValidationReportsEveryProblem(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown key", strings.Replace(valid, "  pxe: true", "  pxe: true\n  pxe_enabled: true", 1),
			[]string{"line 5", "field pxe_enabled not found"}},
		{"missing version", strings.Replace(valid, "default_coreos_version: 1068.6.0", "", 1),
			[]string{"default_coreos_version is required"}},
		{"bad bind addr", strings.Replace(valid, "bind_addr: 192.168.2.2", "bind_addr: nope", 1),
			[]string{"line 6: network.bind_addr \"nope\" is not an IPv4 address"}},
		{"unparsable range", strings.Replace(valid, "start: 192.168.2.21", "start: 192.168.2.", 1),
			[]string{"network.ip_range.start \"192.168.2.\" is not an IPv4 address"}},
		{"reversed range", strings.Replace(valid, "{start: 192.168.2.21, end: 192.168.2.99}", "{start: 192.168.2.99, end: 192.168.2.21}", 1),
			[]string{"network.ip_range is reversed"}},
		{"ip_range inside bootstrap_range", strings.Replace(valid, "{start: 192.168.2.21, end: 192.168.2.99}", "{start: 192.168.2.120, end: 192.168.2.150}", 1),
			[]string{"line 8: network.ip_range 192.168.2.120-192.168.2.150 has no address to hand out"}},
		{"duplicate profile", strings.Replace(valid, "  - name: default", "  - name: core-services", 1),
			[]string{"duplicate profile name \"core-services\""}},
		{"negative quantity", strings.Replace(valid, "quantity: 3", "quantity: -1", 1),
			[]string{"quantity -1 is negative"}},
		{"unknown network model", strings.Replace(valid, "  router: 192.168.2.2", "  router: 192.168.2.2\n  network_model: tripleNIC", 1),
			[]string{"network_model \"tripleNIC\" is unknown"}},
		{"several at once", strings.NewReplacer("bind_addr: 192.168.2.2", "bind_addr: x", "quantity: 3", "quantity: -2", "default_coreos_version: 1068.6.0", "").Replace(valid),
			[]string{"3 problem(s)", "default_coreos_version is required", "bind_addr \"x\"", "quantity -2"}},
		{"unknown EFI boot file", strings.Replace(valid, "  pxe: true", "  pxe: true\n  efi_boot_file: grub.efi", 1),
			[]string{"line 5: network.efi_boot_file \"grub.efi\" is not an iPXE EFI binary mayu ships (want one of ipxe.efi, snponly.efi)"}},
		{"unknown installed_boot", strings.Replace(valid, "  pxe: true", "  pxe: true\n  installed_boot: disk", 1),
			[]string{"line 5: network.installed_boot \"disk\" is unknown (want one of ignore, local)"}},
		{"proxy_dhcp without pxe", strings.Replace(valid, "  pxe: true", "  pxe: false\n  proxy_dhcp: true", 1),
			[]string{"line 5: network.proxy_dhcp needs network.pxe: true"}},
		{"proxy_dhcp not a bool", strings.Replace(valid, "  pxe: true", "  pxe: true\n  proxy_dhcp: sometimes", 1),
			[]string{"line 5", "cannot unmarshal"}},
		{"every firmware problem at once", strings.Replace(valid, "  pxe: true", "  pxe: false\n  proxy_dhcp: true\n  efi_boot_file: x.efi\n  installed_boot: pxe", 1),
			[]string{"3 problem(s)", "line 5: network.proxy_dhcp", "line 6: network.efi_boot_file", "line 7: network.installed_boot"}},
		{"empty", "", []string{"empty"}},
		{"wrong type", strings.Replace(valid, "quantity: 3", "quantity: three", 1), []string{"cannot unmarshal"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			require.Error(t, err)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte(full))
	mayu011, err := os.ReadFile("testdata/mayu-0.11.yaml")
	require.NoError(f, err)
	f.Add(mayu011)
	f.Add([]byte("network: {ip_range: {start: 1.2.3.4, end: 1.2.3.1}}"))
	f.Add([]byte("profiles: [{name: a, quantity: -1}, {name: a}]"))
	f.Add([]byte(strings.Replace(full, "interface: eth1", `interface: "eth1\ndhcp-script=/x"`, 1)))
	f.Add([]byte(strings.Replace(full, `text: "two words"`, `text: "a\u2028b"`, 1)))
	f.Add([]byte(strings.Replace(full, "quantity: 3", "quantity: x", 1)))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
		if err != nil {
			return
		}
		// Whatever parsed must be usable by the allocator...
		lo, hi := c.Network.IPRange.Bounds()
		if lo == nil || hi == nil || IPToUint32(lo) > IPToUint32(hi) {
			t.Fatalf("accepted an unusable ip_range %+v", c.Network.IPRange)
		}
		first, ok := c.plan.first()
		if !ok || !c.Allocatable(Uint32ToIP(first)) {
			t.Fatalf("accepted an ip_range with nothing to hand out: %+v", c.Network)
		}
		// ...and nothing that reaches a rendered file may break its line.
		n := c.Network
		values := append([]string{c.DefaultCoreOSVersion, n.Interface, n.BindAddr, n.Router, n.SubnetSize, n.SubnetGateway,
			n.NetworkModel, n.IPRange.Start, n.IPRange.End, n.BootstrapRange.Start, n.BootstrapRange.End}, append(n.DNS, n.NTP...)...)
		for _, p := range c.Profiles {
			values = append(append(values, p.Name, p.CoreOSVersion, p.EtcdClusterToken), p.Tags...)
		}
		values = append(values, envStrings(c.TemplatesEnv)...)
		for _, v := range values {
			if r, bad := host.BadRune(v); bad {
				t.Fatalf("accepted %q with %U", v, r)
			}
		}
	})
}

// envStrings returns every key and string inside a templates_env value.
func envStrings(v interface{}) []string {
	var out []string
	switch t := v.(type) {
	case string:
		out = append(out, t)
	case []interface{}:
		for _, x := range t {
			out = append(out, envStrings(x)...)
		}
	case map[string]interface{}:
		for k, x := range t {
			out = append(append(out, k), envStrings(x)...)
		}
	case map[interface{}]interface{}:
		for k, x := range t {
			out = append(append(out, fmt.Sprint(k)), envStrings(x)...)
		}
	}
	return out
}

func TestSecureBootOptions(t *testing.T) {
	c, err := Parse([]byte(valid))
	require.NoError(t, err)
	assert.False(t, c.SecureBootAnywhere(), "off unless configured")

	c, err = Parse([]byte(strings.Replace(valid, "  pxe: true", "  pxe: true\n  secure_boot: true", 1)))
	require.NoError(t, err)
	assert.True(t, c.Network.SecureBoot)
	assert.True(t, c.SecureBootAnywhere())

	c, err = Parse([]byte(strings.Replace(valid, "  - name: default", "  - name: default\n    secure_boot: true", 1)))
	require.NoError(t, err)
	p, ok := c.Profile("default")
	require.True(t, ok)
	assert.True(t, p.SecureBoot)
	assert.True(t, c.SecureBootAnywhere())

	// The chain is TFTP: no PXE, no Secure Boot.
	_, err = Parse([]byte(strings.Replace(strings.Replace(valid, "  pxe: true", "  pxe: false", 1), "  - name: default", "  - name: default\n    secure_boot: true", 1)))
	require.ErrorContains(t, err, "secure_boot (network or profile) needs network.pxe: true")

	// In proxyDHCP mode GRUB asks the site's server for grub.cfg (seen in
	// qemu: it stops at its prompt), so both switches are refused.
	proxy := strings.Replace(valid, "  pxe: true", "  pxe: true\n  proxy_dhcp: true", 1)
	_, err = Parse([]byte(strings.Replace(proxy, "  - name: default", "  - name: default\n    secure_boot: true", 1)))
	require.ErrorContains(t, err, "profiles[1].secure_boot is not supported with network.proxy_dhcp")
	_, err = Parse([]byte(strings.Replace(proxy, "  pxe: true", "  pxe: true\n  secure_boot: true", 1)))
	require.ErrorContains(t, err, "network.secure_boot is not supported with network.proxy_dhcp")
}

func TestARM64Option(t *testing.T) {
	c, err := Parse([]byte(valid))
	require.NoError(t, err)
	assert.False(t, c.Network.ARM64, "off unless configured (Mayu 0.11)")
	assert.False(t, c.GRUBTree())

	c, err = Parse([]byte(strings.Replace(valid, "  pxe: true", "  pxe: true\n  arm64: true", 1)))
	require.NoError(t, err)
	assert.True(t, c.Network.ARM64)
	assert.True(t, c.GRUBTree(), "arm64 machines boot through GRUB's tree")
	assert.False(t, c.SecureBootAnywhere(), "arm64 is not the Secure Boot chain")

	// GRUB and its files come over TFTP: no PXE, no arm64.
	_, err = Parse([]byte(strings.Replace(valid, "  pxe: true", "  pxe: false\n  arm64: true", 1)))
	require.ErrorContains(t, err, "network.arm64 needs network.pxe: true")

	// GRUB does not find its configuration beside a site's DHCP server.
	_, err = Parse([]byte(strings.Replace(valid, "  pxe: true", "  pxe: true\n  arm64: true\n  proxy_dhcp: true", 1)))
	require.ErrorContains(t, err, "network.arm64 is not supported with network.proxy_dhcp")
}
