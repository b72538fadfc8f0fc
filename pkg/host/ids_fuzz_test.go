package host

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzNormalizeSerial checks what the store relies on when a serial becomes
// a directory name: an accepted serial is lower-case, within the length
// bound, made of the allowed characters, a single path element that does
// not escape the cluster directory nor hide itself, and normalizing it
// again changes nothing.
func FuzzNormalizeSerial(f *testing.F) {
	for _, s := range []string{
		"0800278e158a-0", "VMware-56 4d", "../etc/passwd", "..", ".", ".git", "a/b", "a\\b", "a\x00b",
		" ABC ", "", strings.Repeat("x", MaxSerialLen+1), "-rf", "serial:1_2.3", "ÄÖÜ", "\u212a", // Kelvin sign lower-cases to k
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeSerial(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidSerial) {
				t.Fatalf("NormalizeSerial(%q) error %v does not wrap ErrInvalidSerial", s, err)
			}
			return
		}
		if n == "" || len(n) > MaxSerialLen {
			t.Fatalf("NormalizeSerial(%q) = %q: bad length", s, n)
		}
		if n != strings.ToLower(n) {
			t.Fatalf("NormalizeSerial(%q) = %q: not lower-case", s, n)
		}
		for i := 0; i < len(n); i++ {
			c := n[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-_.:", c) >= 0) {
				t.Fatalf("NormalizeSerial(%q) = %q: character %q", s, n, c)
			}
		}
		if n[0] == '.' || n[0] == '-' {
			t.Fatalf("NormalizeSerial(%q) = %q: starts with %q", s, n, n[0])
		}
		base := "/cluster"
		p := filepath.Join(base, n)
		if filepath.Dir(p) != base || filepath.Base(p) != n {
			t.Fatalf("NormalizeSerial(%q) = %q: is not one element inside the directory (%q)", s, n, p)
		}
		again, err := NormalizeSerial(n)
		if err != nil || again != n {
			t.Fatalf("NormalizeSerial is not idempotent on %q: %q, %v", n, again, err)
		}
	})
}
