package api

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/render"
)

// put sends an admin PUT as mayuctl does.
func (e *env) put(serial, action, body string) *httptest.ResponseRecorder {
	e.t.Helper()
	return e.do("PUT", "/admin/host/"+serial+"/"+action, body, "Content-Type", "application/json")
}

// unchanged asserts that a refused request left every record and the audit
// trail alone.
func (e *env) unchanged(what string, f func() *httptest.ResponseRecorder) *httptest.ResponseRecorder {
	e.t.Helper()
	hosts, msgs := e.mem.List(), e.mem.Messages()
	rec := f()
	assert.Equal(e.t, hosts, e.mem.List(), "%s: records changed", what)
	assert.Equal(e.t, msgs, e.mem.Messages(), "%s: something was committed", what)
	return rec
}

// TestContentTypesAndWelcomeAreMayu011s: every answer carries the content
// type Mayu 0.11's answers had (Go's sniffing of what it wrote), and the
// welcome text is 0.11's word for word.
func TestContentTypesAndWelcomeAreMayu011s(t *testing.T) {
	e := newEnv(t)
	require.NoError(t, writeFileUnder(e.dir, "images/1068.6.0/coreos_production_pxe_image.cpio.gz", "\x1f\x8b\x08\x00gzip"))
	rec := e.do("GET", "/", "")
	assert.Equal(t, "this is the iPXE server of mayu 1.2.3", rec.Body.String())
	tests := []struct{ method, path, body, ctype string }{
		{"GET", "/", "", "text/plain; charset=utf-8"},
		{"GET", "/ipxebootscript", "", "text/plain; charset=utf-8"},
		{"GET", "/first-stage-script/m1", "", "text/plain; charset=utf-8"},
		{"POST", "/final-cloud-config.yaml", facts, "text/plain; charset=utf-8"},
		{"GET", "/admin/hosts", "", "text/plain; charset=utf-8"},
		{"GET", "/images/vmlinuz", "", "text/plain; charset=utf-8"}, // the fixture is text
		{"GET", "/images/initrd.cpio.gz", "", "application/x-gzip"},
		{"GET", "/images/m1/initrd.cpio.gz", "", "application/x-gzip"},
		{"GET", "/admin/hosts/", "", "text/plain; charset=utf-8"}, // a 404's reason
		{"PUT", "/admin/host/nobody/set_state", `{"State":"configured"}`, "text/plain; charset=utf-8"},
	}
	for _, tt := range tests {
		rec := e.do(tt.method, tt.path, tt.body)
		assert.Equal(t, tt.ctype, rec.Header().Get("Content-Type"), "%s %s (%d)", tt.method, tt.path, rec.Code)
	}
	ign := newEnv(t, func(c *envConfig) { c.api.UseIgnition = true })
	rec = ign.do("POST", "/final-ignition-config.json", facts)
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, "text/plain; charset=utf-8", rec.Header().Get("Content-Type"))
}

// TestIPMIAddrCanBeCleared: what Mayu 0.11's mayuctl sends for an empty or
// bad address (a record without IPMIAddr), null and "" clear the address,
// audited as a change; a malformed non-empty address is a 400.
func TestIPMIAddrCanBeCleared(t *testing.T) {
	e := newEnv(t)
	require.Equal(t, 200, e.do("GET", "/first-stage-script/m1", "").Code)
	legacy, err := host.Host{}.Marshal() // 0.11's mayuctl marshals a whole record; nil IPMIAddr is omitted
	require.NoError(t, err)
	for _, body := range []string{string(legacy), `{"IPMIAddr":null}`, `{"IPMIAddr":""}`} {
		require.Equal(t, 202, e.put("m1", "set_ipmi_addr", `{"IPMIAddr":"10.1.1.1"}`).Code)
		require.Equal(t, "10.1.1.1", e.host("m1").IPMIAddr.String())
		rec := e.put("m1", "set_ipmi_addr", body)
		assert.Equal(t, 202, rec.Code, "%s: %s", body, rec.Body.String())
		assert.Nil(t, e.host("m1").IPMIAddr, body)
		msgs := subjects(e.mem.Messages())
		assert.Equal(t, "m1: updated host ipmi address", msgs[len(msgs)-1])
	}
	require.Equal(t, 202, e.put("m1", "set_ipmi_addr", `{"IPMIAddr":"10.1.1.1"}`).Code)
	for _, body := range []string{`{"IPMIAddr":"10.1.1.300"}`, `{"IPMIAddr":"x"}`, `{"IPMIAddr":7}`} {
		rec := e.unchanged(body, func() *httptest.ResponseRecorder { return e.put("m1", "set_ipmi_addr", body) })
		assert.Equal(t, 400, rec.Code, body)
	}
	assert.Equal(t, "10.1.1.1", e.host("m1").IPMIAddr.String())
}

// TestMACFaults: an empty MAC is a 400, installing a machine DHCP cannot
// ignore is a 409, and a serial stays bound to its machine's MACs until
// an operator re-binds it.
func TestMACFaults(t *testing.T) {
	e := newEnv(t)
	rec := e.unchanged("empty MAC", func() *httptest.ResponseRecorder {
		return e.do("POST", "/final-cloud-config.yaml", `{"Serial":"m0","NetDevs":[{"Name":"eth0","MacAddress":"02:00:00:00:00:01"},{"Name":"eth1","MacAddress":""}]}`)
	})
	assert.Equal(t, 400, rec.Code)
	assert.Contains(t, rec.Body.String(), "empty MAC address")

	require.Equal(t, 200, e.do("POST", "/final-cloud-config.yaml", `{"Serial":"nomac","ConnectedNIC":"eth0"}`).Code)
	rec = e.unchanged("set_installed without MAC", func() *httptest.ResponseRecorder { return e.put("nomac", "set_installed", "") })
	assert.Equal(t, 409, rec.Code)
	assert.Contains(t, rec.Body.String(), "no MAC address recorded")

	const s = "0800278e158a-0"
	require.Equal(t, 200, e.do("POST", "/final-cloud-config.yaml", facts).Code)
	other := `{"Serial":"` + s + `","NetDevs":[{"Name":"eth0","MacAddress":"02:00:00:00:99:01"}],"ConnectedNIC":"eth0"}`
	rec = e.unchanged("disjoint MACs", func() *httptest.ResponseRecorder { return e.do("POST", "/final-cloud-config.yaml", other) })
	assert.Equal(t, 409, rec.Code)
	for _, want := range []string{"08:00:27:8e:15:8a,08:00:27:8e:15:8b", "02:00:00:00:99:01", "mayuctl set " + s + " macs"} {
		assert.Contains(t, rec.Body.String(), want)
	}
	clone := `{"Serial":"clone-1","NetDevs":[{"Name":"eth0","MacAddress":"08:00:27:8e:15:8b"}]}`
	rec = e.unchanged("MAC of another host", func() *httptest.ResponseRecorder { return e.do("POST", "/final-cloud-config.yaml", clone) })
	assert.Equal(t, 409, rec.Code)
	assert.Contains(t, rec.Body.String(), "recorded on host "+s)

	// Re-bind (board swapped): the new MACs, then the report is accepted.
	require.Equal(t, 202, e.put(s, "set_mac_addresses", `{"MacAddresses":["02-00-00-00-99-01"]}`).Code)
	assert.Equal(t, []string{"02:00:00:00:99:01"}, e.host(s).MacAddresses)
	require.Equal(t, 200, e.do("POST", "/final-cloud-config.yaml", other).Code)
	assert.Contains(t, subjects(e.mem.Messages()), s+": updated host mac addresses")
	// Unbinding: the next report binds what it reports.
	for _, body := range []string{`{"MacAddresses":[]}`, `{"MacAddresses":null}`, `{}`} {
		require.Equal(t, 202, e.put(s, "set_mac_addresses", body).Code, body)
		assert.Empty(t, e.host(s).MacAddresses)
	}
	require.Equal(t, 200, e.do("POST", "/final-cloud-config.yaml", facts).Code)
	for _, tt := range []struct {
		body string
		code int
	}{{`{"MacAddresses":["nope"]}`, 400}, {`{"MacAddresses":[""]}`, 400}, {`{"MacAddresses":"02:00:00:00:99:01"}`, 400}} {
		rec := e.unchanged(tt.body, func() *httptest.ResponseRecorder { return e.put(s, "set_mac_addresses", tt.body) })
		assert.Equal(t, tt.code, rec.Code, tt.body)
	}
	require.Equal(t, 202, e.put(s, "set_installed", "").Code)
	rec = e.unchanged("unbinding an installed machine", func() *httptest.ResponseRecorder { return e.put(s, "set_mac_addresses", `{}`) })
	assert.Equal(t, 409, rec.Code)
}

// TestFailedRequestsChangeNothing: a request that ends in an error (a
// render failure, a refused value, an oversized record) leaves every
// record and the audit trail as they were.
func TestFailedRequestsChangeNothing(t *testing.T) {
	e := newEnv(t)
	require.Equal(t, 200, e.do("GET", "/first-stage-script/0800278e158a-0", "").Code)
	e.render.err = fmt.Errorf("%w: final: line 3: map has no entry for key", render.ErrRender)
	rec := e.unchanged("final config render failure", func() *httptest.ResponseRecorder {
		return e.do("POST", "/final-cloud-config.yaml", facts)
	})
	assert.Equal(t, 500, rec.Code)
	assert.Equal(t, host.Configured, e.host("0800278e158a-0").State, "not installing")
	rec = e.unchanged("first-stage render failure", func() *httptest.ResponseRecorder {
		return e.do("GET", "/first-stage-script/new-1", "")
	})
	assert.Equal(t, 500, rec.Code)
	e.render.err = nil

	tests := []struct {
		what, action, body string
		code               int
		reason             string
	}{
		{"path in CoreOSVersion", "override", `{"Overrides":{"CoreOSVersion":"../../../etc"}}`, 400, `override "CoreOSVersion" "../../../etc" cannot name a directory`},
		{"path in yochu_version", "override", `{"Overrides":{"yochu_version":"0.19/../../x"}}`, 400, "has character '/'"},
		{"RLO in provider id", "set_provider_id", `{"ProviderId":"rack\u202e7"}`, 400, "provider id has U+202E"},
		{"LS in metadata", "set_metadata", `{"FleetMetadata":["a=b\u2028c"]}`, 400, "U+2028"},
		{"NEL in override", "override", `{"Overrides":{"k":"a\u0085b"}}`, 400, "U+0085"},
		{"path in reported version", "boot_complete", `{"CoreOSVersion":"../../etc"}`, 400, "CoreOSVersion"},
		{"set state running", "set_state", `{"State":"running"}`, 409, "mark-fresh"},
		{"record over the cap", "override", `{"Overrides":{"k":"` + strings.Repeat("v", 900<<10) + `"}}`, 413, "over the cap of 65536"},
	}
	for _, tt := range tests {
		rec := e.unchanged(tt.what, func() *httptest.ResponseRecorder { return e.put("0800278e158a-0", tt.action, tt.body) })
		assert.Equal(t, tt.code, rec.Code, "%s: %s", tt.what, rec.Body.String())
		assert.Contains(t, rec.Body.String(), tt.reason, tt.what)
		assert.Equal(t, 1, strings.Count(rec.Body.String(), "\n"), "%s: one line", tt.what)
	}
	// Twenty 900 KB overrides: every one refused, the record stays small.
	for i := 0; i < 20; i++ {
		rec := e.put("0800278e158a-0", "override", fmt.Sprintf(`{"Overrides":{"k%d":"%s"}}`, i, strings.Repeat("v", 900<<10)))
		require.Equal(t, 413, rec.Code)
	}
	b, err := e.host("0800278e158a-0").Marshal()
	require.NoError(t, err)
	assert.Less(t, len(b), 2048)
}

func writeFileUnder(dir, path, content string) error {
	return os.WriteFile(filepath.Join(dir, path), []byte(content), 0o644)
}
