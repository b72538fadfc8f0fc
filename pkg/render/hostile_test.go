package render

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	ign "github.com/coreos/ignition/v2/config/v3_4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"mayu/pkg/host"
)

// hostile is one legal value that breaks naive rendering in every context
// the shipped templates have: YAML (quotes, "#", ": ", leading "*", "&",
// "!"), shell ($(), backticks, ';', quotes), systemd (%-specifiers, $VAR,
// backslashes, white space).
const hostile = `*it's "x" #c: $(touch /tmp/pwned) ` + "`id`" + ` ;&!{} %n ${HOME} $$ a\b`

// hostileData puts hostile values into every per-host and operator value a
// shipped template prints: the record's text fields, templates_env (as an
// override, the attacker's way in) and the discovery URL.
func hostileData(noTLS bool) FinalData {
	h := host.Host{
		Enabled: true, Serial: "vm-hostile", MacAddresses: []string{"52:54:00:12:34:99"},
		InternalAddr: net.ParseIP("192.168.2.30").To4(),
		Hostname:     "h-" + hostile, MachineID: "99aa88bb99cc00dd99aa88bb99cc00dd",
		ConnectedNIC: "nic " + hostile, BondInterfaces: []string{"b0 " + hostile, "b1"},
		FleetMetadata: host.FleetMeta{"quobyte=true", "m=" + hostile},
		Profile:       "p-" + hostile, EtcdClusterToken: "t", ProviderId: "prov-" + hostile,
		Overrides: map[string]interface{}{
			"ssh_authorized_keys": []interface{}{"ssh-ed25519 AAAA " + hostile, "&anchor !tag *alias"},
			"yochu_version":       "y-" + hostile,
			"docker_version":      "d-" + hostile,
			"etcd_version":        "e-" + hostile,
			"fleet_version":       "f-" + hostile,
			"rkt_version":         "r-" + hostile,
			"k8s_version":         "k-" + hostile,
			"quobyte_data_device": "/dev/disk/by-id/" + hostile,
		},
	}
	n := network("singlenic")
	d := finalData(h, n, baseEnv(), noTLS)
	d.EtcdDiscoveryUrl = "http://192.168.2.2:4080/etcd/" + hostile
	return d
}

// shellEnv sources an env file in dash and returns the variables asked for,
// so the test reads the file the way a shell (and systemd's
// EnvironmentFile=, which takes the same quoting) does.
func shellEnv(t *testing.T, content string, names ...string) map[string]string {
	t.Helper()
	sh, err := exec.LookPath("dash")
	if err != nil {
		sh = "/bin/sh"
	}
	script := content + "\n"
	for _, n := range names {
		script += `printf '%s\0' "$` + n + `"` + "\n"
	}
	out, err := exec.Command(sh, "-c", script).CombinedOutput()
	require.NoError(t, err, "%s", out)
	vals := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	require.Len(t, vals, len(names), "%q", out)
	m := map[string]string{}
	for i, n := range names {
		m[n] = vals[i]
	}
	return m
}

// unitLines returns the value of every line "key=..." of a unit file.
func unitLines(content, key string) []string {
	var out []string
	for _, l := range strings.Split(content, "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

// runMkfsScript runs the quobyte unit's "sh -c" script with blkid and
// mkfs.xfs replaced by stubs that print their arguments (first on PATH,
// the script calls them by name; stderr, as the script discards blkid's
// stdout), and returns the arguments each got: what
// the script would really do, with nothing of the value executed.
func runMkfsScript(t *testing.T, script string) []string {
	t.Helper()
	dir := t.TempDir()
	for name, rc := range map[string]string{"blkid": "1", "mkfs.xfs": "0"} {
		stub := "#!/bin/sh\nprintf '%s\\0' " + strings.TrimSuffix(name, ".xfs") + " \"$@\" >&2\nexit " + rc + "\n"
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(stub), 0o755))
	}
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestHostileValuesCloudConfig renders the shipped cloud-config with
// hostile values everywhere and parses it back: the document has exactly
// the shipped keys, files and units, and every value reads back exactly.
func TestHostileValuesCloudConfig(t *testing.T) {
	r := newShipped(t, false)
	d := hostileData(false)
	out, err := r.Final(d)
	require.NoError(t, err)

	var doc struct {
		Hostname          string   `yaml:"hostname"`
		SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
		WriteFiles        []struct {
			Path, Permissions, Content string
		} `yaml:"write_files"`
		CoreOS struct {
			Etcd2 map[string]string      `yaml:"etcd2"`
			Fleet map[string]interface{} `yaml:"fleet"`
			Units []struct {
				Name, Command, Content string
			} `yaml:"units"`
		} `yaml:"coreos"`
	}
	var top map[string]interface{}
	require.NoError(t, yaml.Unmarshal(out, &top))
	assert.Equal(t, []string{"coreos", "hostname", "ssh_authorized_keys", "write_files"}, sortedKeys(top), "no key was added")
	dec := yaml.NewDecoder(bytes.NewReader(out))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&doc), "no field outside the shipped ones")

	h := d.Host
	assert.Equal(t, h.Hostname, doc.Hostname)
	assert.Equal(t, []string{"ssh-ed25519 AAAA " + hostile, "&anchor !tag *alias"}, doc.SSHAuthorizedKeys)
	assert.Equal(t, h.Hostname, doc.CoreOS.Etcd2["name"])
	assert.Equal(t, d.EtcdDiscoveryUrl, doc.CoreOS.Etcd2["discovery"])
	assert.Equal(t, h.FleetMetadata.String(), doc.CoreOS.Fleet["metadata"])

	files := map[string]string{}
	for _, f := range doc.WriteFiles {
		files[f.Path] = f.Content
	}
	assert.Equal(t, []string{"/etc/mayu/host-env", "/etc/mayu/yochu-env", "/etc/ssl/certs/mayu-ca.pem"}, sortedKeys(files), "no file was added")
	assert.Equal(t, d.CACert, files["/etc/ssl/certs/mayu-ca.pem"], "mayu's CA, as it is")
	assert.Equal(t, map[string]string{"MAYU_PROFILE": h.Profile, "MAYU_METADATA": h.FleetMetadata.String(), "MAYU_URL": d.MayuURL},
		shellEnv(t, files["/etc/mayu/host-env"], "MAYU_PROFILE", "MAYU_METADATA", "MAYU_URL"))
	assert.Equal(t, map[string]string{"YOCHU_VERSION": "y-" + hostile, "DOCKER_VERSION": "d-" + hostile, "K8S_VERSION": "k-" + hostile},
		shellEnv(t, files["/etc/mayu/yochu-env"], "YOCHU_VERSION", "DOCKER_VERSION", "K8S_VERSION"))

	units := map[string]string{}
	for _, u := range doc.CoreOS.Units {
		units[u.Name] = u.Content
	}
	assert.Equal(t, []string{"10-mayu-static.network", "etcd2.service", "fleet.service", "mayu-boot-complete.service",
		"mayuctl-fetch.service", "quobyte-data-mkfs.service", "var-lib-quobyte-devices-data0.mount", "yochu.service"},
		sortedKeys(units), "no unit was added")
	checkHostileUnits(t, d, units)
	assert.Equal(t, []string{escapeSpecifiers(h.ConnectedNIC)}, unitLines(units["10-mayu-static.network"], "Name"))
}

// TestHostileValuesIgnition is the same for the shipped Ignition template,
// parsed by Ignition's own config parser.
func TestHostileValuesIgnition(t *testing.T) {
	r := newShipped(t, true)
	d := hostileData(true)
	out, err := r.Final(d)
	require.NoError(t, err)
	cfg, rpt, err := ign.Parse(out)
	require.NoError(t, err, "%s", rpt)

	h := d.Host
	require.Len(t, cfg.Passwd.Users, 1, "no user was added")
	assert.Equal(t, []string{"ssh-ed25519 AAAA " + hostile, "&anchor !tag *alias"}, keysOf(cfg.Passwd.Users[0].SSHAuthorizedKeys))

	files := map[string]string{}
	for _, f := range cfg.Storage.Files {
		require.NotNil(t, f.Contents.Source, f.Path)
		files[f.Path] = decodeDataURL(t, *f.Contents.Source)
	}
	assert.Equal(t, []string{"/etc/hostname", "/etc/mayu/host-env", "/etc/mayu/yochu-env", "/etc/systemd/network/10-mayu-static.network"},
		sortedKeys(files), "no file was added")
	assert.Equal(t, h.Hostname+"\n", files["/etc/hostname"])
	assert.Equal(t, map[string]string{"MAYU_PROFILE": h.Profile, "MAYU_METADATA": h.FleetMetadata.String(), "MAYU_URL": d.MayuURL},
		shellEnv(t, files["/etc/mayu/host-env"], "MAYU_PROFILE", "MAYU_METADATA", "MAYU_URL"))
	assert.Equal(t, map[string]string{"FLEET_VERSION": "f-" + hostile, "RKT_VERSION": "r-" + hostile},
		shellEnv(t, files["/etc/mayu/yochu-env"], "FLEET_VERSION", "RKT_VERSION"))
	assert.Equal(t, []string{escapeSpecifiers(h.ConnectedNIC)}, unitLines(files["/etc/systemd/network/10-mayu-static.network"], "Name"))

	units := map[string]string{}
	var dropin string
	for _, u := range cfg.Systemd.Units {
		c := ""
		if u.Contents != nil {
			c = *u.Contents
		}
		units[u.Name] = c
		for _, di := range u.Dropins {
			require.NotNil(t, di.Contents)
			dropin += *di.Contents
		}
	}
	assert.Equal(t, []string{"etcd-member.service", "mayu-boot-complete.service", "mayuctl-fetch.service",
		"quobyte-data-mkfs.service", "var-lib-quobyte-devices-data0.mount", "yochu.service"}, sortedKeys(units), "no unit was added")
	checkHostileUnits(t, d, units)

	var env []string
	for _, e := range unitLines(dropin, "Environment") {
		env = append(env, execWords(t, e, false)...)
	}
	assert.Contains(t, env, "ETCD_NAME="+h.Hostname)
	assert.Contains(t, env, "ETCD_DISCOVERY="+d.EtcdDiscoveryUrl)
	assert.Len(t, env, 6, "one assignment per line, none added: %q", env)
}

func keysOf[S ~string](keys []S) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = string(k)
	}
	return out
}

func escapeSpecifiers(s string) string { return strings.ReplaceAll(s, "%", "%%") }

// checkHostileUnits checks the units both templates share: every command
// line splits into exactly the words meant, the quobyte script does only
// what it should with the device, and settings hold the value on one line.
func checkHostileUnits(t *testing.T, d FinalData, units map[string]string) {
	t.Helper()
	ov := d.Host.Overrides
	yochu := units["yochu.service"]
	pre := unitLines(yochu, "ExecStartPre")
	require.Len(t, pre, 3)
	curl := execWords(t, pre[1], true)
	assert.Equal(t, d.MayuURL+"/yochu/yochu/"+ov["yochu_version"].(string)+"/yochu", curl[len(curl)-1])
	assert.Equal(t, "/opt/bin/yochu", curl[len(curl)-2], "the URL is one word after --output's")
	start := execWords(t, unitLines(yochu, "ExecStart")[0], true)
	assert.Equal(t, []string{"/opt/bin/yochu", "setup", "--http-endpoint=" + d.MayuURL + "/yochu", "--start-daemons=true",
		"--docker-version=" + ov["docker_version"].(string), "--etcd-version=" + ov["etcd_version"].(string),
		"--fleet-version=" + ov["fleet_version"].(string), "--rkt-version=" + ov["rkt_version"].(string),
		"--k8s-version=" + ov["k8s_version"].(string)}, start)
	assert.Equal(t, []string{"Install the Yochu " + escapeSpecifiers(ov["yochu_version"].(string)) + " assets served by mayu"},
		unitLines(yochu, "Description"))

	boot := execWords(t, unitLines(units["mayu-boot-complete.service"], "ExecStart")[0], true)
	assert.Equal(t, "--host="+d.MayuHost, boot[1])
	fetch := execWords(t, unitLines(units["mayuctl-fetch.service"], "ExecStart")[0], true)
	assert.Equal(t, d.MayuURL+"/mayuctl", fetch[len(fetch)-1])

	dev := ov["quobyte_data_device"].(string)
	mkfs := execWords(t, unitLines(units["quobyte-data-mkfs.service"], "ExecStart")[0], true)
	require.Len(t, mkfs, 3, "%q", mkfs)
	assert.Equal(t, []string{"/bin/sh", "-c"}, mkfs[:2])
	assert.Equal(t, []string{"blkid", dev, "mkfs", "-L", "quobyte-data", dev}, runMkfsScript(t, mkfs[2]),
		"the script passes the device as one argument and runs nothing else")
	assert.Equal(t, []string{escapeSpecifiers(dev)}, unitLines(units["var-lib-quobyte-devices-data0.mount"], "What"))
}

// TestLineSeparatorAttackNeverReachesTheConfig is the attack of issue 15: a
// value (as an old or hand-edited record could still hold, since the API
// refuses it now) with U+2028, NEL or a newline followed by a write_files
// entry for root's authorized_keys, or an enabled unit. The render either
// fails (shell and systemd contexts cannot hold a line break) or holds the
// value as text; no file or unit is added.
func TestLineSeparatorAttackNeverReachesTheConfig(t *testing.T) {
	for _, sep := range []string{"\u2028", "\u2029", "\u0085", "\n", "\r"} {
		// Shaped to continue the document from inside a "|" block: a new
		// item of write_files (cloud-config, indent 2) or storage.files
		// (Ignition, indent 4), or of the units list (indent 4).
		payloads := []string{
			"x" + sep + "  - path: /root/.ssh/authorized_keys" + sep + "    content: ssh-rsa EVIL",
			"x" + sep + "    - path: /root/.ssh/authorized_keys" + sep + "      contents:" + sep + "        source: data:,ssh-rsa%20EVIL",
			// ends with an open "|" block, so the rest of the unit it was
			// spliced into becomes the evil unit's contents
			"x" + sep + "    - name: evil.service" + sep + "      enabled: true" + sep + "      contents: |" + sep +
				"        [Service]" + sep + "        ExecStart=/bin/sh -c id",
		}
		for _, payload := range payloads {
			for _, tc := range []struct {
				name string
				set  func(d *FinalData)
			}{
				{"ssh key override", func(d *FinalData) {
					d.Host.Overrides = map[string]interface{}{"ssh_authorized_keys": []interface{}{payload}}
				}},
				{"metadata", func(d *FinalData) { d.Host.FleetMetadata = host.FleetMeta{"role=" + payload} }},
				{"profile", func(d *FinalData) { d.Host.Profile = payload }},
				{"hostname", func(d *FinalData) { d.Host.Hostname = payload }},
				{"connected NIC", func(d *FinalData) { d.Host.ConnectedNIC = payload }},
				{"version overrides", func(d *FinalData) {
					d.Host.Overrides = map[string]interface{}{"yochu_version": payload, "docker_version": payload}
				}},
				{"quobyte device", func(d *FinalData) {
					d.Host.FleetMetadata = host.FleetMeta{"quobyte=true"}
					d.Host.Overrides = map[string]interface{}{"quobyte_data_device": payload}
				}},
			} {
				for _, useIgnition := range []bool{false, true} {
					d := goldenCases()[0].data
					tc.set(&d)
					out, err := newShipped(t, useIgnition).Final(d)
					if err != nil {
						assert.True(t, errors.Is(err, ErrRender), "%s: %v", tc.name, err)
						continue
					}
					paths, units := finalPathsAndUnits(t, out, useIgnition)
					assert.NotContains(t, paths, "/root/.ssh/authorized_keys", "%s %q ignition=%v", tc.name, sep, useIgnition)
					assert.NotContains(t, units, "evil.service", "%s %q ignition=%v", tc.name, sep, useIgnition)
				}
			}
		}
	}
}

// finalPathsAndUnits lists the files and units a rendered final config
// creates.
func finalPathsAndUnits(t *testing.T, out []byte, useIgnition bool) (paths, units []string) {
	t.Helper()
	if useIgnition {
		cfg, rpt, err := ign.Parse(out)
		require.NoError(t, err, "%s", rpt)
		for _, f := range cfg.Storage.Files {
			paths = append(paths, f.Path)
		}
		for _, u := range cfg.Systemd.Units {
			units = append(units, u.Name)
		}
		return paths, units
	}
	var doc struct {
		WriteFiles []struct{ Path string } `yaml:"write_files"`
		CoreOS     struct {
			Units []struct{ Name string } `yaml:"units"`
		} `yaml:"coreos"`
	}
	require.NoError(t, yaml.Unmarshal(out, &doc))
	for _, f := range doc.WriteFiles {
		paths = append(paths, f.Path)
	}
	for _, u := range doc.CoreOS.Units {
		units = append(units, u.Name)
	}
	return paths, units
}

// TestHostileValuesFirstStage renders the shipped first-stage script with a
// hostile value in every field, checks that bash parses the whole script
// and that its assignments hold exactly the values.
func TestHostileValuesFirstStage(t *testing.T) {
	r := newShipped(t, false)
	d := FirstStageData{
		HostInfoHelperURL: "http://h/" + hostile, CloudConfigURL: "http://c/" + hostile, IgnitionConfigURL: "",
		InstallImageURL: "http://i/" + hostile, SetInstalledURL: "http://s/__SERIAL__/" + hostile,
		MayuURL: "http://m/" + hostile, MayuVersion: "v-" + hostile, MachineID: "id-" + hostile,
	}
	out, err := r.FirstStage(d)
	require.NoError(t, err)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not installed")
	}
	syntax, err := exec.Command(bash, "-n", "-c", string(out)).CombinedOutput()
	require.NoError(t, err, "%s", syntax)

	script := string(out)
	start := strings.Index(script, "\n{\n")
	end := strings.Index(script[start+1:], "\n}\n")
	require.True(t, start >= 0 && end >= 0, "the block of mayu's values")
	vars := shellEnv(t, script[start+1:start+1+end+2], "MAYU_URL", "MAYU_VERSION", "MACHINE_ID", "HOST_INFO_HELPER_URL",
		"CLOUD_CONFIG_URL", "IGNITION_CONFIG_URL", "INSTALL_IMAGE_URL", "SET_INSTALLED_URL")
	assert.Equal(t, map[string]string{
		"MAYU_URL": d.MayuURL, "MAYU_VERSION": d.MayuVersion, "MACHINE_ID": d.MachineID, "HOST_INFO_HELPER_URL": d.HostInfoHelperURL,
		"CLOUD_CONFIG_URL": d.CloudConfigURL, "IGNITION_CONFIG_URL": "", "INSTALL_IMAGE_URL": d.InstallImageURL,
		"SET_INSTALLED_URL": d.SetInstalledURL,
	}, vars)
}
