package render

import (
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDataURLRoundTrip(t *testing.T) {
	for _, s := range []string{
		"",
		"plain",
		"[Match]\nName=en*\n\n[Network]\nAddress=192.168.2.21/24\n",
		"100% of \"quotes\", #hashes, spaces & <angles> {braces} | pipes \\ back\tslash",
		"ünïcödé ✓",
	} {
		u := dataURL(s)
		require.True(t, strings.HasPrefix(u, "data:,"), u)
		body := strings.TrimPrefix(u, "data:,")
		assert.NotContains(t, body, " ")
		assert.NotContains(t, body, "#")
		assert.NotContains(t, body, "\n")
		got, err := url.PathUnescape(body)
		require.NoError(t, err)
		assert.Equal(t, s, got)
	}
	assert.Equal(t, "data:,", dataURL(nil), "a missing templates_env key encodes as empty")
}

func TestCIDR(t *testing.T) {
	tests := []struct {
		addr    interface{}
		size    interface{}
		want    string
		wantErr string
	}{
		{net.ParseIP("192.168.2.21"), "", "192.168.2.21/24", ""},
		{net.ParseIP("192.168.2.21").To4(), nil, "192.168.2.21/24", ""},
		{"10.0.0.5", "16", "10.0.0.5/16", ""},
		{"10.0.0.5", "/20", "10.0.0.5/20", ""},
		{"10.0.0.5", "255.255.255.0", "10.0.0.5/24", ""},
		{"10.0.0.5", "255.255.240.0", "10.0.0.5/20", ""},
		{"2001:db8::5", "64", "2001:db8::5/64", ""},
		{"10.0.0.5", "33", "", "out of range"},
		{"10.0.0.5", "255.0.255.0", "", "not a contiguous netmask"},
		{"10.0.0.5", "big", "", "neither a prefix length nor a netmask"},
		{net.IP(nil), "24", "", "not an IP address"},
		{nil, "24", "", "not an IP address"},
	}
	for _, tc := range tests {
		got, err := cidr(tc.addr, tc.size)
		if tc.wantErr != "" {
			require.Error(t, err, "%v %v", tc.addr, tc.size)
			assert.Contains(t, err.Error(), tc.wantErr)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, tc.want, got)
	}
}

func TestSmallFuncs(t *testing.T) {
	assert.Equal(t, "aGVsbG8=", b64("hello"))
	assert.Equal(t, "", b64(nil))

	assert.Equal(t, "x", defaultValue("x", nil))
	assert.Equal(t, "x", defaultValue("x", ""))
	assert.Equal(t, "x", defaultValue("x", []interface{}{}))
	assert.Equal(t, "x", defaultValue("x", map[string]interface{}{}))
	assert.Equal(t, "x", defaultValue("x", 0))
	assert.Equal(t, "x", defaultValue("x", (*int)(nil)))
	assert.Equal(t, "y", defaultValue("x", "y"))
	assert.Equal(t, true, defaultValue(false, true))

	for _, tc := range []struct {
		list interface{}
		want string
	}{
		{[]string{"a", "b"}, "a b"},
		{[]interface{}{"a", 1, true}, "a 1 true"},
		{"single", "single"},
		{nil, ""},
		{[]string{}, ""},
	} {
		got, err := join(" ", tc.list)
		require.NoError(t, err)
		assert.Equal(t, tc.want, got)
	}
	_, err := join(",", 42)
	assert.ErrorContains(t, err, "want a list")

	assert.Equal(t, "  a\n\n  b\n", indent(2, "a\n\nb\n"))
	assert.Equal(t, "    a", indent(4, "a"))
	assert.Equal(t, "", indent(4, nil))

	assert.Equal(t, `"ssh-rsa AAAA: #x \"q\"\n"`, quote("ssh-rsa AAAA: #x \"q\"\n"))
	assert.Equal(t, `""`, quote(nil))
	assert.Equal(t, `"3"`, quote(3))
	assert.Equal(t, `"<&>"`, quote("<&>"), "no HTML escaping in YAML/JSON strings")

	_, err = fail("stop here")
	assert.EqualError(t, err, "stop here")
}
