package render

// The quoting functions of the templates. Each renders a value for one
// context so that the reader of that context (a YAML or JSON parser, a
// shell, systemd) gets exactly the value back and nothing else: no new key,
// no new line, no new command. Values are checked at write time
// (host.BadRune), and these functions hold even for a value that was not:
// the YAML/JSON ones escape every line-breaking and invisible character,
// the shell and systemd ones refuse to render one.

import (
	"encoding/json"
	"fmt"
	"strings"

	"mayu/pkg/host"
)

// encodeJSON encodes v as JSON that is also a valid YAML 1.1/1.2 flow
// value, so it can stand wherever YAML or JSON expects a value: after
// "key: ", as a list item, inside flow collections. Strings come out
// double-quoted. Every control and format character, the line and
// paragraph separators and the non-characters U+FFFE/U+FFFF are escaped as
// \uXXXX: JSON would carry NEL (U+0085), DEL, the C1 controls and the
// invisible format characters raw, and a YAML reader takes NEL, U+2028
// and U+2029 as line breaks and refuses the others. HTML characters are
// not escaped; both formats take them as they are. Invalid UTF-8 is
// replaced by U+FFFD, as encoding/json does.
func encodeJSON(v interface{}) (string, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	out := strings.TrimSuffix(b.String(), "\n")
	// Everything outside strings is ASCII, so every rune to escape is inside
	// a string, where \uXXXX means the same to both readers.
	if !strings.ContainsFunc(out, needsEscape) {
		return out, nil
	}
	var e strings.Builder
	for _, r := range out {
		if needsEscape(r) {
			fmt.Fprintf(&e, `\u%04x`, r)
			continue
		}
		e.WriteRune(r)
	}
	return e.String(), nil
}

// needsEscape: the runes encodeJSON writes as \uXXXX. Runes above U+FFFF
// (a few format characters) stay raw: both formats hold them as they are,
// and neither breaks a line at them, while their escapes differ (JSON
// wants a surrogate pair, which YAML refuses).
func needsEscape(r rune) bool {
	return r <= 0xFFFF && (host.Unprintable(r) || r == 0xFFFE || r == 0xFFFF)
}

// yamlValue is the yaml and json template function: v's structure (a list
// stays a list, a number a number) as encodeJSON writes it.
func yamlValue(v interface{}) (string, error) {
	s, err := encodeJSON(v)
	if err != nil {
		return "", fmt.Errorf("yaml/json: %w", err)
	}
	return s, nil
}

// quote is the yamlq and quote template function: the text of v (as it
// prints in a template: a missing key is empty, fleet metadata is its
// comma-joined form) as one double-quoted string, valid in YAML and JSON.
func quote(v interface{}) string {
	s, _ := encodeJSON(str(v)) // a string always encodes
	return s
}

// checkLine refuses a value that a line-oriented reader (a shell, systemd)
// cannot hold: one host.BadRune refuses. Such a value cannot have been
// stored through mayu's API; a record edited by hand fails its render
// instead of reaching the machine.
func checkLine(fn string, s string) error {
	if r, bad := host.BadRune(s); bad {
		return fmt.Errorf("%s: value %q has %U, which no line of a %s can hold safely", fn, s, r, contextOf(fn))
	}
	return nil
}

func contextOf(fn string) string {
	if fn == "shq" {
		return "shell script"
	}
	return "systemd unit"
}

// isSafeWord reports whether s can stand unquoted as one word in a shell
// and in a systemd command line: letters, digits and "@+=:,./_-". Only
// those are left alone, so ordinary values (versions, URLs, paths, IP
// addresses) render as they did before quoting.
func isSafeWord(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("@+=:,./_-", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// shq quotes v's text as one POSIX shell word: as it is when isSafeWord,
// else in single quotes, each quote inside closed, escaped and reopened:
//
//	it's -> 'it'\''s'
//
// Nothing inside single quotes is special to a shell: not $(), backticks,
// globs, '#' or ';'. The empty value is a pair of single quotes.
func shq(v interface{}) (string, error) {
	s := str(v)
	if err := checkLine("shq", s); err != nil {
		return "", err
	}
	if isSafeWord(s) {
		return s, nil
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'", nil
}

// systemdValue is the systemd template function: v's text for a unit
// setting that takes its value as is (Description=, What=, a networkd
// Name= or Address=). '%' is doubled, as systemd expands %-specifiers in
// such settings; a value ending in '\' is refused, since at the end of a
// unit-file line it would join the next line to this one.
func systemdValue(v interface{}) (string, error) {
	s := str(v)
	if err := checkLine("systemd", s); err != nil {
		return "", err
	}
	if strings.HasSuffix(s, `\`) {
		return "", fmt.Errorf("systemd: value %q ends in a backslash, which would continue the unit-file line", s)
	}
	return strings.ReplaceAll(s, "%", "%%"), nil
}

// systemdq is the systemdq template function: v's text as one argument of
// an Exec*= command line (ExecStart=, ExecStartPre=, ...). It is as it is
// when isSafeWord, else double-quoted with '\' and '"' escaped (systemd
// reads C escapes in quotes), '%' doubled (specifiers) and '$' doubled
// (systemd expands $VAR and ${VAR} in command lines).
func systemdq(v interface{}) (string, error) {
	return systemdWord("systemdq", str(v), true)
}

// systemdEnv is the systemdenv template function: one KEY=value word of an
// Environment= setting, always double-quoted (the form unit files usually
// show), escaped as systemdq escapes but with '$' left alone: Environment=
// does not expand variables.
func systemdEnv(key string, v interface{}) (string, error) {
	return systemdWord("systemdenv", key+"="+str(v), false)
}

// systemdWord quotes s as one word of a systemd setting that splits words:
// an Exec*= command line (exec) or Environment=.
func systemdWord(fn, s string, exec bool) (string, error) {
	if err := checkLine(fn, s); err != nil {
		return "", err
	}
	if exec && isSafeWord(s) {
		return s, nil
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '\\' || r == '"':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '%':
			b.WriteString("%%")
		case r == '$' && exec:
			b.WriteString("$$")
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String(), nil
}
