package host

import (
	_ "embed"
	"fmt"
	"strings"
)

// SerialScript is machine-serial.sh: mayu's rule for "the machine's serial"
// as a POSIX sh function file (mayu_machine_serial), with the list of DMI
// files it tries and the list of vendor placeholders. mayu serves it to the
// machines' scripts; the Go functions below read their two lists from it, so
// the scripts, the host-info helper and the server share one rule.
//
//go:embed machine-serial.sh
var SerialScript string

// serialRule is what the Go side reads out of SerialScript.
type serialRule struct {
	sources      []string
	placeholders map[string]bool
}

var rule = mustParseSerialScript(SerialScript)

// SerialSources returns the DMI files, under /sys/devices/virtual/dmi/id,
// that hold a machine's serial, in the order they are tried:
// product_serial, chassis_serial, board_serial, product_uuid.
func SerialSources() []string { return append([]string(nil), rule.sources...) }

// CleanSerial turns a DMI value into a serial: surrounding whitespace
// removed, every whitespace character left inside replaced by "-"
// (" CZ J 4021 \n" -> "CZ-J-4021"). It does not check the result.
func CleanSerial(raw string) string {
	s := strings.TrimFunc(raw, isSpace)
	return strings.Map(func(r rune) rune {
		if isSpace(r) {
			return '-'
		}
		return r
	}, s)
}

// IsPlaceholderSerial reports whether v (a DMI value, or a serial made from
// one by CleanSerial) is a value vendors put there instead of a real serial,
// the same on every board of a model: lower-cased, with each run of
// whitespace, "-" and "_" made one space and trimmed, it is one of the
// placeholders of machine-serial.sh; or once whitespace, ".", ":", "-" and
// "_" are removed it is empty, only zeros, or at least four of only "f" or
// only "x".
func IsPlaceholderSerial(v string) bool {
	if rule.placeholders[canonicalSerial(v)] {
		return true
	}
	var b strings.Builder
	for _, r := range v {
		if !isSpace(r) && !strings.ContainsRune(".:-_", r) {
			b.WriteRune(lowerASCII(r))
		}
	}
	s := b.String()
	switch {
	case strings.Trim(s, "0") == "":
		return true
	case len(s) < 4:
		return false
	default:
		return strings.Trim(s, "f") == "" || strings.Trim(s, "x") == ""
	}
}

// CheckSerial refuses a serial no machine should present: empty, an
// unsubstituted template marker ("__SERIAL__", "{{.Serial}}", "${serial}",
// "$serial", "<serial>", "%SERIAL%"), or a vendor placeholder
// (IsPlaceholderSerial). The error wraps ErrInvalidSerial and says why in
// words an operator can act on. It does not check the character set:
// NormalizeSerial does.
func CheckSerial(s string) error {
	t := strings.TrimFunc(s, isSpace)
	switch {
	case t == "":
		return fmt.Errorf("%w: empty", ErrInvalidSerial)
	case strings.ContainsAny(t, "${}<>%`") || (len(t) > 4 && strings.HasPrefix(t, "__") && strings.HasSuffix(t, "__")):
		return fmt.Errorf("%w %q: an unsubstituted template marker, not a serial (the machine's script did not put its serial in)",
			ErrInvalidSerial, truncate(s))
	case IsPlaceholderSerial(t):
		return fmt.Errorf("%w %q: a vendor placeholder that every board of a model shares, not a serial "+
			"(mayu's serial rule, GET /machine-serial.sh, takes the chassis or board serial or the system UUID instead)",
			ErrInvalidSerial, truncate(s))
	}
	return nil
}

// canonicalSerial is the form placeholders are compared in: ASCII lower
// case, each run of whitespace, "-" and "_" one space, trimmed. The shell
// side does the same with sed and grep -i.
func canonicalSerial(v string) string {
	var b strings.Builder
	gap := false
	for _, r := range v {
		if isSpace(r) || r == '-' || r == '_' {
			gap = true
			continue
		}
		if gap && b.Len() > 0 {
			b.WriteByte(' ')
		}
		gap = false
		b.WriteRune(lowerASCII(r))
	}
	return b.String()
}

// isSpace is the shell's [[:space:]] in the C locale.
func isSpace(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return true
	}
	return false
}

func lowerASCII(r rune) rune {
	if r >= 'A' && r <= 'Z' {
		return r + ('a' - 'A')
	}
	return r
}

// mustParseSerialScript reads the two lists out of machine-serial.sh: the
// line MAYU_SERIAL_SOURCES='a b c' and the lines between
// MAYU_SERIAL_PLACEHOLDERS=' and a line holding only "'". The file is
// compiled in, so a malformed one is a build defect: it panics at start-up
// (and in every test) rather than letting the Go rule drift from the shell's.
func mustParseSerialScript(script string) serialRule {
	r, err := parseSerialScript(script)
	if err != nil {
		panic(err)
	}
	return r
}

func parseSerialScript(script string) (serialRule, error) {
	const srcKey, phKey = "MAYU_SERIAL_SOURCES='", "MAYU_SERIAL_PLACEHOLDERS='"
	var r serialRule
	inList := false
	for _, line := range strings.Split(script, "\n") {
		switch {
		case inList && line == "'":
			inList = false
		case inList:
			if line == "" {
				continue
			}
			if canonicalSerial(line) != line {
				return r, fmt.Errorf("host: machine-serial.sh: placeholder %q is not in the compared form %q", line, canonicalSerial(line))
			}
			r.placeholders[line] = true
		case strings.HasPrefix(line, srcKey) && strings.HasSuffix(line, "'") && len(line) > len(srcKey):
			r.sources = strings.Fields(strings.TrimSuffix(strings.TrimPrefix(line, srcKey), "'"))
		case line == phKey:
			inList = true
			r.placeholders = map[string]bool{}
		}
	}
	switch {
	case inList:
		return r, fmt.Errorf("host: machine-serial.sh: MAYU_SERIAL_PLACEHOLDERS is not closed by a line holding only '")
	case len(r.sources) == 0:
		return r, fmt.Errorf("host: machine-serial.sh: no MAYU_SERIAL_SOURCES='...' line")
	case len(r.placeholders) == 0:
		return r, fmt.Errorf("host: machine-serial.sh: no MAYU_SERIAL_PLACEHOLDERS list")
	}
	return r, nil
}
