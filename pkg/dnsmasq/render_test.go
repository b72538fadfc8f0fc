package dnsmasq

import (
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
	"mayu/pkg/host"
	"mayu/pkg/proctest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// shippedTemplate is the template mayu ships.
const shippedTemplate = "../../templates/dnsmasq_template.conf"

func seedNetwork() config.Network {
	return config.Network{
		PXE:            true,
		Interface:      "eth1",
		BindAddr:       "192.168.2.2",
		BootstrapRange: config.IPRange{Start: "192.168.2.100", End: "192.168.2.200"},
		IPRange:        config.IPRange{Start: "192.168.2.21", End: "192.168.2.99"},
		DNS:            []string{"8.8.8.8", "8.8.4.4"},
		Router:         "192.168.2.2",
		NetworkModel:   "singlenic",
	}
}

func TestRenderShippedTemplate(t *testing.T) {
	noPXE := seedNetwork()
	noPXE.PXE = false
	noRouter := seedNetwork()
	noRouter.Router = ""
	noRouter.DNS = nil
	uefi := seedNetwork()
	uefi.UEFI = true
	proxy := seedNetwork()
	proxy.ProxyDHCP = true
	proxy.BootstrapRange = config.IPRange{}
	snp := seedNetwork()
	snp.EFIBootFile = config.SNPOnlyEFIBootFile
	secure := seedNetwork()
	secure.SecureBoot = true
	secureProxy := proxy
	secureProxy.SecureBoot = true
	arm64 := seedNetwork()
	arm64.ARM64 = true
	arm64UEFI := uefi
	arm64UEFI.ARM64 = true
	arm64Secure := arm64
	arm64Secure.SecureBoot = true
	tests := []struct {
		name    string
		network config.Network
		noTLS   bool
		port    int
	}{
		{"pxe-tls", seedNetwork(), false, 4080},
		{"pxe-notls", seedNetwork(), true, 8080},
		{"pxe-uefi", uefi, true, 4080},
		{"pxe-proxy", proxy, true, 4080},
		{"pxe-snponly", snp, true, 4080},
		{"pxe-secureboot", secure, true, 4080},
		{"pxe-proxy-secureboot", secureProxy, true, 4080},
		{"pxe-secureboot-by-profile", seedNetwork(), true, 4080},
		{"pxe-arm64", arm64, true, 4080},
		{"pxe-uefi-arm64", arm64UEFI, true, 4080},
		{"pxe-arm64-secureboot", arm64Secure, true, 4080},
		{"pxe-arm64-secureboot-by-profile", arm64, true, 4080},
		{"nopxe", noPXE, true, 4080},
		{"norouter-nodns", noRouter, true, 4080},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Config{
				Binary: "/usr/sbin/dnsmasq", Template: shippedTemplate, RuntimeDir: t.TempDir(),
				Network: tt.network, TFTPRoot: "/usr/lib/mayu/tftproot", NoTLS: tt.noTLS, HTTPPort: tt.port,
				SecureBoot: secureBootRule(tt.name),
			})
			require.NoError(t, err)
			// Host state must not show in the shipped template's output:
			// that is what keeps dnsmasq running across host changes.
			s.Sync([]host.Host{{Serial: "a", State: host.Installed, MacAddresses: []string{"00:11:22:33:44:55"}, InternalAddr: net.ParseIP("192.168.2.21")}})
			got, err := s.render()
			require.NoError(t, err)
			s.Sync(nil)
			again, err := s.render()
			require.NoError(t, err)
			assert.Equal(t, string(got), string(again), "shipped template output depends on host state")
			golden(t, filepath.Join("testdata", "shipped-"+tt.name+".conf"), got)
		})
	}
}

// secureBootRule is a profile-based rule for the test cases named
// "...-by-profile", nil (no profile asks) for the others.
func secureBootRule(name string) func(host.Host) bool {
	if !strings.HasSuffix(name, "-by-profile") {
		return nil
	}
	return func(h host.Host) bool { return h.Profile == "secure" }
}

// TestShippedTemplateAcceptedByDnsmasq runs dnsmasq --test (no root needed)
// on every rendering of the shipped template.
func TestShippedTemplateAcceptedByDnsmasq(t *testing.T) {
	bin := requireDnsmasq(t)
	noPXE := seedNetwork()
	noPXE.PXE = false
	uefi := seedNetwork()
	uefi.UEFI = true
	proxy := seedNetwork()
	proxy.ProxyDHCP = true
	proxy.BootstrapRange = config.IPRange{}
	secure := proxy
	secure.SecureBoot = true
	arm64 := seedNetwork()
	arm64.ARM64 = true
	arm64Secure := arm64
	arm64Secure.SecureBoot = true
	for name, n := range map[string]config.Network{"pxe": seedNetwork(), "nopxe": noPXE, "uefi": uefi, "proxy": proxy,
		"proxy-secureboot": secure, "secureboot-by-profile": seedNetwork(), "arm64-secureboot": arm64Secure,
		"arm64-secureboot-by-profile": arm64} {
		t.Run(name, func(t *testing.T) {
			s, err := New(Config{Binary: bin, Template: shippedTemplate, RuntimeDir: t.TempDir(),
				Network: n, TFTPRoot: "/srv/tftproot", HTTPPort: 4080, SecureBoot: secureBootRule(name)})
			require.NoError(t, err)
			require.NoError(t, s.Check())
		})
	}
}

func TestCheckReportsDnsmasqComplaint(t *testing.T) {
	bin := requireDnsmasq(t)
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "broken.conf")
	require.NoError(t, os.WriteFile(tmpl, []byte("listen-address={{.Network.BindAddr}}\nno-such-option={{.Global.HTTPPort}}\n"), 0o644))
	s, err := New(Config{Binary: bin, Template: tmpl, RuntimeDir: dir, Network: seedNetwork(), TFTPRoot: dir, HTTPPort: 4080})
	require.NoError(t, err)
	err = s.Check()
	require.ErrorIs(t, err, ErrConfigRejected)
	assert.Contains(t, err.Error(), "bad option at line 2")
	assert.Contains(t, err.Error(), `rendered line 2: "no-such-option=4080"`)
	assert.Contains(t, err.Error(), tmpl)
	// The check leaves no temporary file behind.
	left, _ := filepath.Glob(filepath.Join(dir, ".dnsmasq-check-*"))
	assert.Empty(t, left)
}

func TestTemplateErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, text string
		atNew      bool
	}{
		{"does not parse", "interface={{.Network.Interface\n", true},
		{"unknown field", "interface={{.Network.NoSuchField}}\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "t.conf")
			require.NoError(t, os.WriteFile(p, []byte(tt.text), 0o644))
			s, err := New(Config{Binary: "/bin/false", Template: p, RuntimeDir: dir, Network: seedNetwork(), TFTPRoot: dir})
			if tt.atNew {
				require.ErrorIs(t, err, ErrTemplate)
				return
			}
			require.NoError(t, err)
			require.ErrorIs(t, s.Check(), ErrTemplate)
		})
	}
	_, err := New(Config{Template: filepath.Join(dir, "missing.conf"), RuntimeDir: dir})
	require.ErrorIs(t, err, ErrTemplate)
	_, err = New(Config{})
	require.ErrorIs(t, err, ErrSettings)
}

func TestComputeHostSet(t *testing.T) {
	hosts := []host.Host{
		{Serial: "installed", State: host.Installed, MacAddresses: []string{"00:11:22:33:44:02", "00-11-22-33-44-01"}, InternalAddr: net.ParseIP("192.168.2.21")},
		{Serial: "running", State: host.Running, MacAddresses: []string{"00:11:22:33:44:03"}},
		{Serial: "configured", State: host.Configured, MacAddresses: []string{"00:11:22:33:44:04"}, InternalAddr: net.ParseIP("192.168.2.22")},
		{Serial: "installing", State: host.Installing, MacAddresses: []string{"00:11:22:33:44:05"}},
		{Serial: "fresh", State: host.Configured},
		{Serial: "broken", State: host.Installed, MacAddresses: []string{"not-a-mac"}},
	}
	set, bad := computeHostSet(hosts, func(h host.Host) bool { return h.State.IgnoredByDHCP() }, nil)
	assert.Equal(t, []string{"00:11:22:33:44:01", "00:11:22:33:44:02", "00:11:22:33:44:03"}, set.Ignored)
	// Only installed/running hosts are static: a configured host's address
	// must not appear as a dhcp-host line (see computeHostSet).
	assert.Equal(t, []StaticHost{
		{IP: "192.168.2.21", MacAddr: "00:11:22:33:44:01"},
		{IP: "192.168.2.21", MacAddr: "00:11:22:33:44:02"},
	}, set.Static)
	assert.Equal(t, []string{`broken: "not-a-mac"`}, bad)
	golden(t, filepath.Join("testdata", "hosts"), renderHostsFile(set))

	// The rule is the caller's (network.installed_boot: local ignores no
	// one): nothing ignored, nothing static, bad MACs still reported.
	set, bad = computeHostSet(hosts, func(host.Host) bool { return false }, nil)
	assert.Empty(t, set.Ignored)
	assert.Empty(t, set.Static)
	assert.Empty(t, set.SecureBoot)
	assert.Equal(t, []string{`broken: "not-a-mac"`}, bad)
}

// TestComputeHostSetSecureBoot: hosts the rule picks are tagged for the
// shim, unless DHCP ignores them (they then get no answer at all).
func TestComputeHostSetSecureBoot(t *testing.T) {
	hosts := []host.Host{
		{Serial: "sb-installing", Profile: "sb", State: host.Installing, MacAddresses: []string{"00:11:22:33:44:05"}},
		{Serial: "sb-running", Profile: "sb", State: host.Running, MacAddresses: []string{"00:11:22:33:44:06"}},
		{Serial: "plain", Profile: "default", State: host.Configured, MacAddresses: []string{"00:11:22:33:44:07"}},
	}
	sb := func(h host.Host) bool { return h.Profile == "sb" }
	set, bad := computeHostSet(hosts, func(h host.Host) bool { return h.State.IgnoredByDHCP() }, sb)
	assert.Empty(t, bad)
	assert.Equal(t, []string{"00:11:22:33:44:06"}, set.Ignored)
	assert.Equal(t, []string{"00:11:22:33:44:05"}, set.SecureBoot)
	assert.Equal(t, "# Written by mayu from the host records; rewritten on every change. Do not edit.\n"+
		"00:11:22:33:44:06,ignore\n00:11:22:33:44:05,set:secureboot\n", string(renderHostsFile(set)))

	// installed_boot local: the running machine is answered, with the shim.
	set, _ = computeHostSet(hosts, func(host.Host) bool { return false }, sb)
	assert.Equal(t, []string{"00:11:22:33:44:05", "00:11:22:33:44:06"}, set.SecureBoot)
	assert.False(t, set.equal(hostSet{Ignored: set.Ignored, Static: set.Static}), "a change of tags is a change")
}

// TestLegacyTemplateSeesHosts: a Mayu 0.11 template that ranges over the
// host lists gets them filled.
func TestLegacyTemplateSeesHosts(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "legacy.conf")
	require.NoError(t, os.WriteFile(p, []byte(legacyTemplate), 0o644))
	s, err := New(Config{Template: p, RuntimeDir: dir, Network: seedNetwork(), TFTPRoot: "/srv/tftproot", HTTPPort: 4080})
	require.NoError(t, err)
	s.Sync([]host.Host{
		{Serial: "a", State: host.Installed, MacAddresses: []string{"00:11:22:33:44:01"}, InternalAddr: net.ParseIP("192.168.2.21")},
		{Serial: "b", State: host.Configured, MacAddresses: []string{"00:11:22:33:44:02"}},
	})
	got, err := s.render()
	require.NoError(t, err)
	golden(t, filepath.Join("testdata", "legacy.conf"), got)
}

// legacyTemplate is the Mayu 0.11 shipped template.
const legacyTemplate = `interface={{.Network.Interface}}
listen-address={{.Network.BindAddr}}
bind-interfaces
except-interface=lo
{{if .Network.Router}}dhcp-option=option:router,{{.Network.Router}}{{end}}
dhcp-option=option:dns-server{{ range $dns := .Network.DNS}},{{$dns}}{{end}}
{{if .Network.PXE}}enable-tftp
dhcp-range={{.Network.BootstrapRange.Start}},{{.Network.BootstrapRange.End}},1m
tftp-root={{.Global.TFTPRoot}}
dhcp-match=set:ipxe,175
dhcp-vendorclass=set:pxe,PXEClient
dhcp-boot=tag:!ipxe,undionly.kpxe
dhcp-boot=tag:ipxe,http{{if not .Global.NoTLS}}s{{end}}://{{.Network.BindAddr}}:{{.Global.HTTPPort}}/ipxebootscript
{{end}}
{{range $ignoredHost := .Network.IgnoredHosts}}dhcp-mac=set:installed,{{$ignoredHost}}
{{end}}dhcp-ignore=tag:installed
{{range $staticHost := .Network.StaticHosts}}dhcp-host={{$staticHost.MacAddr}},{{$staticHost.IP}}
{{end}}`

func TestGlobalContext(t *testing.T) {
	tests := []struct {
		name             string
		network          func(*config.Network)
		noTLS            bool
		bootPort         int
		pxe, script, efi string
		httpBoot         string
	}{
		{"defaults, TLS", func(*config.Network) {}, false, 0, "undionly.kpxe",
			"https://192.168.2.2:4080/ipxebootscript", "ipxe.efi", "https://192.168.2.2:4080/tftproot/ipxe.efi"},
		{"no TLS, snponly", func(n *config.Network) { n.EFIBootFile = "snponly.efi" }, true, 0, "undionly.kpxe",
			"http://192.168.2.2:4080/ipxebootscript", "snponly.efi", "http://192.168.2.2:4080/tftproot/snponly.efi"},
		{"boot port", func(*config.Network) {}, false, 8081, "undionly.kpxe",
			"http://192.168.2.2:8081/ipxebootscript", "ipxe.efi", "http://192.168.2.2:8081/tftproot/ipxe.efi"},
		{"network.uefi: 0.11 templates' PXEFile is the EFI binary", func(n *config.Network) { n.UEFI = true; n.EFIBootFile = "snponly.efi" },
			true, 0, "snponly.efi", "http://192.168.2.2:4080/ipxebootscript", "snponly.efi", "http://192.168.2.2:4080/tftproot/snponly.efi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := seedNetwork()
			tt.network(&n)
			s, err := New(Config{Template: shippedTemplate, RuntimeDir: t.TempDir(), Network: n, TFTPRoot: "/srv/tftproot",
				NoTLS: tt.noTLS, HTTPPort: 4080, BootPort: tt.bootPort})
			require.NoError(t, err)
			g := s.global(n)
			assert.Equal(t, tt.pxe, g.PXEFile)
			assert.Equal(t, tt.script, g.BootScriptURL)
			assert.Equal(t, "undionly.kpxe", g.BIOSBootFile)
			assert.Equal(t, tt.efi, g.EFIBootFile)
			assert.Equal(t, tt.httpBoot, g.HTTPBootURL)
		})
	}
}

func TestPXEServiceFile(t *testing.T) {
	for val, want := range map[string]string{
		`tag:!ipxe,x86PC,"mayu: iPXE (BIOS)",undionly.kpxe`: "undionly.kpxe",
		`x86PC,"Boot",pxelinux`:                             "pxelinux.0",
		`x86PC,"Boot from disk"`:                            "",
		`x86PC,"Search",1`:                                  "",
		`x86PC,"Elsewhere",pxelinux,10.0.0.1`:               "",
	} {
		got, ok := pxeServiceFile(val)
		assert.Equal(t, want != "", ok, val)
		assert.Equal(t, want, got, val)
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create %s", path)
	assert.Equal(t, string(want), string(got), "output differs from %s (go test -update rewrites it)", path)
}

// requireDnsmasq returns the dnsmasq binary, or skips the test loudly when
// it is missing (fails when MAYU_E2E=required).
func requireDnsmasq(t *testing.T) string {
	t.Helper()
	proctest.RequireFile(t, DefaultBinary, "dnsmasq-base")
	return DefaultBinary
}

// With a boot port (mayu --boot-http-port) iPXE is sent to the plain-HTTP
// boot script, whatever the TLS setting of the main port.
func TestBootScriptURLOfBootPort(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Config{Binary: "/bin/false", Template: shippedTemplate, RuntimeDir: dir, Network: seedNetwork(), TFTPRoot: dir,
		HTTPPort: 4080, BootPort: 4081})
	require.NoError(t, err)
	assert.Equal(t, "http://"+seedNetwork().BindAddr+":4081/ipxebootscript", s.global(seedNetwork()).BootScriptURL)
	s, err = New(Config{Binary: "/bin/false", Template: shippedTemplate, RuntimeDir: dir, Network: seedNetwork(), TFTPRoot: dir,
		HTTPPort: 4080})
	require.NoError(t, err)
	assert.Equal(t, "https://"+seedNetwork().BindAddr+":4080/ipxebootscript", s.global(seedNetwork()).BootScriptURL)
}
