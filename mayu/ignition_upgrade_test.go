package main

// Drop-in upgrade from Mayu 0.11 with --use-ignition: the operator's 0.11
// templates declare Ignition spec 2.0.0 and must be served as such, and a
// template mayu cannot serve must stop it at start, as --show-templates
// does, instead of failing each machine's request.

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
)

// ignition011Args point mayu at the 0.11-style template of pkg/render's
// test data: spec 2.0.0 with snippets.
func ignition011Args() []string {
	dir := repoPath("pkg", "render", "testdata", "ignition-0.11")
	return []string{"--use-ignition", "--ignition-config=" + dir + "/gs_install.yaml", "--template-snippets=" + dir + "/snippets"}
}

func TestIgnition011TemplateServedAsSpec2(t *testing.T) {
	d := startDaemon(t, t.TempDir(), append(ignition011Args(), "--no-tls")...)
	d.waitReady(d.client)

	const serial = "0800278e1601"
	code, body := d.req("GET", "/first-stage-script/"+serial, "")
	require.Equal(t, 200, code, body)
	assert.Contains(t, body, d.base+"/final-ignition-config.json")

	facts := fmt.Sprintf(`{"Serial":%q,"NetDevs":[{"Name":"enp0s3","MacAddress":"08:00:27:8e:16:01"}],"IPMIAddress":"","ConnectedNIC":"enp0s3"}`, serial)
	code, body = d.req("POST", "/final-ignition-config.json", facts)
	require.Equal(t, 200, code, body)

	var cfg struct {
		Ignition struct{ Version string }
		Storage  struct {
			Files []struct {
				Filesystem, Path string
				Mode             int
			}
		}
		Networkd struct {
			Units []struct{ Name, Contents string }
		}
		Systemd struct {
			Units []map[string]interface{}
		}
	}
	require.NoError(t, json.Unmarshal([]byte(body), &cfg), body)
	assert.Equal(t, "2.0.0", cfg.Ignition.Version, "served as the spec the template declares")
	require.NotEmpty(t, cfg.Storage.Files)
	for _, f := range cfg.Storage.Files {
		assert.Equal(t, "root", f.Filesystem, "2.x files name their filesystem: %s", f.Path)
		assert.Equal(t, 420, f.Mode)
	}
	for _, u := range cfg.Systemd.Units {
		assert.Equal(t, true, u["enable"], "spec 2.0's key: %v", u["name"])
		assert.NotContains(t, u, "enabled")
	}

	h := d.hosts()[serial]
	assert.Equal(t, host.Installing, h.State)
	require.Len(t, cfg.Networkd.Units, 1)
	assert.Contains(t, cfg.Networkd.Units[0].Contents, "Name=enp0s3\n")
	assert.Contains(t, cfg.Networkd.Units[0].Contents, "Address="+h.InternalAddr.String()+"/24\n")
	assert.Contains(t, body, d.base+"/admin/host/"+serial+"/boot_complete")
}

// A template that does not validate for the spec it declares, or declares
// one mayu does not serve, stops the daemon at start with the reason, and
// --show-templates refuses it with the same reason.
func TestIgnitionTemplateCheckedAtStart(t *testing.T) {
	dir := t.TempDir()
	snippets := repoPath("pkg", "render", "testdata", "ignition-0.11", "snippets")
	tests := []struct {
		name, template, want string
	}{
		{"unsupported spec", "ignition:\n  version: 2.4.0\n", `ignition.version "2.4.0" is not supported`},
		{"spec 2.0 schema error", "ignition:\n  version: 2.0.0\nstorage:\n  files:\n    - filesystem: root\n      path: etc/hostname\n",
			"error at $.storage.files.0.path: path not absolute"},
		{"spec 3 layout declared as 2.2", "ignition:\n  version: 2.2.0\nstorage:\n  files:\n    - path: /etc/hostname\n",
			"error at $.storage.files.0: no filesystem specified"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := writeFile(t, dir, fmt.Sprintf("final-%d.yaml", i), tc.template)
			args := append(baseArgs(t, dir, proctest.FreePort(t)), "--no-tls", "--use-ignition",
				"--ignition-config="+tmpl, "--template-snippets="+snippets)

			code, out := runOnce(t, args...)
			assert.NotEqual(t, 0, code, out)
			assert.Contains(t, out, tc.want)
			assert.Contains(t, out, `check host "placeholder-serial"`)
			assert.NotContains(t, out, "mayu started")

			code, out = runOnce(t, append(args, "--show-templates")...)
			assert.NotEqual(t, 0, code, out)
			assert.Contains(t, out, tc.want)
			assert.NotContains(t, out, "panic")
		})
	}

	// And the 0.11-style template passes both.
	args := append(append(baseArgs(t, dir, proctest.FreePort(t)), ignition011Args()...), "--show-templates")
	code, out := runOnce(t, args...)
	require.Equal(t, 0, code, out)
	assert.True(t, strings.Contains(out, "\"version\": \"2.0.0\""), out)
}
