package host

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// MaxSerialLen bounds a serial. DMI serials are short; anything longer is
// garbage or an attack.
const MaxSerialLen = 128

// ErrInvalidSerial is returned for a serial that cannot name a record.
var ErrInvalidSerial = errors.New("host: invalid serial")

// ErrInvalidMAC is returned for a MAC address that does not parse.
var ErrInvalidMAC = errors.New("host: invalid MAC address")

// NormalizeSerial lower-cases a serial and checks that it is safe to use as a
// directory name inside the cluster directory: 1..128 characters of
// [a-z0-9._:-], not starting with a dot (so no "..", no hidden files, no
// "/" and no NUL can ever become part of a path).
func NormalizeSerial(s string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(s))
	if n == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidSerial)
	}
	if len(n) > MaxSerialLen {
		return "", fmt.Errorf("%w: longer than %d characters", ErrInvalidSerial, MaxSerialLen)
	}
	if n[0] == '.' || n[0] == '-' {
		return "", fmt.Errorf("%w %q: must start with a letter or digit", ErrInvalidSerial, truncate(s))
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return "", fmt.Errorf("%w %q: character %q not allowed (letters, digits, '-', '_', '.', ':')", ErrInvalidSerial, truncate(s), rune(c))
		}
	}
	return n, nil
}

// NormalizeMAC parses a hardware address and returns it in the lower-case,
// colon-separated form dnsmasq and conf.json use.
func NormalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%w %q", ErrInvalidMAC, truncate(s))
	}
	return hw.String(), nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
