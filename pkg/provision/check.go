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

// checkValue applies checkText to every key and string inside a JSON value.
func checkValue(what string, v interface{}) error {
	if err := host.CheckValue(what, v); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}
