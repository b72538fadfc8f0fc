package render

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"

	v2_0 "github.com/coreos/ignition/config/v2_0"
	v2_1 "github.com/coreos/ignition/config/v2_1"
	v2_2 "github.com/coreos/ignition/config/v2_2"
	v2_3 "github.com/coreos/ignition/config/v2_3"
	v3_0 "github.com/coreos/ignition/v2/config/v3_0"
	v3_1 "github.com/coreos/ignition/v2/config/v3_1"
	v3_2 "github.com/coreos/ignition/v2/config/v3_2"
	v3_3 "github.com/coreos/ignition/v2/config/v3_3"
	v3_4 "github.com/coreos/ignition/v2/config/v3_4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
)

// template011 is a final Ignition template in the style of Mayu 0.11's:
// spec 2.0.0, networkd units, snippets (see its header).
func template011(t *testing.T) Config {
	t.Helper()
	return Config{
		FirstStageScript: "testdata/first_stage_script.sh",
		IgnitionConfig:   "testdata/ignition-0.11/gs_install.yaml",
		Snippets:         "testdata/ignition-0.11/snippets",
		UseIgnition:      true,
	}
}

// strictParse validates js with the library package of exactly version v,
// independently of the table the renderer uses; an older config given to a
// newer package would be translated up, so each version has its own.
func strictParse(t *testing.T, v string, js []byte) {
	t.Helper()
	var err error
	var rpt fmt.Stringer
	switch v {
	case "2.0.0":
		_, r, e := v2_0.Parse(js)
		rpt, err = r, e
	case "2.1.0":
		_, r, e := v2_1.Parse(js)
		rpt, err = r, e
	case "2.2.0":
		_, r, e := v2_2.Parse(js)
		rpt, err = r, e
	case "2.3.0":
		_, r, e := v2_3.Parse(js)
		rpt, err = r, e
	case "3.0.0":
		_, r, e := v3_0.Parse(js)
		rpt, err = r, e
	case "3.1.0":
		_, r, e := v3_1.Parse(js)
		rpt, err = r, e
	case "3.2.0":
		_, r, e := v3_2.Parse(js)
		rpt, err = r, e
	case "3.3.0":
		_, r, e := v3_3.Parse(js)
		rpt, err = r, e
	case "3.4.0":
		_, r, e := v3_4.Parse(js)
		rpt, err = r, e
	default:
		t.Fatalf("no library parser for %s in this test", v)
	}
	require.NoError(t, err, "%s: %s", v, rpt)
	assert.Empty(t, rpt.String(), "%s: the library reports findings", v)
}

// servedVersion is ignition.version of the served JSON.
func servedVersion(t *testing.T, js []byte) (string, map[string]interface{}) {
	t.Helper()
	var doc map[string]interface{}
	require.NoError(t, json.Unmarshal(js, &doc), "%s", js)
	ign, ok := doc["ignition"].(map[string]interface{})
	require.True(t, ok, "%s", js)
	v, _ := ign["version"].(string)
	return v, doc
}

// items returns doc's list at a dotted path ("storage.files").
func items(t *testing.T, doc map[string]interface{}, path string) []map[string]interface{} {
	t.Helper()
	var cur interface{} = doc
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]interface{})
		require.True(t, ok, "%s: %s is not an object", path, k)
		cur = m[k]
	}
	list, ok := cur.([]interface{})
	require.True(t, ok, "%s is not a list", path)
	out := make([]map[string]interface{}, len(list))
	for i, e := range list {
		out[i], ok = e.(map[string]interface{})
		require.True(t, ok, "%s[%d] is not an object", path, i)
	}
	return out
}

func TestIgnitionTemplate011ServedAsSpec2(t *testing.T) {
	cfg := template011(t)
	check := finalData(PlaceholderHost(), network("singlenic"), baseEnv(), false)
	cfg.Check = &check
	r, err := New(cfg)
	require.NoError(t, err, "the 0.11-style template passes the start-up check")

	h := host.Host{
		Enabled: true, Serial: "cl-node-3", MacAddresses: []string{"52:54:00:12:34:03"},
		InternalAddr: net.ParseIP("192.168.2.23").To4(), Hostname: "c0ffee00c0ffee03", MachineID: "c0ffee00c0ffee03c0ffee00c0ffee03",
		ConnectedNIC: "enp0s3", FleetMetadata: host.FleetMeta{"role-core=true"}, Profile: "core-services",
		EtcdClusterToken: "41f07d10ab835b22071a32d5c1b75a6d", State: host.Installing,
	}
	d := finalData(h, network("singlenic"), baseEnv(), true)
	out, err := r.Final(d)
	require.NoError(t, err)

	version, doc := servedVersion(t, out)
	assert.Equal(t, "2.0.0", version, "served as the version the template declares")
	strictParse(t, "2.0.0", out)

	// 2.x structure, as written: files name their filesystem, units use
	// spec 2.0's "enable", networkd units exist.
	files := map[string]string{}
	for _, f := range items(t, doc, "storage.files") {
		assert.Equal(t, "root", f["filesystem"], "%v", f)
		src := f["contents"].(map[string]interface{})["source"].(string)
		files[f["path"].(string)] = decodeDataURL(t, src)
	}
	assert.Equal(t, h.Hostname+"\n", files["/etc/hostname"])
	assert.Equal(t, "MAYU_URL="+d.MayuURL+"\nMAYU_PROFILE=core-services\n", files["/etc/mayu-env"], "snippet included by name")

	units := map[string]map[string]interface{}{}
	for _, u := range items(t, doc, "systemd.units") {
		assert.NotContains(t, u, "enabled", "a 3.x key in a 2.0 config")
		units[u["name"].(string)] = u
	}
	require.Contains(t, units, "etcd2.service")
	assert.Equal(t, true, units["etcd2.service"]["enable"])
	dropin := items(t, units["etcd2.service"], "dropins")[0]["contents"].(string)
	assert.Contains(t, dropin, `ETCD_DISCOVERY=`+d.EtcdDiscoveryUrl)
	assert.Contains(t, dropin, "http://192.168.2.23:2380")
	assert.Contains(t, units["mayu-boot-complete.service"]["contents"], "-X PUT -d '{}' "+d.PostBootURL+"\n")
	assert.NotContains(t, units["mayu-boot-complete.service"]["contents"], "--insecure", "NoTLS")
	fleet := items(t, units["fleet.service"], "dropins")[0]["contents"].(string)
	assert.Contains(t, fleet, "FLEET_METADATA=role-core=true")

	network := items(t, doc, "networkd.units")
	require.Len(t, network, 1)
	assert.Equal(t, "[Match]\nName=enp0s3\n\n[Network]\nAddress=192.168.2.23/24\nGateway=192.168.2.2\nDNS=8.8.8.8\nDNS=8.8.4.4\n", network[0]["contents"])

	keys := items(t, doc, "passwd.users")[0]["sshAuthorizedKeys"].([]interface{})
	assert.Equal(t, baseEnv()["ssh_authorized_keys"], keys)
}

// specTemplate writes a final Ignition template declaring version v, in
// that spec family's structure, with its items in a snippet.
func specTemplate(t *testing.T, v string) Config {
	t.Helper()
	spec2 := strings.HasPrefix(v, "2.")
	enable := "enabled"
	if v == "2.0.0" {
		enable = "enable" // "enabled" came with 2.1
	}
	fs := ""
	if spec2 {
		fs = "\n      filesystem: root"
	}
	final := fmt.Sprintf(`ignition:
  version: %s
storage:
  files:
{{- template "files" .}}
systemd:
  units:
    - name: mayu-boot-complete.service
      %s: true
      contents: |
        [Service]
        ExecStart=/usr/bin/curl -X PUT {{.PostBootURL}}

        [Install]
        WantedBy=multi-user.target
`, v, enable)
	snippet := fmt.Sprintf(`{{define "files"}}
    - path: /etc/hostname%s
      mode: 420
      contents:
        source: {{quote (dataurl .Host.Hostname)}}
{{- end}}
`, fs)
	return writeTemplates(t, true, map[string]string{"ignition.yaml": final, "snippets/files.yaml": snippet})
}

func TestIgnitionEveryDeclaredSpec(t *testing.T) {
	for _, v := range IgnitionSpecs {
		t.Run(v, func(t *testing.T) {
			cfg := specTemplate(t, v)
			check := finalData(PlaceholderHost(), network("singlenic"), baseEnv(), false)
			cfg.Check = &check
			r, err := New(cfg)
			require.NoError(t, err)
			d := finalData(PlaceholderHost(), network("singlenic"), nil, false)
			out, err := r.Final(d)
			require.NoError(t, err)

			served, doc := servedVersion(t, out)
			assert.Equal(t, v, served)
			strictParse(t, v, out)
			f := items(t, doc, "storage.files")
			require.Len(t, f, 1, "the snippet's file")
			assert.Equal(t, "data:,"+d.Host.Hostname, f[0]["contents"].(map[string]interface{})["source"])
			if strings.HasPrefix(v, "2.") {
				assert.Equal(t, "root", f[0]["filesystem"])
			} else {
				assert.NotContains(t, f[0], "filesystem")
			}
		})
	}
}

func TestIgnitionInvalidSpec2(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"relative path", "ignition:\n  version: 2.0.0\nstorage:\n  files:\n    - filesystem: root\n      path: etc/hostname\n",
			[]string{"spec 2.0.0", "error at $.storage.files.0.path: path not absolute"}},
		{"3.x file in a 2.2 config", "ignition:\n  version: 2.2.0\nstorage:\n  files:\n    - path: /etc/hostname\n      overwrite: true\n",
			[]string{"spec 2.2.0", "error at $.storage.files.0: no filesystem specified"}},
		{"mode as a string", "ignition:\n  version: 2.2.0\nstorage:\n  files:\n    - filesystem: root\n      path: /x\n      mode: \"0644\"\n",
			[]string{"spec 2.2.0", "does not match the schema", "mode", "of type int"}},
		{"unit that does not parse", "ignition:\n  version: 2.3.0\nsystemd:\n  units:\n    - name: a.service\n    - name: x.service\n      contents: \"[Unit\"\n",
			[]string{"spec 2.3.0", "error at $.systemd.units.1.contents: invalid unit content"}},
		{"networkd unit without a suffix", "ignition:\n  version: 2.1.0\nnetworkd:\n  units:\n    - name: static\n      contents: \"[Match]\\nName=eth0\\n\"\n",
			[]string{"spec 2.1.0", "error at $.networkd.units.0: invalid networkd unit extension"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(writeTemplates(t, true, map[string]string{"ignition.yaml": tc.yaml}))
			require.NoError(t, err)
			out, err := r.Final(finalData(PlaceholderHost(), network("singlenic"), nil, false))
			require.ErrorIs(t, err, ErrRender)
			assert.Nil(t, out)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), "\n", "the API answers the error as one line")
		})
	}
}

func TestIgnitionUnsupportedVersion(t *testing.T) {
	supported := strings.Join(IgnitionSpecs, ", ")
	tests := []struct {
		name, yaml, want string
	}{
		{"spec 1", "ignition:\n  version: 1.0.0\n", `ignition.version "1.0.0" is not supported`},
		{"spec 2.4 (RHCOS only)", "ignition:\n  version: 2.4.0\n", `ignition.version "2.4.0" is not supported`},
		{"spec 2.5 experimental", "ignition:\n  version: 2.5.0-experimental\n", `"2.5.0-experimental" is not supported`},
		{"spec 3.5", "ignition:\n  version: 3.5.0\n", `ignition.version "3.5.0" is not supported`},
		{"unknown", "ignition:\n  version: 9.9.9\n", `ignition.version "9.9.9" is not supported`},
		{"a YAML number", "ignition:\n  version: 2.0\n", "ignition.version must be a version string, not float64 2"},
		{"no version", "ignition: {}\n", "no ignition.version"},
		{"spec 1 layout", "ignitionVersion: 1\n", "no ignition.version"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeTemplates(t, true, map[string]string{"ignition.yaml": tc.yaml})
			r, err := New(cfg)
			require.NoError(t, err, "without Check only parsing happens at load")
			_, err = r.Final(finalData(PlaceholderHost(), network("singlenic"), nil, false))
			require.ErrorIs(t, err, ErrRender)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), supported)

			// The start-up check refuses the same template, naming it.
			check := finalData(PlaceholderHost(), network("singlenic"), nil, false)
			cfg.Check = &check
			_, err = New(cfg)
			require.ErrorIs(t, err, ErrRender)
			assert.Contains(t, err.Error(), `check host "placeholder-serial"`)
			assert.Contains(t, err.Error(), "ignition.yaml")
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// With Check, New lists the first-stage and the final failure together, as
// ShowTemplates does, and Reload keeps the last good set.
func TestCheckAtLoadAndReload(t *testing.T) {
	cfg := writeTemplates(t, true, map[string]string{
		"first.sh":      "echo {{.MachineID}}\n",
		"ignition.yaml": "ignition:\n  version: 2.4.0\n",
	})
	check := finalData(PlaceholderHost(), network("singlenic"), nil, false)
	cfg.Check = &check
	_, err := New(cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "first.sh: output does not start with a #! line")
	assert.Contains(t, err.Error(), `"2.4.0" is not supported`)

	_, err = New(Config{Check: &check, UseIgnition: true})
	require.ErrorIs(t, err, ErrParse, "templates that do not parse fail before any check")

	good := specTemplate(t, "2.2.0")
	good.Check = &check
	r, err := New(good)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(good.IgnitionConfig, []byte("ignition:\n  version: 3.5.0\n"), 0o644))
	err = r.Reload()
	require.ErrorIs(t, err, ErrRender)
	assert.Contains(t, err.Error(), `"3.5.0" is not supported`)
	out, err := r.Final(check)
	require.NoError(t, err, "the previous set stays in use")
	v, _ := servedVersion(t, out)
	assert.Equal(t, "2.2.0", v)

	require.NoError(t, os.WriteFile(good.IgnitionConfig, []byte("ignition:\n  version: 3.0.0\n"), 0o644))
	require.NoError(t, r.Reload())
	out, err = r.Final(check)
	require.NoError(t, err)
	v, _ = servedVersion(t, out)
	assert.Equal(t, "3.0.0", v)
}

// Non-fatal findings of a 2.x validator reach the log with their path and
// do not fail the render.
func TestIgnitionSpec2WarningsLogged(t *testing.T) {
	cfg := writeTemplates(t, true, map[string]string{
		"ignition.yaml": "ignition:\n  version: 2.1.0\nstorage:\n  files:\n    - filesystem: root\n      path: /x\n      overwrite: true\n",
	})
	var logs bytes.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	r, err := New(cfg)
	require.NoError(t, err)
	out, err := r.Final(finalData(PlaceholderHost(), network("singlenic"), nil, false))
	require.NoError(t, err)
	assert.Contains(t, string(out), `"overwrite": true`, "served as written")
	assert.Contains(t, logs.String(), "ignition config warning")
	assert.Contains(t, logs.String(), "warning at $.storage.files.0.overwrite: Config has unrecognized key: overwrite")
}

func TestJSONPaths(t *testing.T) {
	js := []byte(`{
  "a": {
    "b": [
      {
        "c": 1
      },
      2,
      [
        "x"
      ]
    ]
  },
  "d": "e"
}`)
	want := map[int]string{
		1: "$", 2: "$.a", 3: "$.a.b", 4: "$.a.b.0", 5: "$.a.b.0.c", 6: "$.a.b.0",
		7: "$.a.b.1", 8: "$.a.b.2", 9: "$.a.b.2.0", 10: "$.a.b.2", 11: "$.a.b", 12: "$.a", 13: "$.d", 14: "$",
	}
	assert.Equal(t, want, jsonPaths(js))
	assert.Equal(t, map[int]string{1: "$", 2: "$.a"}, jsonPaths([]byte("{\n  \"a\": ")), "broken JSON maps what it could")
}
