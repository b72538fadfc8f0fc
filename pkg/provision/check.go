package provision

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
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

// checkText refuses control characters and invalid UTF-8 in values that
// are rendered into configs.
func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, what)
	}
	for _, c := range s {
		if unicode.IsControl(c) {
			return fmt.Errorf("%w: %s has control character %q", ErrInvalid, what, c)
		}
	}
	return nil
}

// checkValue applies checkText to every string inside a JSON value.
func checkValue(what string, v interface{}) error {
	switch t := v.(type) {
	case string:
		return checkText(what, t)
	case []interface{}:
		for _, x := range t {
			if err := checkValue(what, x); err != nil {
				return err
			}
		}
	case map[string]interface{}:
		for k, x := range t {
			if err := checkText(what, k); err != nil {
				return err
			}
			if err := checkValue(what, x); err != nil {
				return err
			}
		}
	}
	return nil
}
