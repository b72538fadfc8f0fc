package config

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// full is valid with every field set, so each case below can spoil one line
// of it. Line numbers are the file's (valid begins with an empty line).
var full = strings.NewReplacer(
	"  router: 192.168.2.2\n", `  ntp: [pool.ntp.org, 192.168.2.3]
  router: 192.168.2.1
  subnet_size: "24"
  subnet_gateway: 192.168.2.1
  network_model: bond
`,
	"    tags: [\"role-core=true\"]\n", `    tags: ["role-core=true"]
    coreos_version: "1122.2.0"
    etcd_cluster_token: 41f07d10ab835b22071a32d5c1b75a6d
`,
	"  ssh_authorized_keys: [\"ssh-rsa AAAA\"]\n", `  ssh_authorized_keys: ["ssh-rsa AAAA user@example"]
  mayu_http_endpoint: "http://192.168.2.2:4080"
  yochu_version: 0.19.1
  docker_version: "1.12.1"
  custom: {nested: [ok, 3, true], text: "two words"}
`).Replace(valid)

// mustParse parses full with the replacements (old, new, ...) applied.
func mustParse(t *testing.T, oldnew ...string) *Config {
	t.Helper()
	c, err := Parse([]byte(strings.NewReplacer(oldnew...).Replace(full)))
	require.NoError(t, err)
	return c
}

func TestFullConfigIsValid(t *testing.T) {
	c := mustParse(t)
	assert.Empty(t, c.Warnings)
	assert.Equal(t, "24", c.Network.SubnetSize)
	assert.Equal(t, []string{"pool.ntp.org", "192.168.2.3"}, c.Network.NTP)
}

// TestValuesThatReachRenderedFiles spoils, one at a time, every value that
// ends up in dnsmasq's configuration, a final config, a URL or a path, with
// what would inject a line or a path element there, and expects the problem
// on the value's line.
func TestValuesThatReachRenderedFiles(t *testing.T) {
	tests := []struct {
		name      string
		from, to  string // a line of full and its spoiled version
		wantLine  int
		wantProbl string
	}{
		// network.interface: dnsmasq's interface= line.
		{"interface with a line", "interface: eth1", `interface: "eth1\ndhcp-script=/x"`, 5,
			`network.interface "eth1\ndhcp-script=/x" is not an interface name`},
		{"interface of 16 characters", "interface: eth1", "interface: abcdefghijklmnop", 5, `network.interface "abcdefghijklmnop" is not an interface name`},
		{"interface alias", "interface: eth1", `interface: "eth1:0"`, 5, `network.interface "eth1:0" is not an interface name`},
		{"interface list", "interface: eth1", `interface: "eth1,eth2"`, 5, `network.interface "eth1,eth2" is not an interface name`},
		{"interface with a slash", "interface: eth1", `interface: "../x"`, 5, `network.interface "../x" is not an interface name`},
		{"interface dot-dot", "interface: eth1", `interface: ".."`, 5, `network.interface ".." is not an interface name`},
		// Addresses: parsed, so nothing but an address gets through.
		{"bind_addr with a line", "bind_addr: 192.168.2.2", `bind_addr: "192.168.2.2\nx"`, 6, `network.bind_addr "192.168.2.2\nx" is not an IPv4 address`},
		{"bind_addr mapped", "bind_addr: 192.168.2.2", `bind_addr: "::ffff:192.168.2.2"`, 6, `network.bind_addr "::ffff:192.168.2.2" is not an IPv4 address`},
		{"bind_addr unspecified", "bind_addr: 192.168.2.2", "bind_addr: 0.0.0.0", 6, "network.bind_addr 0.0.0.0 cannot be reached by machines"},
		{"bind_addr multicast", "bind_addr: 192.168.2.2", "bind_addr: 239.1.1.1", 6, "network.bind_addr 239.1.1.1 cannot be reached by machines"},
		{"bootstrap start with a line", "{start: 192.168.2.100,", `{start: "192.168.2.100\nx",`, 7, `network.bootstrap_range.start "192.168.2.100\nx" is not an IPv4 address`},
		{"ip_range end with a line", "end: 192.168.2.99}", `end: "192.168.2.99\nx"}`, 8, `network.ip_range.end "192.168.2.99\nx" is not an IPv4 address`},
		{"ip_range in loopback", "{start: 192.168.2.21, end: 192.168.2.99}", "{start: 127.0.0.2, end: 127.0.0.9}", 8, "network.ip_range 127.0.0.2-127.0.0.9 reaches into loopback"},
		{"ip_range in multicast", "{start: 192.168.2.21, end: 192.168.2.99}", "{start: 223.255.255.1, end: 224.0.0.9}", 8, "network.ip_range 223.255.255.1-224.0.0.9 reaches into multicast"},
		{"dns with a line", "dns: [8.8.8.8]", `dns: ["8.8.8.8\nserver=/x"]`, 9, `network.dns[0] "8.8.8.8\nserver=/x" is not an IP address`},
		{"dns with a zone", "dns: [8.8.8.8]", `dns: ["fe80::1%eth0"]`, 9, `network.dns[0] "fe80::1%eth0" is not an IP address`},
		{"ntp with a line", "ntp: [pool.ntp.org, 192.168.2.3]", `ntp: ["pool.ntp.org\nDNS=1.2.3.4"]`, 10, `network.ntp[0] "pool.ntp.org\nDNS=1.2.3.4" is neither an IP address nor a host name`},
		{"ntp with a space", "ntp: [pool.ntp.org, 192.168.2.3]", `ntp: ["pool.ntp.org x"]`, 10, `network.ntp[0] "pool.ntp.org x" is neither`},
		{"router with a line", "router: 192.168.2.1", `router: "192.168.2.1\nx"`, 11, `network.router "192.168.2.1\nx" is not an IP address`},
		{"gateway with a line", "subnet_gateway: 192.168.2.1", `subnet_gateway: "192.168.2.1\nx"`, 13, `network.subnet_gateway "192.168.2.1\nx" is not an IP address`},
		// subnet_size: a prefix length or a netmask, nothing else.
		{"subnet_size with a line", `subnet_size: "24"`, `subnet_size: "24\nfoo"`, 12, `network.subnet_size "24\nfoo" is neither a prefix length 0-32 nor a dotted netmask`},
		{"subnet_size 33", `subnet_size: "24"`, "subnet_size: 33", 12, `network.subnet_size "33" is neither`},
		{"subnet_size with a slash", `subnet_size: "24"`, `subnet_size: "/24"`, 12, `network.subnet_size "/24" is neither`},
		{"subnet_size holey mask", `subnet_size: "24"`, "subnet_size: 255.0.255.0", 12, `network.subnet_size "255.0.255.0" is neither`},
		// Versions: a directory, a URL path element, an argument.
		{"default version path", "default_coreos_version: 1068.6.0", "default_coreos_version: ../../etc", 2, `default_coreos_version "../../etc" is not a version`},
		{"default version with a line", "default_coreos_version: 1068.6.0", `default_coreos_version: "1068.6.0\nx"`, 2, `default_coreos_version "1068.6.0\nx" has the control or format character U+000A`},
		{"profile version path", `coreos_version: "1122.2.0"`, "coreos_version: ../../etc", 19, `profiles[0].coreos_version "../../etc" is not a version`},
		{"profile version option", `coreos_version: "1122.2.0"`, "coreos_version: --help", 19, `profiles[0].coreos_version "--help" is not a version`},
		// The etcd token: a URL path element and a file name.
		{"token with spaces", "etcd_cluster_token: 41f07d10ab835b22071a32d5c1b75a6d", `etcd_cluster_token: "a token"`, 20, `profiles[0].etcd_cluster_token "a token" is not a discovery token`},
		{"token with a slash", "etcd_cluster_token: 41f07d10ab835b22071a32d5c1b75a6d", "etcd_cluster_token: ../x", 20, `profiles[0].etcd_cluster_token "../x" is not a discovery token`},
		// Profiles: the name is in a comment line of the final config, tags
		// in MAYU_METADATA= and fleet's metadata.
		{"profile name with a line", "- name: core-services", `- name: "core\nwrite_files: []"`, 16, `profiles[0].name "core\nwrite_files: []" has the control or format character U+000A`},
		{"tag with a line", `tags: ["role-core=true"]`, `tags: ["role-core=true\nMAYU_URL=x"]`, 18, `profiles[0].tags[0] "role-core=true\nMAYU_URL=x" has the control or format character U+000A`},
		{"tag with a comma", `tags: ["role-core=true"]`, `tags: ["role-core=true,evil=1"]`, 18, `profiles[0].tags[0] "role-core=true,evil=1" has a ',' or white space`},
		{"tag without a key", `tags: ["role-core=true"]`, `tags: ["role-core"]`, 18, `profiles[0].tags[0] "role-core" is not key=value`},
		// templates_env: every string at any depth, and the keys the
		// shipped templates use in a list, a URL or a command line.
		{"ssh key with a line", `ssh_authorized_keys: ["ssh-rsa AAAA user@example"]`, `ssh_authorized_keys: ["ssh-rsa AAAA\nssh-rsa EVIL"]`, 23,
			`templates_env.ssh_authorized_keys[0] "ssh-rsa AAAA\nssh-rsa EVIL" has the control or format character U+000A`},
		{"ssh key with a carriage return", `ssh_authorized_keys: ["ssh-rsa AAAA user@example"]`, `ssh_authorized_keys: ["ssh-rsa AAAA\rx"]`, 23, `templates_env.ssh_authorized_keys[0] "ssh-rsa AAAA\rx" has the control or format character U+000D`},
		{"ssh keys not a list", `ssh_authorized_keys: ["ssh-rsa AAAA user@example"]`, `ssh_authorized_keys: "ssh-rsa AAAA"`, 23, "templates_env.ssh_authorized_keys must be a list of public keys"},
		{"ssh key empty", `ssh_authorized_keys: ["ssh-rsa AAAA user@example"]`, `ssh_authorized_keys: [""]`, 23, "templates_env.ssh_authorized_keys[0] is not a public key line"},
		{"endpoint not http", `mayu_http_endpoint: "http://192.168.2.2:4080"`, `mayu_http_endpoint: "ftp://x"`, 24, `templates_env.mayu_http_endpoint "ftp://x" is not an http(s) URL`},
		{"yochu version path", "yochu_version: 0.19.1", "yochu_version: 0.19.1/../../x", 25, `templates_env.yochu_version "0.19.1/../../x" is not a version`},
		{"docker version argument", `docker_version: "1.12.1"`, `docker_version: "1.12 --privileged"`, 26, `templates_env.docker_version "1.12 --privileged" is not a version`},
		{"version a list", `docker_version: "1.12.1"`, `docker_version: [1, 2]`, 26, "templates_env.docker_version must be a single version"},
		{"line separator", `text: "two words"`, `text: "a\u2028b"`, 27, `templates_env.custom.text "a\u2028b" has the control or format character U+2028`},
		{"paragraph separator", `text: "two words"`, `text: "a\u2029b"`, 27, `templates_env.custom.text "a\u2029b" has the control or format character U+2029`},
		{"next line", `text: "two words"`, `text: "a\Nb"`, 27, `templates_env.custom.text "a\u0085b" has the control or format character U+0085`},
		{"zero width space", `text: "two words"`, `text: "a\u200bb"`, 27, `templates_env.custom.text "a\u200bb" has the control or format character U+200B`},
		{"bidi override", `text: "two words"`, `text: "a\u202eb"`, 27, `templates_env.custom.text "a\u202eb" has the control or format character U+202E`},
		{"tab", `text: "two words"`, `text: "a\tb"`, 27, `templates_env.custom.text "a\tb" has the control or format character U+0009`},
		{"nested list item", "nested: [ok, 3, true]", `nested: ["ok\nx", 4, true]`, 27, `templates_env.custom.nested[0] "ok\nx" has the control or format character U+000A`},
		{"key with a line", "custom: {", `"bad\nkey": 1` + "\n  custom: {", 27, `templates_env key "bad\nkey" has the control or format character U+000A`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Contains(t, full, tt.from)
			_, err := Parse([]byte(strings.Replace(full, tt.from, tt.to, 1)))
			require.Error(t, err)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			assert.Equal(t, []string{"line " + strconv.Itoa(tt.wantLine) + ": "}, prefixesOf(ve.Problems, tt.wantProbl), "problems: %q", ve.Problems)
		})
	}
}

// prefixesOf returns the "line N: " prefix of each problem containing want.
func prefixesOf(problems []string, want string) []string {
	var out []string
	for _, p := range problems {
		if i := strings.Index(p, want); i >= 0 {
			out = append(out, p[:i])
		}
	}
	return out
}

func TestValuesThatAreAccepted(t *testing.T) {
	for _, tt := range []struct{ from, to string }{
		{"interface: eth1", "interface: enp0s25.100"},
		{"interface: eth1", "interface: br-lan_0"},
		{"interface: eth1", "interface: abcdefghijklmno"}, // 15, the most IFNAMSIZ allows
		{`subnet_size: "24"`, "subnet_size: 24"},
		{`subnet_size: "24"`, "subnet_size: 255.255.252.0"},
		{`subnet_size: "24"`, `subnet_size: ""`},
		{"dns: [8.8.8.8]", "dns: [8.8.8.8, 2001:4860:4860::8888]"},
		{`coreos_version: "1122.2.0"`, "coreos_version: current"},
		{`docker_version: "1.12.1"`, "docker_version: v2.2.5-gs-1"},
		{`docker_version: "1.12.1"`, "docker_version: 1.1"}, // a YAML float
		{`text: "two words"`, `text: "naïve – ok ✓"`},
		{`tags: ["role-core=true"]`, `tags: ["role-core=true", "quobyte=true"]`},
	} {
		t.Run(tt.to, func(t *testing.T) { mustParse(t, tt.from, tt.to) })
	}
}

// A type error no longer hides the rest: every problem is listed in the
// order of the file, and the field with the type error gets no second,
// misleading message ("is required") from its zero value.
func TestTypeAndSemanticErrorsTogether(t *testing.T) {
	spoiled := strings.NewReplacer(
		"  interface: eth1", "  interface: [eth1]",
		"end: 192.168.2.99}", "end: 192.168.2.20}",
		"    quantity: 3", "    quantity: three",
		"  - name: default", "  - name: core-services\n    quantity: -1",
		"  yochu_version: 0.19.1", "  yochu_version: ../x",
	).Replace(full) + "extra_key: 1\n"
	_, err := Parse([]byte(spoiled))
	require.Error(t, err)
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, []string{
		"line 5: cannot unmarshal !!seq into string",
		"line 8: network.ip_range is reversed: start 192.168.2.21 is after end 192.168.2.20",
		"line 17: cannot unmarshal !!str `three` into int",
		"line 21: profiles[1]: duplicate profile name \"core-services\"",
		"line 22: profiles[1] \"core-services\": quantity -1 is negative",
		"line 26: templates_env.yochu_version \"../x\" is not a version: at most 64 letters, digits, '.', '_', '+' and '-', first a letter or digit (it names a directory and a URL path element)",
		"line 29: field extra_key not found in type config.Config",
	}, ve.Problems)
	assert.True(t, strings.HasPrefix(err.Error(), "7 problem(s):\n  line 5: "), err.Error())
}

// A whole section of the wrong type is one problem, not one per missing key.
func TestSectionOfWrongType(t *testing.T) {
	_, err := Parse([]byte("default_coreos_version: 1068.6.0\nnetwork: 5\nprofiles: [{name: a, quantity: -1}]\n"))
	require.Error(t, err)
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, []string{
		"line 2: cannot unmarshal !!int `5` into config.Network",
		`line 3: profiles[0] "a": quantity -1 is negative`,
	}, ve.Problems)

	_, err = Parse([]byte("- a\n- b\n"))
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, []string{"line 1: cannot unmarshal !!seq into config.Config"}, ve.Problems)
}
