package host

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSerialScriptLists(t *testing.T) {
	assert.Equal(t, []string{"product_serial", "chassis_serial", "board_serial", "product_uuid"}, SerialSources())
	for _, p := range []string{"to be filled by o.e.m.", "default string", "system serial number", "0123456789", "none",
		"not specified", "n/a", "123456789", "chassis serial number", "base board serial number", "oem", "o.e.m."} {
		assert.True(t, rule.placeholders[p], "%q must be in machine-serial.sh's list", p)
	}
	s := SerialSources()
	s[0] = "changed"
	assert.Equal(t, "product_serial", SerialSources()[0], "callers get a copy")
}

func TestParseSerialScriptRefusesMalformedLists(t *testing.T) {
	good := "MAYU_SERIAL_SOURCES='a b'\nMAYU_SERIAL_PLACEHOLDERS='\nnone\n'\n"
	r, err := parseSerialScript(good)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, r.sources)
	assert.Equal(t, map[string]bool{"none": true}, r.placeholders)

	for name, script := range map[string]string{
		"no sources":         "MAYU_SERIAL_PLACEHOLDERS='\nnone\n'\n",
		"no placeholders":    "MAYU_SERIAL_SOURCES='a b'\n",
		"list not closed":    "MAYU_SERIAL_SOURCES='a b'\nMAYU_SERIAL_PLACEHOLDERS='\nnone\n",
		"not compared form":  "MAYU_SERIAL_SOURCES='a b'\nMAYU_SERIAL_PLACEHOLDERS='\nDefault String\n'\n",
		"dash in an entry":   "MAYU_SERIAL_SOURCES='a b'\nMAYU_SERIAL_PLACEHOLDERS='\nnot-set\n'\n",
		"two spaces":         "MAYU_SERIAL_SOURCES='a b'\nMAYU_SERIAL_PLACEHOLDERS='\nnot  set\n'\n",
		"empty sources line": "MAYU_SERIAL_SOURCES=''\nMAYU_SERIAL_PLACEHOLDERS='\nnone\n'\n",
	} {
		_, err := parseSerialScript(script)
		assert.Error(t, err, name)
	}
	assert.Panics(t, func() { mustParseSerialScript("") })
}

func TestCleanSerial(t *testing.T) {
	for raw, want := range map[string]string{
		"CZC1234ABC\n":        "CZC1234ABC",
		"  CZC1234ABC\n":      "CZC1234ABC",
		" CZ J 4021 7X \n":    "CZ-J-4021-7X",
		"AB  12":              "AB--12",
		"\tAB\t12\r\n":        "AB-12",
		"a\nb\n":              "a-b",
		"":                    "",
		" \n":                 "",
		"VMware-56 4d 1c 2a ": "VMware-56-4d-1c-2a",
	} {
		assert.Equal(t, want, CleanSerial(raw), "%q", raw)
	}
}

func TestIsPlaceholderSerial(t *testing.T) {
	for v, want := range map[string]bool{
		"0": true, "00000000": true, "To be filled by O.E.M.": true, "  to BE filled by o.e.m. ": true,
		"To-be-filled-by-O.E.M.": true, "to_be_filled_by_o.e.m.": true, "Default  String": true,
		"Default string": true, "Not Specified": true, "System Serial Number": true, "None": true,
		"0123456789": true, "123456789": true, "Chassis Serial Number": true, "Base-Board-Serial-Number": true,
		"OEM": true, "O.E.M.": true, "N/A": true, "XXXXXXXX": true, "FFFFFFFF": true, "ffff-ffff": true,
		"00000000-0000-0000-0000-000000000000": true, "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF": true,
		"...": true, "": true, " ": true, "-": true,
		"0800278e158a-0": false, "CZJ40217X": false, "VMware-56 4d": false, "10": false, "A0": false,
		"x": false, "ff": false, "fff": false, "4c4c4544-0042-3510-8052-b4c04f4b4e31": false,
		"none1": false, "default string 2": false, "oem-1234": false,
	} {
		assert.Equal(t, want, IsPlaceholderSerial(v), "%q", v)
	}
}

func TestCheckSerial(t *testing.T) {
	for _, ok := range []string{"0800278e158a-0", "CZC1234ABC", "4c4c4544-0042-3510-8052-b4c04f4b4e31", "x", "a:b_c.d-e"} {
		assert.NoError(t, CheckSerial(ok), "%q", ok)
	}
	markers := []string{"__SERIAL__", "__serial__", "{{.Serial}}", "${serial}", "$serial", "$SERIAL", "<serial>",
		"%SERIAL%", "`serial`", "  __SERIAL__ "}
	for _, m := range markers {
		err := CheckSerial(m)
		require.ErrorIs(t, err, ErrInvalidSerial, "%q", m)
		assert.Contains(t, err.Error(), "unsubstituted template marker", "%q", m)
	}
	for _, p := range []string{"To-be-filled-by-O.E.M.", "to-be-filled-by-o.e.m.", "Default-string", "0", "0000",
		"System-Serial-Number", "0123456789", "None", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"} {
		err := CheckSerial(p)
		require.ErrorIs(t, err, ErrInvalidSerial, "%q", p)
		assert.Contains(t, err.Error(), "vendor placeholder", "%q", p)
	}
	for _, e := range []string{"", "  ", "\n"} {
		err := CheckSerial(e)
		require.ErrorIs(t, err, ErrInvalidSerial, "%q", e)
		assert.Contains(t, err.Error(), "empty")
	}
	long := "__" + strings.Repeat("a", 100) + "__"
	assert.Contains(t, CheckSerial(long).Error(), "marker")
	assert.NoError(t, CheckSerial("__a"), "one pair of underscores is not a marker")
}
