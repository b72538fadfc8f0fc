package main

import (
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
)

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"1068.6.0":               "1068.6.0",
		`a\b "q" ünï 日本`:         `a\b "q" ünï 日本`,
		"a\nb\rc\td":             `a\nb\rc\td`,
		"\x1b[2J\x1b]0;t\x07":    `\x1b[2J\x1b]0;t\x07`,
		"a\u0085b\u2028c\u2029d": `a\u0085b\u2028c\u2029d`,
		"\u202eevil\u200b\ufeff": `\u202eevil\u200b\ufeff`,
		"a\U000e0001b":           `a\U000e0001b`,
		"bad\xff\xfe":            `bad\xff\xfe`,
		"\x00\x7f":               `\x00\x7f`,
	} {
		assert.Equal(t, want, printable(in), "%q", in)
	}
}

// hostileHost reported versions (and has a NIC name, provider id and
// metadata, as a 0.11 record or a hand edit could) with terminal escapes
// and line breaks that, printed raw, would clear the screen and add a
// forged row claiming a healthy machine.
func hostileHost() host.Host {
	forged := "1.0\r\n192.168.2.99  forged-serial  core-services  -  -  tok  role=x  1068.6.0  \"running\"  2016-08-09 15:49:02"
	return host.Host{
		Enabled: true, Serial: "evil-1", InternalAddr: net.ParseIP("192.168.2.50").To4(),
		Profile: "default", ProviderId: "p\x1b[2J\x1b[H", ConnectedNIC: "eth0\x1b[31m",
		FleetMetadata: host.FleetMeta{"role=a\u2028b"}, State: host.Running, LastBoot: bootTime,
		CoreOSVersion: forged, MayuVersion: "\x1b]0;pwned\x07", DockerVersion: "d\u0085e", YochuVersion: "\u202e1.0",
		EtcdVersion: "e\u2029f", FleetVersion: "\n", RktVersion: "r\x00", K8sVersion: "k\x7f",
	}
}

func TestListAndStatusEscapeWhatMachinesReported(t *testing.T) {
	f := startFake(t, append(fixtureHosts(), hostileHost())...)
	for _, args := range [][]string{
		{"list"},
		{"list", "--no-legend"},
		{"list", "--fields=serial,coreos,mayu,yochu,docker,etcd,fleet,rkt,k8s,providerid,metadata"},
	} {
		r := mayuctl(t, f.args(args...)...)
		require.Equal(t, 0, r.code, r.stderr)
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		want := len(fixtureHosts()) + 1
		if args[len(args)-1] != "--no-legend" {
			want++ // the header
		}
		assert.Len(t, lines, want, "one row per host: %q", r.stdout)
		assertNoRawControls(t, r.stdout)
		assert.NotContains(t, r.stdout, "\nforged-serial")
		for _, l := range lines {
			if strings.Contains(l, "forged-serial") {
				assert.True(t, strings.HasPrefix(l, "192.168.2.50") || strings.HasPrefix(l, "evil-1"), "the forged text stays inside evil-1's row: %q", l)
			}
		}
	}
	r := mayuctl(t, f.args("list", "--fields=serial,coreos,mayu")...)
	assert.Regexp(t, `(?m)^evil-1 +1\.0\\r\\n192\.168\.2\.99  forged-serial`, r.stdout)
	assert.Contains(t, r.stdout, `\x1b]0;pwned\x07`)

	r = mayuctl(t, f.args("status", "evil-1")...)
	require.Equal(t, 0, r.code, r.stderr)
	assertNoRawControls(t, r.stdout)
	assert.Len(t, strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n"), 25, "one line per field")
	for _, l := range []string{
		`Provider ID:         p\x1b[2J\x1b[H`,
		`ConnectedNIC:        eth0\x1b[31m`,
		`Metadata:            role=a\u2028b`,
		`Mayu:                \x1b]0;pwned\x07`,
		`Yochu:               \u202e1.0`,
		`Fleet:               \n`,
		`Rkt:                 r\x00`,
	} {
		assert.Contains(t, r.stdout, l+"\n")
	}
}

func assertNoRawControls(t *testing.T, out string) {
	t.Helper()
	body := strings.ReplaceAll(out, "\n", "")
	r, bad := host.BadRune(body)
	assert.False(t, bad, "raw %U reached the terminal: %q", r, out)
}
