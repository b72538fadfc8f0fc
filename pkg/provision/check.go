package provision

import (
	"fmt"
	"strings"

	"mayu/pkg/host"
)

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// checkIfName accepts what Linux accepts as an interface name (at most 15
// characters, no white space or '/'), in the characters real names use. The
// value ends up in rendered configs, so anything else is refused up front
// rather than breaking the machine's final config later.
func checkIfName(name string) error {
	if len(name) > 15 {
		return fmt.Errorf("%w: interface name %q is longer than 15 characters", ErrInvalid, name[:15]+"...")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-@:", c)) {
			return fmt.Errorf("%w: interface name %q has character %q", ErrInvalid, name, c)
		}
	}
	return nil
}

// checkText refuses what no stored string may hold (host.BadRune: invalid
// UTF-8, control and format characters, line and paragraph separators) in
// values that are rendered into configs; the error wraps ErrInvalid (400).
func checkText(what, s string) error {
	if err := host.CheckText(what, s); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// maxVersionLen bounds a version: real ones ("1068.6.0", "v2.2.5-gs-1")
// are a dozen characters.
const maxVersionLen = 64

// checkVersion accepts what can name a version directory (images/<version>/,
// yochu/<name>/<version>/): letters, digits and ".-_+", not starting with a
// dot, so no path separator, no "." or "..", nothing hidden. Empty is
// accepted: it means "no version of its own".
func checkVersion(what, v string) error {
	if v == "" {
		return nil
	}
	if len(v) > maxVersionLen {
		return fmt.Errorf("%w: %s %q... is longer than %d characters", ErrInvalid, what, v[:maxVersionLen], maxVersionLen)
	}
	if v[0] == '.' {
		return fmt.Errorf("%w: %s %q cannot name a directory (starts with '.')", ErrInvalid, what, v)
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-_+", c)) {
			return fmt.Errorf("%w: %s %q has character %q (a version is letters, digits and \".-_+\")", ErrInvalid, what, v, c)
		}
	}
	return nil
}

// isVersionKey reports whether an override names a version: CoreOSVersion
// selects the images directory, the templates put yochu_version and its
// siblings into download URLs.
func isVersionKey(k string) bool {
	return strings.HasSuffix(strings.ToLower(k), "version")
}

// checkValue applies checkText to every key and string inside a JSON value.
func checkValue(what string, v interface{}) error {
	if err := host.CheckValue(what, v); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// checkOverride checks one override: its key and value are text without
// hidden characters, and a version's value (isVersionKey) is a scalar that
// can name a directory, as it will once the templates or the images route
// use it.
func checkOverride(k string, v interface{}) error {
	// %q: the key is the caller's text and the error is shown to the
	// operator; it must not carry the very characters it refuses.
	what := fmt.Sprintf("override %q", k)
	if strings.TrimSpace(k) == "" {
		return fmt.Errorf("%w: empty override key", ErrInvalid)
	}
	if err := checkText(fmt.Sprintf("override key %q", k), k); err != nil {
		return err
	}
	if err := checkValue(what, v); err != nil {
		return err
	}
	if !isVersionKey(k) || v == nil {
		return nil
	}
	switch v.(type) {
	case map[string]interface{}, []interface{}:
		return fmt.Errorf("%w: %s is a version and must be a string", ErrInvalid, what)
	}
	return checkVersion(what, fmt.Sprint(v))
}
