package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestProcessVersionFollowsDefault: as in Mayu 0.11, a machine whose
// profile names no coreos_version is registered without a CoreOSVersion of
// its own, so a later change of default_coreos_version reaches it: after a
// restart with the new default, its images are the new version's. A record
// written that way (no CoreOSVersion key in conf.json, as 0.11 left it)
// keeps loading and following the default.
func TestProcessVersionFollowsDefault(t *testing.T) {
	dir := t.TempDir()
	for v, content := range map[string]string{"1068.6.0": "image-1068", "1122.2.0": "image-1122"} {
		p := filepath.Join(dir, "images", v, "coreos_production_image.bin.bz2")
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	const s = "0800278e158a-0"
	image := "/images/" + s + "/install_image.bin.bz2"

	d := startDaemon(t, dir, "--no-tls")
	d.WaitReady()
	code, body := d.Do("GET", "/first-stage-script/"+s, "")
	require.Equal(t, 200, code, body)
	h := d.Hosts()[s]
	assert.Equal(t, "core-services", h.Profile)
	assert.Empty(t, h.CoreOSVersion, "a profile without coreos_version pins no version")
	conf, err := os.ReadFile(filepath.Join(d.Cluster, s, "conf.json"))
	require.NoError(t, err)
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(conf, &raw))
	assert.NotContains(t, raw, "CoreOSVersion", "conf.json leaves the version out, as 0.11 did")
	code, body = d.Do("GET", image, "")
	require.Equal(t, 200, code, body)
	assert.Equal(t, "image-1068", body)
	require.NoError(t, d.Stop())

	// The operator moves the fleet's default; the machine follows it.
	cfg, err := os.ReadFile(filepath.Join(dir, "config.yaml"))
	if os.IsNotExist(err) {
		cfg = []byte(processConfig)
	} else {
		require.NoError(t, err)
	}
	require.Contains(t, string(cfg), "default_coreos_version: 1068.6.0")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"),
		[]byte(strings.Replace(string(cfg), "default_coreos_version: 1068.6.0", "default_coreos_version: 1122.2.0", 1)), 0o644))
	d = startDaemon(t, dir, "--no-tls")
	d.WaitReady()
	assert.Empty(t, d.Hosts()[s].CoreOSVersion)
	code, body = d.Do("GET", image, "")
	require.Equal(t, 200, code, body)
	assert.Equal(t, "image-1122", body, "the new default reached a machine that never chose a version")
}
