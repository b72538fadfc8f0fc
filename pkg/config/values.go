package config

// What each value of config.yaml may hold. The rule of a value follows from
// where it ends up: dnsmasq's configuration is one option per line, the
// final configs are YAML and systemd units rendered from text templates,
// versions and tokens become path elements of files and URLs. A value that
// could end a line there, or step out of a directory, is refused.

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"unicode"

	"mayu/pkg/host"
)

// versionRe: an OS or component version. It names a directory
// (images/<version>/), a URL path element and a command-line argument, so
// it starts with a letter or digit (never ".", ".." or an option) and holds
// no separator of any of those.
var versionRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)

// ifNameRe: a Linux interface name is shorter than IFNAMSIZ (16) and has no
// '/', ':' or white space. dnsmasq's interface= also splits at ',', so the
// alphabet is the one interface names use in practice.
var ifNameRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,15}$`)

// hostLabelRe: one label of a DNS host name (RFC 1123).
var hostLabelRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// subnetSizeRe: a prefix length 0-32 without sign or leading zeros.
var subnetSizeRe = regexp.MustCompile(`^([0-9]|[12][0-9]|3[0-2])$`)

func validIfName(s string) bool { return ifNameRe.MatchString(s) && s != "." && s != ".." }

// text refuses a value with a character that no stored string may hold
// (host.BadRune: invalid UTF-8, Cc, Cf, Zl, Zp), as it would end or hide a
// line in a rendered file.
func (k *checker) text(path, what, s string) bool {
	if r, bad := host.BadRune(s); bad {
		k.add(path, "%s %q has the control or format character %U: it would break the line it is rendered into", what, s, r)
		return false
	}
	return true
}

func (k *checker) version(path, what, s string) {
	if k.text(path, what, s) && !versionRe.MatchString(s) {
		k.add(path, "%s %q is not a version: at most 64 letters, digits, '.', '_', '+' and '-', first a letter or digit (it names a directory and a URL path element)", what, s)
	}
}

// ipv4 parses a dotted-quad IPv4 address; "::ffff:a.b.c.d" is refused, as
// dnsmasq's ranges and the URLs built from bind_addr take the plain form.
func (k *checker) ipv4(path, what, s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		k.add(path, "%s %q is not an IPv4 address", what, s)
		return netip.Addr{}, false
	}
	return a, true
}

// ip parses an IPv4 or IPv6 address without a zone (a zone is free text).
func (k *checker) ip(path, what, s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		k.add(path, "%s %q is not an IP address", what, s)
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// server accepts an IP address or a DNS host name (an NTP server).
func (k *checker) server(path, what, s string) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return
	}
	if !validHostName(s) {
		k.add(path, "%s %q is neither an IP address nor a host name", what, s)
	}
}

func validHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !hostLabelRe.MatchString(l) {
			return false
		}
	}
	return true
}

// routable: an address a machine can send to (not 0.0.0.0, multicast or
// the limited broadcast).
func routable(a netip.Addr) bool {
	return !a.IsUnspecified() && !a.IsMulticast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// prefixLen returns the prefix length of subnet_size: "" (24, the size of
// nearly every provisioning LAN and the default of the net_address
// snippet), a prefix length "0" to "32", or a contiguous dotted netmask.
func prefixLen(size string) (int, bool) {
	if size == "" {
		return 24, true
	}
	if subnetSizeRe.MatchString(size) {
		var n int
		_, _ = fmt.Sscan(size, &n)
		return n, true
	}
	m, err := netip.ParseAddr(size)
	if err != nil || !m.Is4() {
		return 0, false
	}
	b := m.As4()
	ones, bits := net.IPMask(b[:]).Size()
	return ones, bits == 32
}

// ipRange checks an inclusive IPv4 range. Machines get its addresses, so it
// must not reach into loopback, multicast or the reserved block above it.
func (k *checker) ipRange(r IPRange, path string, required bool) (span, bool) {
	if r.Start == "" && r.End == "" {
		if required {
			k.add(path, "%s is required", path)
		}
		return span{}, false
	}
	lo, okLo := k.ipv4(path+".start", path+".start", r.Start)
	hi, okHi := k.ipv4(path+".end", path+".end", r.End)
	if !okLo || !okHi {
		return span{}, false
	}
	s := span{IPToUint32(lo.AsSlice()), IPToUint32(hi.AsSlice())}
	if s.lo > s.hi {
		k.add(path, "%s is reversed: start %s is after end %s", path, r.Start, r.End)
		return span{}, false
	}
	for _, bad := range []struct {
		block span
		name  string
	}{
		{span{127 << 24, 128<<24 - 1}, "loopback 127.0.0.0/8"},
		{span{224 << 24, 1<<32 - 1}, "multicast and reserved 224.0.0.0/3"},
	} {
		if s.overlaps(bad.block) {
			k.add(path, "%s %s-%s reaches into %s: machines cannot use those addresses", path, r.Start, r.End, bad.name)
			return span{}, false
		}
	}
	return s, true
}

// tag is a fleet metadata tag, "key=value". Tags are joined with ',' into
// one value (MAYU_METADATA=..., fleet's metadata), so a ',' or white space
// would make two tags or a broken line.
func (k *checker) tag(path, what, t string) {
	if !k.text(path, what, t) {
		return
	}
	key, _, hasEq := strings.Cut(t, "=")
	switch {
	case !hasEq || key == "":
		k.add(path, "%s %q is not key=value", what, t)
	case strings.ContainsFunc(t, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }):
		k.add(path, "%s %q has a ',' or white space: tags are joined with ',' into one value", what, t)
	}
}

// templatesEnv checks templates_env: free-form, but every key and string
// at any depth is rendered into the final configs, so none may break a
// line; the keys the shipped templates use in a command line, a URL or a
// list are held to their shape.
func (k *checker) templatesEnv(env map[string]interface{}) {
	for key, v := range env {
		path := "templates_env." + key
		what := "templates_env." + key
		if !k.text(path, "templates_env key", key) {
			continue
		}
		if !k.envValue(path, what, v) {
			continue
		}
		switch {
		case key == "ssh_authorized_keys":
			k.sshKeys(path, what, v)
		case key == "mayu_http_endpoint" && v != nil:
			if u, err := url.Parse(fmt.Sprint(v)); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
				strings.ContainsFunc(fmt.Sprint(v), unicode.IsSpace) {
				k.add(path, "%s %q is not an http(s) URL", what, fmt.Sprint(v))
			}
		case strings.HasSuffix(key, "_version") && v != nil:
			// yochu_version, docker_version, ...: a URL path element and
			// a command-line argument of the Yochu unit.
			if s, scalar := scalarString(v); !scalar {
				k.add(path, "%s must be a single version, not a list or map", what)
			} else if s != "" {
				k.version(path, what, s)
			}
		}
	}
}

// envValue applies the text rule to every key and string inside v.
func (k *checker) envValue(path, what string, v interface{}) bool {
	ok := true
	switch t := v.(type) {
	case string:
		return k.text(path, what, t)
	case []interface{}:
		for i, x := range t {
			ok = k.envValue(fmt.Sprintf("%s.%d", path, i), fmt.Sprintf("%s[%d]", what, i), x) && ok
		}
	case map[string]interface{}:
		for key, x := range t {
			if !k.text(path, what+" key", key) {
				ok = false
				continue
			}
			ok = k.envValue(path+"."+key, what+"."+key, x) && ok
		}
	case map[interface{}]interface{}:
		for key, x := range t {
			ks := fmt.Sprint(key)
			if !k.text(path, what+" key", ks) {
				ok = false
				continue
			}
			ok = k.envValue(path+"."+ks, what+"."+ks, x) && ok
		}
	}
	return ok
}

// sshKeys: the templates write one "- key" list item per entry, so it is
// a list of non-empty strings (each already single-line).
func (k *checker) sshKeys(path, what string, v interface{}) {
	if v == nil {
		return
	}
	list, ok := v.([]interface{})
	if !ok {
		k.add(path, "%s must be a list of public keys, one per item", what)
		return
	}
	for i, x := range list {
		if s, isStr := x.(string); !isStr || strings.TrimSpace(s) == "" {
			k.add(fmt.Sprintf("%s.%d", path, i), "%s[%d] is not a public key line", what, i)
		}
	}
}

// scalarString formats a YAML scalar (a version may decode as a number).
func scalarString(v interface{}) (string, bool) {
	switch v.(type) {
	case []interface{}, map[string]interface{}, map[interface{}]interface{}:
		return "", false
	}
	return fmt.Sprint(v), true
}
