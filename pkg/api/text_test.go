package api

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
)

// lineBreaking are characters of every category host.BadRune refuses:
// Zl, Zp, the C0 and C1 controls YAML or a terminal act on, and format
// characters that hide or reorder text.
var lineBreaking = []string{"\u2028", "\u2029", "\u0085", "\n", "\r", "\x1b[2J", "\x00", "\u200b", "\u202e", "\ufeff"}

// body marshals v, so a control character travels as a valid JSON escape
// and reaches mayu's own check rather than failing the JSON decoder.
func body(t *testing.T, v interface{}) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// TestWriteRoutesRefuseLineBreakingCharacters sends each character in every
// string a write route stores and expects 400 with a one-line reason that
// does not echo the character, and a record that did not change.
func TestWriteRoutesRefuseLineBreakingCharacters(t *testing.T) {
	e := newEnv(t)
	const s = "0800278e158a-0"
	put := func(action, b string) (int, string) {
		rec := e.do("PUT", "/admin/host/"+s+"/"+action, b, "Content-Type", "application/json")
		return rec.Code, rec.Body.String()
	}
	require.Equal(t, 200, e.do("POST", "/final-cloud-config.yaml", facts).Code)
	before := e.host(s)
	// The host-info helper's facts: the connected NIC and the MACs. (A
	// character at either end is trimmed like other white space, so it
	// sits in the middle.)
	for _, c := range lineBreaking {
		for _, f := range []string{
			`{"Serial":"` + s + `","ConnectedNIC":` + body(t, "et"+c+"h0") + `}`,
			`{"Serial":"` + s + `","NetDevs":[{"Name":"eth0","MacAddress":` + body(t, "08:00:27:8e:15"+c+":8a") + `}]}`,
		} {
			rec := e.do("POST", "/final-cloud-config.yaml", f)
			assert.Equal(t, 400, rec.Code, "facts %q: %s", c, rec.Body.String())
			assert.NotContains(t, strings.TrimSuffix(rec.Body.String(), "\n"), c)
		}
	}
	assert.Equal(t, before, e.host(s), "refused facts changed nothing")
	code, _ := put("set_installed", "")
	require.Equal(t, 202, code)
	before = e.host(s)

	for _, c := range lineBreaking {
		v := "a" + c + "b"
		routes := []struct{ action, body string }{
			{"override", body(t, map[string]interface{}{"Overrides": map[string]interface{}{"docker_version": v}})},
			{"override", body(t, map[string]interface{}{"Overrides": map[string]interface{}{"k" + c: "v"}})},
			{"override", body(t, map[string]interface{}{"Overrides": map[string]interface{}{"ssh_authorized_keys": []string{"ok", v}}})},
			{"override", body(t, map[string]interface{}{"Overrides": map[string]interface{}{"m": map[string]interface{}{"deep": v}}})},
			{"set_metadata", body(t, map[string]interface{}{"FleetMetadata": []string{"role=" + v}})},
			{"set_provider_id", body(t, map[string]string{"ProviderId": v})},
			{"set_etcd_cluster_token", body(t, map[string]string{"EtcdClusterToken": v})},
		}
		for _, f := range []string{"CoreOSVersion", "MayuVersion", "DockerVersion", "FleetVersion", "EtcdVersion", "RktVersion", "K8sVersion", "YochuVersion"} {
			routes = append(routes, struct{ action, body string }{"boot_complete", body(t, map[string]string{f: "1.0" + c + "x"})})
		}
		for _, r := range routes {
			code, reason := put(r.action, r.body)
			assert.Equal(t, 400, code, "%s %q: %s", r.action, c, reason)
			assert.LessOrEqual(t, strings.Count(reason, "\n"), 1, "one-line reason")
			assert.NotContains(t, strings.TrimSuffix(reason, "\n"), c, "the reason names the character, never prints it")
		}

	}
	assert.Equal(t, before, e.host(s), "nothing refused changed the record")

	// Hostile but legal values are stored as they are.
	const legal = `"it's" #x: $(id) ` + "`id`" + ` *a &b !c ünï`
	code, reason := put("set_provider_id", body(t, map[string]string{"ProviderId": legal}))
	require.Equal(t, 202, code, reason)
	assert.Equal(t, legal, e.host(s).ProviderId)
	code, reason = put("override", body(t, map[string]interface{}{"Overrides": map[string]interface{}{"quobyte_data_device": legal}}))
	require.Equal(t, 202, code, reason)
	assert.Equal(t, legal, e.host(s).Overrides["quobyte_data_device"])
	code, reason = put("boot_complete", body(t, map[string]string{"CoreOSVersion": "3815.2.0"}))
	require.Equal(t, 202, code, reason)
	assert.Equal(t, "3815.2.0", e.host(s).CoreOSVersion)
	assert.Equal(t, host.Running, e.host(s).State)
}

// TestReportedVersionNeverPicksTheImage: a machine (or anyone posting as
// one) reports an OS version at boot_complete, then is sent to reinstall;
// the image it gets is still the operator's, not the one it named.
func TestReportedVersionNeverPicksTheImage(t *testing.T) {
	e := newEnv(t)
	const s = "0800278e158a-0"
	put := func(action, b string) {
		rec := e.do("PUT", "/admin/host/"+s+"/"+action, b, "Content-Type", "application/json")
		require.Equal(t, 202, rec.Code, "%s: %s", action, rec.Body.String())
	}
	require.Equal(t, 200, e.do("POST", "/final-cloud-config.yaml", facts).Code)
	put("set_installed", "")
	put("boot_complete", `{"CoreOSVersion":"1122.2.0"}`)
	assert.Equal(t, "1122.2.0", e.host(s).CoreOSVersion, "the report is recorded for mayuctl to show")
	put("mark_fresh", "")
	img := e.do("GET", fmt.Sprintf("/images/%s/install_image.bin.bz2", s), "")
	require.Equal(t, 200, img.Code)
	assert.Equal(t, "0123456789abcdefghij", img.Body.String(), "the default version's image, not image-1122")

	put("override", `{"Overrides":{"CoreOSVersion":"1122.2.0"}}`)
	assert.Equal(t, "image-1122", e.do("GET", "/images/"+s+"/install_image.bin.bz2", "").Body.String(), "an operator's override does pick it")
}
