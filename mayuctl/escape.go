package main

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"mayu/pkg/host"
)

// printable returns s with every character that a terminal acts on or that
// ends, hides or reorders a line (those host.BadRune refuses: control and
// format characters, line and paragraph separators, invalid UTF-8) written
// as a Go escape: \n, \r, \t, \xNN, \uXXXX, \UXXXXXXXX. Anything else, the
// backslash included, is left as it is, so ordinary values print byte for
// byte as before. Values a machine reported (versions, NIC names, ...) go
// through it before they reach the operator's terminal, so none can move
// the cursor, clear the screen or start a new, forged row.
func printable(s string) string {
	if _, bad := host.BadRune(s); !bad {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80 && host.Unprintable(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xFFFF && host.Unprintable(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		case host.Unprintable(r):
			fmt.Fprintf(&b, `\U%08x`, r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}
