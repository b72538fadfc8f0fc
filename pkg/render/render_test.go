package render

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	ign "github.com/coreos/ignition/v2/config/v3_4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"mayu/pkg/config"
	"mayu/pkg/host"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const repoRoot = "../.."

// shipped is the Config of the templates this repository ships. The
// first-stage script comes from templates/ when it is there (another part
// of the project writes it) and from testdata otherwise.
func shipped(t testing.TB, useIgnition bool) Config {
	t.Helper()
	first := filepath.Join(repoRoot, "templates/first_stage_script.sh")
	if _, err := os.Stat(first); err != nil {
		t.Logf("templates/first_stage_script.sh not there (%v): using testdata/first_stage_script.sh", err)
		first = "testdata/first_stage_script.sh"
	}
	snippets := filepath.Join(repoRoot, "template_snippets/cloudconfig")
	if useIgnition {
		snippets = filepath.Join(repoRoot, "template_snippets/ignition")
	}
	return Config{
		FirstStageScript:     first,
		LastStageCloudConfig: filepath.Join(repoRoot, "templates/last_stage_cloudconfig.yaml"),
		IgnitionConfig:       filepath.Join(repoRoot, "templates/ignition/gs_install.yaml"),
		Snippets:             snippets,
		UseIgnition:          useIgnition,
	}
}

func newShipped(t *testing.T, useIgnition bool) *Renderer {
	t.Helper()
	r, err := New(shipped(t, useIgnition))
	require.NoError(t, err)
	return r
}

// network is the seed's provisioning LAN.
func network(model string) config.Network {
	return config.Network{
		PXE:            true,
		Interface:      "eth1",
		BindAddr:       "192.168.2.2",
		BootstrapRange: config.IPRange{Start: "192.168.2.100", End: "192.168.2.200"},
		IPRange:        config.IPRange{Start: "192.168.2.21", End: "192.168.2.99"},
		DNS:            []string{"8.8.8.8", "8.8.4.4"},
		Router:         "192.168.2.2",
		NetworkModel:   model,
	}
}

func baseEnv() map[string]interface{} {
	return map[string]interface{}{
		"ssh_authorized_keys": []interface{}{
			"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGNvcmUtb3BzLWtleS1mb3ItdGVzdHMtb25seQ ops@example",
		},
		"mayu_http_endpoint": "http://192.168.2.2:4080",
	}
}

// testCA stands for mayu's CA certificate in the final configs of TLS
// cases (the templates place it, they do not parse it).
const testCA = "-----BEGIN CERTIFICATE-----\nMIIBdTCCARugAwIBAgIBATAKBggqhkjOPQQDAjAUMRIwEAYDVQQDEwltYXl1IHRl\nc3QwHhcNMjYwMTAxMDAwMDAwWhcNMjcwMTAxMDAwMDAwWjAUMRIwEAYDVQQDEwlt\n-----END CERTIFICATE-----\n"

func finalData(h host.Host, n config.Network, env map[string]interface{}, noTLS bool) FinalData {
	scheme, ca := "https", testCA
	if noTLS {
		scheme, ca = "http", ""
	}
	base := scheme + "://192.168.2.2:4080"
	return FinalData{
		Host:             h,
		EtcdDiscoveryUrl: base + "/etcd/" + h.EtcdClusterToken,
		ClusterNetwork:   n,
		MayuHost:         "192.168.2.2",
		MayuPort:         4080,
		MayuURL:          base,
		NoTLS:            noTLS,
		CACert:           ca,
		PostBootURL:      base + "/admin/host/" + h.Serial + "/boot_complete",
		TemplatesEnv:     env,
	}
}

// goldenCase is one realistic machine. Each runs through the cloud-config
// and the Ignition template.
type goldenCase struct {
	name      string
	data      FinalData
	wantUnits []string // units (cloud-config) that must be there
	noUnits   []string // and units that must not
}

func goldenCases() []goldenCase {
	core := host.Host{
		Enabled: true, Serial: "vm-core-1", MacAddresses: []string{"52:54:00:12:34:01", "52:54:00:12:34:02"},
		InternalAddr: net.ParseIP("192.168.2.21").To4(), BondInterfaces: []string{"eno1", "eno2"},
		IPMIAddr: net.ParseIP("10.0.0.21").To4(), Hostname: "1a2b3c4d5e6f7081", MachineID: "1a2b3c4d5e6f70811a2b3c4d5e6f7081",
		ConnectedNIC: "eno1", FleetMetadata: host.FleetMeta{"role-core=true", "Quobyte=True"},
		Profile: "core-services", EtcdClusterToken: "41f07d10ab835b22071a32d5c1b75a6d", State: host.Installing,
		Overrides: map[string]interface{}{"quobyte_data_device": "/dev/sdc"},
	}
	yochuEnv := baseEnv()
	yochuEnv["yochu_version"] = "0.19.1"
	yochuEnv["docker_version"] = "1.12.6"
	yochuEnv["etcd_version"] = "v2.2.5-gs-1"
	yochuEnv["fleet_version"] = "v0.11.5-gs-2"

	worker := host.Host{
		Enabled: true, Serial: "vm-worker-7", MacAddresses: []string{"52:54:00:ab:cd:07"},
		InternalAddr: net.ParseIP("192.168.2.27").To4(), Hostname: "77aa88bb99cc00dd", MachineID: "77aa88bb99cc00dd77aa88bb99cc00dd",
		ConnectedNIC: "enp3s0", FleetMetadata: host.FleetMeta{"role-worker=true"}, FleetDisableEngine: true,
		Profile: "default", EtcdClusterToken: "0123456789abcdef0123456789abcdef", State: host.Installing,
		Overrides: map[string]interface{}{"yochu_version": "0.20.0"},
	}
	bridgeNet := network("bridge")
	bridgeNet.SubnetSize = "255.255.255.0"
	bridgeNet.SubnetGateway = "192.168.2.1"
	bridgeNet.NTP = []string{"192.168.2.2"}

	return []goldenCase{
		{
			name:      "placeholder",
			data:      finalData(PlaceholderHost(), network("singlenic"), baseEnv(), false),
			wantUnits: []string{"10-mayu-static.network", "etcd2.service", "fleet.service", "mayuctl-fetch.service", "mayu-boot-complete.service"},
			noUnits:   []string{"yochu.service", "quobyte-data-mkfs.service", "var-lib-quobyte-devices-data0.mount"},
		},
		{
			name:      "core-bond-quobyte-yochu",
			data:      finalData(core, network("bond"), yochuEnv, true),
			wantUnits: []string{"10-mayu-bond0.netdev", "20-mayu-bond0-ports.network", "30-mayu-bond0.network", "yochu.service", "quobyte-data-mkfs.service", "var-lib-quobyte-devices-data0.mount"},
			noUnits:   []string{"10-mayu-static.network"},
		},
		{
			name:      "worker-bridge-override",
			data:      finalData(worker, bridgeNet, baseEnv(), false),
			wantUnits: []string{"10-mayu-br0.netdev", "20-mayu-br0-port.network", "30-mayu-br0.network", "yochu.service"},
			noUnits:   []string{"quobyte-data-mkfs.service", "10-mayu-static.network"},
		},
	}
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "missing golden file; run go test ./pkg/render -update")
	assert.Equal(t, string(want), string(got), "output differs from %s; if the change is intended run go test ./pkg/render -update", path)
}

func TestFinalCloudConfigGolden(t *testing.T) {
	r := newShipped(t, false)
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			out, err := r.Final(tc.data)
			require.NoError(t, err)
			checkGolden(t, tc.name+".cloudconfig.golden", out)

			var doc struct {
				Hostname          string   `yaml:"hostname"`
				SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
				CoreOS            struct {
					Etcd2 map[string]string `yaml:"etcd2"`
					Fleet struct {
						Metadata      string `yaml:"metadata"`
						DisableEngine bool   `yaml:"disable_engine"`
					} `yaml:"fleet"`
					Units []struct {
						Name    string `yaml:"name"`
						Content string `yaml:"content"`
					} `yaml:"units"`
				} `yaml:"coreos"`
			}
			require.NoError(t, yaml.Unmarshal(out, &doc))
			h := tc.data.Host
			assert.Equal(t, h.Hostname, doc.Hostname)
			assert.Equal(t, []string{baseEnv()["ssh_authorized_keys"].([]interface{})[0].(string)}, doc.SSHAuthorizedKeys)
			assert.Equal(t, tc.data.EtcdDiscoveryUrl, doc.CoreOS.Etcd2["discovery"])
			assert.Equal(t, h.FleetMetadata.String(), doc.CoreOS.Fleet.Metadata)
			assert.Equal(t, h.FleetDisableEngine, doc.CoreOS.Fleet.DisableEngine)
			units := map[string]string{}
			for _, u := range doc.CoreOS.Units {
				units[u.Name] = u.Content
			}
			for _, u := range tc.wantUnits {
				assert.Contains(t, units, u)
			}
			for _, u := range tc.noUnits {
				assert.NotContains(t, units, u)
			}
			boot := units["mayu-boot-complete.service"]
			assert.Contains(t, boot, "--host=192.168.2.2 --port=4080 ")
			assert.Equal(t, tc.data.NoTLS, strings.Contains(boot, "--no-tls"))
			checkTLSTrust(t, tc.data, string(out), boot, caFileOfCloudConfig(t, out))
			assert.Contains(t, boot, "boot-complete --update-versions")
			assert.Contains(t, units["mayuctl-fetch.service"], tc.data.MayuURL+"/mayuctl")
		})
	}
}

// checkTLSTrust: with TLS the final config checks mayu's certificate
// against the CA it places in /etc/ssl/certs/mayu-ca.pem (mayuctl
// --ca-file, curl --cacert) and never skips the check; without TLS there
// is no CA file.
func checkTLSTrust(t *testing.T, d FinalData, out, bootUnit, caFile string) {
	t.Helper()
	assert.NotContains(t, out, "--insecure")
	assert.Equal(t, d.CACert, caFile, "the CA file holds .CACert")
	if d.NoTLS {
		return
	}
	assert.Contains(t, bootUnit, "--ca-file=/etc/ssl/certs/mayu-ca.pem boot-complete")
	assert.Contains(t, out, "--cacert /etc/ssl/certs/mayu-ca.pem --output /opt/bin/mayuctl.part")
}

// caFileOfCloudConfig is the content of write_files' /etc/ssl/certs/mayu-ca.pem.
func caFileOfCloudConfig(t *testing.T, out []byte) string {
	t.Helper()
	var doc struct {
		WriteFiles []struct{ Path, Content string } `yaml:"write_files"`
	}
	require.NoError(t, yaml.Unmarshal(out, &doc))
	for _, f := range doc.WriteFiles {
		if f.Path == "/etc/ssl/certs/mayu-ca.pem" {
			return f.Content
		}
	}
	return ""
}

func TestFinalIgnitionGolden(t *testing.T) {
	r := newShipped(t, true)
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			out, err := r.Final(tc.data)
			require.NoError(t, err)
			checkGolden(t, tc.name+".ignition.golden.json", out)

			cfg, rpt, err := ign.Parse(out)
			require.NoError(t, err, "%s", rpt)
			assert.Equal(t, IgnitionSpec, cfg.Ignition.Version)
			require.Len(t, cfg.Passwd.Users, 1)
			assert.Equal(t, "core", cfg.Passwd.Users[0].Name)
			assert.Len(t, cfg.Passwd.Users[0].SSHAuthorizedKeys, 1)

			files := map[string]string{}
			for _, f := range cfg.Storage.Files {
				require.NotNil(t, f.Contents.Source, f.Path)
				files[f.Path] = decodeDataURL(t, *f.Contents.Source)
			}
			h := tc.data.Host
			assert.Equal(t, h.Hostname+"\n", files["/etc/hostname"])
			assert.Contains(t, files["/etc/mayu/host-env"], "MAYU_METADATA="+h.FleetMetadata.String()+"\n")
			var address string
			for path, body := range files {
				if strings.HasPrefix(path, "/etc/systemd/network/") && strings.Contains(body, "Address=") {
					address = body
				}
			}
			assert.Contains(t, address, "Address="+h.InternalAddr.String()+"/24\n")
			assert.Contains(t, address, "DNS=8.8.8.8\nDNS=8.8.4.4\n")

			units := map[string]string{}
			for _, u := range cfg.Systemd.Units {
				c := ""
				if u.Contents != nil {
					c = *u.Contents
				}
				units[u.Name] = c
			}
			for _, u := range tc.wantUnits {
				switch u {
				case "etcd2.service": // Flatcar runs etcd as etcd-member and has no fleet
					u = "etcd-member.service"
				case "fleet.service":
					continue
				}
				if strings.HasSuffix(u, ".network") || strings.HasSuffix(u, ".netdev") {
					assert.Contains(t, files, "/etc/systemd/network/"+u)
					continue
				}
				assert.Contains(t, units, u)
			}
			for _, u := range tc.noUnits {
				assert.NotContains(t, units, u)
				assert.NotContains(t, files, "/etc/systemd/network/"+u)
			}
			assert.Contains(t, units["mayu-boot-complete.service"], "boot-complete --update-versions")
			checkTLSTrust(t, tc.data, string(out), units["mayu-boot-complete.service"], files["/etc/ssl/certs/mayu-ca.pem"])
			assert.NotContains(t, string(out), "no%20value", "a missing templates_env key leaked into file contents")
		})
	}
}

// decodeDataURL reads the percent-encoded data URLs dataurl writes.
func decodeDataURL(t *testing.T, s string) string {
	t.Helper()
	body, ok := strings.CutPrefix(s, "data:,")
	require.True(t, ok, "not a plain data URL: %s", s)
	d, err := url.PathUnescape(body)
	require.NoError(t, err)
	return d
}

func TestShowTemplatesShipped(t *testing.T) {
	for _, useIgnition := range []bool{false, true} {
		cfg := shipped(t, useIgnition)
		cfg.MayuVersion = "9.8.7-test"
		r, err := New(cfg)
		require.NoError(t, err)
		var buf bytes.Buffer
		require.NoError(t, r.ShowTemplates(&buf, finalData(PlaceholderHost(), network("singlenic"), baseEnv(), false)))
		out := buf.String()
		assert.Contains(t, out, "# ---- first-stage script (first_stage_script.sh) ----\n#!")
		assert.Contains(t, out, "9.8.7-test")
		assert.Contains(t, out, "https://192.168.2.2:4080/images/placeholder-serial/install_image.bin.bz2")
		if useIgnition {
			assert.Contains(t, out, "# ---- final config (gs_install.yaml) ----\n{")
			assert.Contains(t, out, "https://192.168.2.2:4080/final-ignition-config.json")
		} else {
			assert.Contains(t, out, "# ---- final config (last_stage_cloudconfig.yaml) ----\n#cloud-config\n")
			assert.Contains(t, out, "https://192.168.2.2:4080/final-cloud-config.yaml")
		}
	}
}

func TestFirstStage(t *testing.T) {
	r := newShipped(t, false)
	d := FirstStageData{
		HostInfoHelperURL: "https://192.168.2.2:4080/hostinfo-helper",
		CloudConfigURL:    "https://192.168.2.2:4080/final-cloud-config.yaml",
		InstallImageURL:   "https://192.168.2.2:4080/images/vm-1/install_image.bin.bz2",
		SetInstalledURL:   "https://192.168.2.2:4080/admin/host/__SERIAL__/set_installed",
		MayuURL:           "https://192.168.2.2:4080",
		MayuVersion:       "1.2.3",
		MachineID:         "00112233445566778899aabbccddeeff",
		MachineToken:      strings.Repeat("ab", 32),
		CACert:            testCA,
	}
	out, err := r.FirstStage(d)
	require.NoError(t, err)
	assert.True(t, bytes.HasPrefix(out, []byte("#!")))
	for _, v := range []string{d.HostInfoHelperURL, d.CloudConfigURL, d.InstallImageURL, d.SetInstalledURL, d.MayuVersion, d.MachineID,
		"MACHINE_TOKEN=" + d.MachineToken, "MAYU_CA_CERT_B64=" + base64.StdEncoding.EncodeToString([]byte(testCA))} {
		assert.Contains(t, string(out), v)
	}
	assert.NotContains(t, string(out), "--insecure")
	// The testdata stand-in must keep working too, whichever the shipped one.
	cfg := shipped(t, false)
	cfg.FirstStageScript = "testdata/first_stage_script.sh"
	r2, err := New(cfg)
	require.NoError(t, err)
	out, err = r2.FirstStage(d)
	require.NoError(t, err)
	assert.Contains(t, string(out), `machine_id="00112233445566778899aabbccddeeff"`)
}

// The first-stage cloud-config is not rendered by mayu (fetch-coreos-image
// bakes it into the initrd as it is) but it must still be a cloud-config.
func TestFirstStageCloudConfigShipped(t *testing.T) {
	path := filepath.Join(repoRoot, "templates/first_stage_cloudconfig.yaml")
	b, err := os.ReadFile(path)
	require.NoError(t, err, "the repository ships it")
	require.NoError(t, validateCloudConfig(b))
}

func TestOverridesNeverLeak(t *testing.T) {
	for _, useIgnition := range []bool{false, true} {
		r := newShipped(t, useIgnition)
		env := baseEnv()
		env["nested"] = map[string]interface{}{"list": []interface{}{"a"}}
		before := deepCopy(t, env)

		a := PlaceholderHost()
		a.Serial, a.Hostname = "host-a", "aaaaaaaaaaaaaaaa"
		a.FleetMetadata = host.FleetMeta{"quobyte=true"}
		a.Overrides = map[string]interface{}{
			"yochu_version":       "9.9.9-only-a",
			"quobyte_data_device": "/dev/only-a",
			"nested":              map[string]interface{}{"list": []interface{}{"only-a"}},
		}
		b := PlaceholderHost()
		b.Serial, b.Hostname = "host-b", "bbbbbbbbbbbbbbbb"
		b.FleetMetadata = host.FleetMeta{"quobyte=true"}

		outA, err := r.Final(finalData(a, network("singlenic"), env, false))
		require.NoError(t, err)
		outB, err := r.Final(finalData(b, network("singlenic"), env, false))
		require.NoError(t, err)

		assert.Contains(t, string(outA), "9.9.9-only-a")
		assert.Contains(t, string(outA), "/dev/only-a")
		assert.NotContains(t, string(outB), "only-a", "host A's overrides leaked into host B")
		assert.Contains(t, string(outB), "/dev/sdb")
		assert.Equal(t, before, env, "Final changed the shared templates_env")
		assert.Equal(t, "9.9.9-only-a", a.Overrides["yochu_version"], "Final changed the caller's host")
	}
}

func deepCopy(t *testing.T, m map[string]interface{}) map[string]interface{} {
	t.Helper()
	c := host.Host{Overrides: m}.Clone().Overrides
	require.True(t, reflect.DeepEqual(m, c))
	return c
}

// writeTemplates lays out a template tree in a temp dir and returns its
// Config; files maps relative paths to content.
func writeTemplates(t *testing.T, useIgnition bool, files map[string]string) Config {
	t.Helper()
	dir := t.TempDir()
	base := map[string]string{
		"first.sh":                 "#!/bin/sh\necho {{.MachineID}}\n",
		"final.yaml":               "#cloud-config\nhostname: {{.Host.Hostname}}\n",
		"ignition.yaml":            "ignition:\n  version: 3.4.0\n",
		"snippets/.keep-dir.yaml~": "",
	}
	for k, v := range files {
		base[k] = v
	}
	for name, content := range base {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	return Config{
		FirstStageScript:     filepath.Join(dir, "first.sh"),
		LastStageCloudConfig: filepath.Join(dir, "final.yaml"),
		IgnitionConfig:       filepath.Join(dir, "ignition.yaml"),
		Snippets:             filepath.Join(dir, "snippets"),
		UseIgnition:          useIgnition,
	}
}

func TestNewReportsEveryBrokenTemplate(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error
	}{
		{
			name:  "broken final template",
			files: map[string]string{"final.yaml": "#cloud-config\nhostname: {{.Host.Hostname\n"},
			want:  []string{"final.yaml", "unclosed action"},
		},
		{
			name: "broken first stage and two broken snippets",
			files: map[string]string{
				"first.sh":           "#!/bin/sh\n{{if .MachineID}}\n",
				"snippets/a.yaml":    `{{define "a"}}{{.Host.Hostname}{{end}}`,
				"snippets/b.tmpl":    `{{define "b"}}{{nosuchfunc .}}{{end}}`,
				"snippets/fine.yaml": `{{define "fine"}}ok{{end}}`,
			},
			want: []string{"first.sh", "a.yaml", "b.tmpl", `function "nosuchfunc" not defined`},
		},
		{
			name:  "snippet used but not defined",
			files: map[string]string{"final.yaml": "#cloud-config\n{{template \"net_bond\" .}}\n"},
			want:  []string{"final.yaml", `"net_bond", which no template or snippet defines`},
		},
		{
			name:  "include of an undefined template",
			files: map[string]string{"snippets/s.yaml": `{{define "s"}}{{include "nowhere" .}}{{end}}`},
			want:  []string{`"nowhere", which no template or snippet defines`},
		},
		{
			name:  "include with a computed name",
			files: map[string]string{"snippets/s.yaml": `{{define "s"}}{{include .Host.Hostname .}}{{end}}`},
			want:  []string{"must be a quoted constant"},
		},
		{
			name: "include cycle",
			files: map[string]string{
				"snippets/s.yaml": `{{define "s"}}{{template "t" .}}{{end}}{{define "t"}}{{include "s" .}}{{end}}`,
			},
			want: []string{"include cannot recurse"},
		},
		{
			name:  "empty final template",
			files: map[string]string{"final.yaml": " \n"},
			want:  []string{"final.yaml: file is empty"},
		},
		{
			name:  "missing final template",
			files: map[string]string{},
			want:  []string{"nope.yaml"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeTemplates(t, false, tc.files)
			if tc.name == "missing final template" {
				cfg.LastStageCloudConfig = filepath.Join(filepath.Dir(cfg.LastStageCloudConfig), "nope.yaml")
			}
			_, err := New(cfg)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrParse)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestMissingSnippetDirIsAnError(t *testing.T) {
	cfg := writeTemplates(t, false, nil)
	cfg.Snippets = filepath.Join(cfg.Snippets, "absent")
	_, err := New(cfg)
	require.ErrorIs(t, err, ErrParse)
	assert.Contains(t, err.Error(), "absent")
}

func TestFinalErrors(t *testing.T) {
	tests := []struct {
		name        string
		useIgnition bool
		final       string
		want        string
	}{
		{"struct field typo fails loudly", false, "#cloud-config\nhostname: {{.Host.Hostnme}}\n", "can't evaluate field Hostnme"},
		{"no cloud-config header", false, "hostname: {{.Host.Hostname}}\n", "must start with a #cloud-config line"},
		{"cloud-config not YAML", false, "#cloud-config\nhostname: [{{.Host.Hostname}}\n", "not valid YAML"},
		{"cloud-config not a mapping", false, "#cloud-config\n- {{.Host.Hostname}}\n", "must be a YAML mapping"},
		{"fail function", false, "#cloud-config\n{{fail \"no bond here\"}}\n", "no bond here"},
		{"ignition unknown version", true, "ignition:\n  version: 9.9.9\n", "invalid Ignition config"},
		{"ignition relative file path", true, "ignition:\n  version: 3.4.0\nstorage:\n  files:\n    - path: etc/hostname\n", "path not absolute"},
		{"ignition bad unit", true, "ignition:\n  version: 3.4.0\nsystemd:\n  units:\n    - name: x.service\n      contents: \"[Unit\"\n", "invalid Ignition config"},
		{"ignition not YAML", true, "ignition: [\n", "not valid YAML"},
		{"ignition non-string key", true, "ignition:\n  version: 3.4.0\n  1: x\n", "map key 1 is not a string"},
		{"ignition scalar", true, "just text\n", "must be a YAML mapping"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"final.yaml": tc.final}
			if tc.useIgnition {
				files = map[string]string{"ignition.yaml": tc.final}
			}
			r, err := New(writeTemplates(t, tc.useIgnition, files))
			require.NoError(t, err)
			var out []byte
			require.NotPanics(t, func() {
				out, err = r.Final(finalData(PlaceholderHost(), network("singlenic"), baseEnv(), false))
			})
			require.Error(t, err)
			assert.Nil(t, out)
			assert.ErrorIs(t, err, ErrRender)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "\n", "the API answers the error as one line")
		})
	}
}

func TestTemplatesEnvMissingKeysRenderEmpty(t *testing.T) {
	final := "#cloud-config\n" +
		"a: \"{{.TemplatesEnv.absent}}\"\n" +
		"b: \"{{.TemplatesEnv.absent.deeper}}\"\n" +
		"c: \"{{index .TemplatesEnv \"absent\"}}\"\n" +
		"d: \"{{.TemplatesEnv.absent | default \"fallback\"}}\"\n" +
		"e: \"{{range .TemplatesEnv.absent}}x{{end}}\"\n" +
		"f: \"{{if .TemplatesEnv.absent}}set{{else}}unset{{end}}\"\n" +
		"g: \"{{.TemplatesEnv.present}}\"\n" +
		"h: \"{{.TemplatesEnv.nothing}}\"\n" +
		"i: \"{{include \"inc\" . | dataurl}}\"\n" +
		"j: \"{{b64 .TemplatesEnv.absent}}\"\n" +
		"k: {{quote .TemplatesEnv.absent}}\n"
	r, err := New(writeTemplates(t, false, map[string]string{
		"final.yaml":      final,
		"snippets/i.yaml": `{{define "inc"}}x={{.TemplatesEnv.absent}};{{end}}`,
	}))
	require.NoError(t, err)
	env := map[string]interface{}{"present": "here", "nothing": nil}
	out, err := r.Final(finalData(PlaceholderHost(), network("singlenic"), env, false))
	require.NoError(t, err)
	assert.Equal(t, "#cloud-config\na: \"\"\nb: \"\"\nc: \"\"\nd: \"fallback\"\ne: \"\"\nf: \"unset\"\ng: \"here\"\nh: \"\"\ni: \"data:,x=;\"\nj: \"\"\nk: \"\"\n", string(out))
}

func TestFleetMetadataHasInSnippet(t *testing.T) {
	files := map[string]string{
		"final.yaml":            "#cloud-config\nmetadata: \"{{.Host.FleetMetadata}}\"\n{{template \"storage\" .}}\n",
		"snippets/storage.yaml": `{{define "storage"}}{{if .Host.FleetMetadata.Has "quobyte=true"}}storage: data-disk{{else}}storage: none{{end}}{{end}}`,
	}
	r, err := New(writeTemplates(t, false, files))
	require.NoError(t, err)
	tests := []struct {
		tags host.FleetMeta
		want string
	}{
		{host.FleetMeta{"role-core=true", "QUOBYTE=TRUE"}, "#cloud-config\nmetadata: \"role-core=true,QUOBYTE=TRUE\"\nstorage: data-disk\n"},
		{host.FleetMeta{"quobyte=false"}, "#cloud-config\nmetadata: \"quobyte=false\"\nstorage: none\n"},
		{nil, "#cloud-config\nmetadata: \"\"\nstorage: none\n"},
	}
	for _, tc := range tests {
		h := PlaceholderHost()
		h.FleetMetadata = tc.tags
		out, err := r.Final(finalData(h, network("singlenic"), nil, false))
		require.NoError(t, err)
		assert.Equal(t, tc.want, string(out))
	}
}

func TestFirstStageMustBeAScript(t *testing.T) {
	r, err := New(writeTemplates(t, false, map[string]string{"first.sh": "echo {{.MachineID}}\n"}))
	require.NoError(t, err)
	_, err = r.FirstStage(FirstStageData{MachineID: "x"})
	require.ErrorIs(t, err, ErrRender)
	assert.Contains(t, err.Error(), "#!")

	r, err = New(writeTemplates(t, false, map[string]string{"first.sh": "#!/bin/sh\n{{.Serial}}\n"}))
	require.NoError(t, err)
	_, err = r.FirstStage(FirstStageData{})
	require.ErrorIs(t, err, ErrRender)
	assert.Contains(t, err.Error(), "can't evaluate field Serial")
}

func TestShowTemplatesReportsFailures(t *testing.T) {
	r, err := New(writeTemplates(t, true, map[string]string{"ignition.yaml": "ignition:\n  version: 1.0.0\n"}))
	require.NoError(t, err)
	var buf bytes.Buffer
	err = r.ShowTemplates(&buf, finalData(PlaceholderHost(), network("singlenic"), nil, true))
	require.ErrorIs(t, err, ErrRender)
	assert.Contains(t, err.Error(), "ignition.yaml")
	assert.Empty(t, buf.String(), "nothing is printed when a template fails")
}

// Renders run concurrently with reloads; -race checks the swap.
func TestConcurrentRendersAndReloads(t *testing.T) {
	r := newShipped(t, true)
	d := finalData(PlaceholderHost(), network("bond"), baseEnv(), false)
	want, err := r.Final(d)
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				out, err := r.Final(d)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(out, want) {
					errs <- errors.New("concurrent render differs")
					return
				}
			}
		}()
	}
	for i := 0; i < 3; i++ {
		require.NoError(t, r.Reload())
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkFinal is the cost of one final-config render with the shipped
// templates, the part of POST /final-*-config that does not touch the store.
func BenchmarkFinal(b *testing.B) {
	for _, useIgnition := range []bool{false, true} {
		name := "cloudconfig"
		if useIgnition {
			name = "ignition"
		}
		b.Run(name, func(b *testing.B) {
			r, err := New(shipped(b, useIgnition))
			if err != nil {
				b.Fatal(err)
			}
			c := goldenCases()[1]
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := r.Final(c.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
