package host

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidText is returned for a string that may not be stored: it holds
// a character that would end, hide or reorder a line of a file it is
// rendered into.
var ErrInvalidText = errors.New("host: value has a control or format character")

// BadRune returns the first rune of s that no stored string may hold, and
// true; or 0 and false when s is clean. Refused are invalid UTF-8 (returned
// as utf8.RuneError) and every rune of the Unicode categories
//
//   - Cc, control: newline, carriage return, tab, ESC (terminal escape
//     sequences), DEL, NEL U+0085 and the other C1 controls;
//   - Cf, format: zero-width and bidirectional marks, the byte order mark;
//   - Zl and Zp: the line and paragraph separators U+2028 and U+2029.
//
// YAML 1.1 readers (libyaml, yaml.v3, coreos-cloudinit) and JavaScript take
// NEL, U+2028 and U+2029 as line breaks just like "\n", so a value holding
// one could start a new line, and so a new key, in a config rendered from a
// template; the others end lines elsewhere (systemd units, shell, terminals)
// or make text read differently from what it is.
//
// This is the one rule for every string mayu stores from a request or reads
// from config.yaml's templates_env and profiles: each place a value enters
// calls it (through CheckText or CheckValue), and the template quoting
// functions refuse or escape the same set.
func BadRune(s string) (rune, bool) {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				return utf8.RuneError, true
			}
		}
		if Unprintable(r) {
			return r, true
		}
	}
	return 0, false
}

// Unprintable reports whether r is in one of the categories BadRune refuses
// (Cc, Cf, Zl, Zp).
func Unprintable(r rune) bool {
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)
}

// CheckText returns nil for a storable string, else an error wrapping
// ErrInvalidText that names the value (what, e.g. "metadata") and the
// offending character as U+XXXX, never the raw character.
func CheckText(what, s string) error {
	r, bad := BadRune(s)
	if !bad {
		return nil
	}
	if r == utf8.RuneError {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidText, what)
	}
	return fmt.Errorf("%w: %s has %U: it would break the line it is rendered into", ErrInvalidText, what, r)
}

// CheckValue applies CheckText to every string inside a decoded JSON or
// YAML value: strings, the elements of lists and the keys and values of
// maps, at any depth. Other types (numbers, booleans, nil) pass.
func CheckValue(what string, v interface{}) error {
	switch t := v.(type) {
	case string:
		return CheckText(what, t)
	case []interface{}:
		for _, x := range t {
			if err := CheckValue(what, x); err != nil {
				return err
			}
		}
	case []string:
		for _, x := range t {
			if err := CheckText(what, x); err != nil {
				return err
			}
		}
	case map[string]interface{}:
		for k, x := range t {
			if err := CheckText(what+" key", k); err != nil {
				return err
			}
			if err := CheckValue(what, x); err != nil {
				return err
			}
		}
	}
	return nil
}
