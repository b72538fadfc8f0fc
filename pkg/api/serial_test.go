package api

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
)

// Placeholder serials and unsubstituted markers are refused with 400 and a
// reason, by both machine routes that register, and take no address and no
// profile slot: with exactly three addresses and a profile of three, three
// real machines still get both afterwards.
func TestPlaceholderAndMarkerSerialsRefused(t *testing.T) {
	e := newEnvWithRange(t, "192.168.2.23")
	bad := map[string]string{
		"__SERIAL__":                           "unsubstituted template marker",
		"__serial__":                           "unsubstituted template marker",
		"{{.Serial}}":                          "unsubstituted template marker",
		"${serial}":                            "unsubstituted template marker",
		"$serial":                              "unsubstituted template marker",
		"<serial>":                             "unsubstituted template marker",
		"To-be-filled-by-O.E.M.":               "vendor placeholder",
		"Default-string":                       "vendor placeholder",
		"System-Serial-Number":                 "vendor placeholder",
		"0123456789":                           "vendor placeholder",
		"0":                                    "vendor placeholder",
		"00000000-0000-0000-0000-000000000000": "vendor placeholder",
		"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF": "vendor placeholder",
	}
	for serial, reason := range bad {
		rec := e.do("GET", "/first-stage-script/"+url.PathEscape(serial), "")
		assert.Equal(t, 400, rec.Code, "GET first-stage-script %q: %s", serial, rec.Body.String())
		assert.Contains(t, rec.Body.String(), reason, serial)
		assert.Equal(t, 1, strings.Count(rec.Body.String(), "\n"), "one-line reason")

		body := fmt.Sprintf(`{"Serial":%q,"NetDevs":[{"Name":"eth0","MacAddress":"02:00:00:00:00:01"}],"ConnectedNIC":"eth0"}`, serial)
		rec = e.do("POST", "/final-cloud-config.yaml", body)
		assert.Equal(t, 400, rec.Code, "POST final-cloud-config %q: %s", serial, rec.Body.String())
		assert.Contains(t, rec.Body.String(), reason, serial)
	}
	assert.Empty(t, e.mem.List(), "a refused serial leaves no record")

	for i, serial := range []string{"CZC1234ABC", "4c4c4544-0042-3510-8052-b4c04f4b4e31", "0800278e158a-0"} {
		rec := e.do("GET", "/first-stage-script/"+serial, "")
		require.Equal(t, 200, rec.Code, rec.Body.String())
		h := e.host(strings.ToLower(serial))
		assert.Equal(t, fmt.Sprintf("192.168.2.%d", 21+i), h.InternalAddr.String(), serial)
		assert.Equal(t, "core-services", h.Profile, serial)
	}
}

func TestMachineSerialScriptServed(t *testing.T) {
	e := newEnv(t)
	rec := e.do("GET", "/machine-serial.sh", "")
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, host.SerialScript, rec.Body.String())
	assert.Equal(t, "text/x-shellscript; charset=utf-8", rec.Header().Get("Content-Type"))
	assert.Contains(t, rec.Body.String(), "mayu_machine_serial()")

	rec = e.do("HEAD", "/machine-serial.sh", "")
	assert.Equal(t, 200, rec.Code)
}
