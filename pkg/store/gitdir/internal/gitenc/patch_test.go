package gitenc

import (
	"bytes"
	"math/rand"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// PatchDelta gives what go-git's PatchDelta gives, for deltas from
// go-git's encoder (which uses every copy form, 64 KiB copies included)
// and from TreeDelta.
func TestPatchDeltaAgreesWithGoGit(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 200; i++ {
		base := make([]byte, 1+rng.Intn(300_000))
		rng.Read(base[:len(base)/2])
		target := append([]byte(nil), base...)
		for j := rng.Intn(20); j >= 0; j-- {
			at := rng.Intn(len(target))
			switch rng.Intn(3) {
			case 0:
				target[at] ^= 0xff
			case 1:
				target = append(target[:at], append(bytes.Repeat([]byte{byte(j)}, rng.Intn(500)), target[at:]...)...)
			default:
				target = append(target[:at], target[min(at+rng.Intn(5000), len(target)):]...)
			}
		}
		if len(target) == 0 {
			target = []byte{1}
		}
		for name, delta := range map[string][]byte{"go-git": packfile.DiffDelta(base, target), "TreeDelta": TreeDelta(base, target)} {
			want, err := packfile.PatchDelta(base, delta)
			require.NoError(t, err, name)
			got, err := PatchDelta(base, delta)
			require.NoError(t, err, name)
			require.Equal(t, want, got, name)
			require.Equal(t, target, got, name)
			assert.Equal(t, len(got), cap(got), "allocated once at the declared size")
		}
	}
}

func TestPatchDeltaRefusesCorruptDeltas(t *testing.T) {
	base := bytes.Repeat([]byte("0123456789"), 100)
	target := append(append([]byte(nil), base[:500]...), "inserted"...)
	good := TreeDelta(base, target)
	_, err := PatchDelta(base, good)
	require.NoError(t, err)
	cases := map[string][]byte{
		"empty":              nil,
		"wrong base size":    append([]byte{0x05}, good[2:]...),
		"truncated":          good[:len(good)-3],
		"reserved op":        append(append([]byte(nil), good[:4]...), 0x00),
		"huge declared size": {0xe8, 0x07, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x90, 0x00},
		"copy past the base": {0xe8, 0x07, 0x10, 0x91, 0xe0, 0x03, 0x10},
		"insert past delta":  {0xe8, 0x07, 0x05, 0x05, 'a', 'b'},
		"bad header varint":  bytes.Repeat([]byte{0xff}, 12),
		"more than declared": {0xe8, 0x07, 0x01, 0x02, 'a', 'b'},
	}
	for name, d := range cases {
		_, err := PatchDelta(base, d)
		assert.ErrorIs(t, err, ErrDelta, name)
	}
}

func BenchmarkPatchDeltaRootTree(b *testing.B) {
	base := bytes.Repeat([]byte("100644 0123456789abcdef\x00aaaaaaaaaaaaaaaaaaaa"), 10_000)
	target := append([]byte(nil), base...)
	copy(target[200_000:], "changed")
	delta := TreeDelta(base, target)
	b.Run("gitenc", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_, _ = PatchDelta(base, delta)
		}
	})
	b.Run("go-git", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_, _ = packfile.PatchDelta(base, delta)
		}
	})
}
