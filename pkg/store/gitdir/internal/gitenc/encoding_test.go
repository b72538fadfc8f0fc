package gitenc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTreeDelta applies the deltas with go-git's patcher (the one that
// reads them back) and checks they are small where they should be.
func TestTreeDelta(t *testing.T) {
	entries := func(n int, change map[int]byte, skip map[int]bool, extra ...string) []byte {
		var es []TreeEntry
		for i := 0; i < n; i++ {
			if skip[i] {
				continue
			}
			var h plumbing.Hash
			h[0], h[1] = byte(i), byte(i>>8)
			h[19] = change[i]
			es = append(es, TreeEntry{Name: fmt.Sprintf("serial-%05d", i), Mode: filemode.Dir, Hash: h})
		}
		for _, name := range extra {
			es = append(es, TreeEntry{Name: name, Mode: filemode.Regular})
		}
		SortTree(es)
		return EncodeTree(es)
	}
	base := entries(2000, nil, nil, "cluster.json")
	all := map[int]byte{}
	for i := 0; i < 2000; i++ {
		all[i] = 9
	}
	tests := []struct {
		name     string
		target   []byte
		maxDelta int
	}{
		{"identical", base, 20},
		{"one host changed", entries(2000, map[int]byte{700: 1}, nil, "cluster.json"), 80},
		{"first and last changed", entries(2000, map[int]byte{0: 1, 1999: 2}, nil, "cluster.json"), 140},
		{"host added", entries(2001, nil, nil, "cluster.json"), 80},
		{"host removed", entries(2000, nil, map[int]bool{1000: true}, "cluster.json"), 40},
		{"file added", entries(2000, nil, nil, "cluster.json", "a-notes"), 80},
		{"everything changed", entries(2000, all, nil, "cluster.json"), len(base) + len(base)/64},
		{"empty target", nil, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := TreeDelta(base, tc.target)
			got, err := packfile.PatchDelta(base, d)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(tc.target, got), "patched tree differs")
			assert.LessOrEqual(t, len(d), tc.maxDelta, "delta size")
		})
	}
}

func TestTreeLess(t *testing.T) {
	tests := []struct {
		a    string
		aDir bool
		b    string
		bDir bool
		want bool
	}{
		{"a", false, "b", false, true},
		{"a-b", true, "a", true, true},   // '-' < '/'
		{"a", true, "a.b", true, false},  // "a/" > "a.b"
		{"a", false, "a.b", false, true}, // file "a" < "a.b"
		{"a", true, "a:b", true, true},   // '/' < ':'
		{"a", true, "a_b", true, true},   // '/' < '_'
		{"cluster", true, "cluster.json", false, false},
		{"same", true, "same", true, false},
	}
	for _, tc := range tests {
		t.Run(tc.a+" "+tc.b, func(t *testing.T) {
			assert.Equal(t, tc.want, TreeLess(tc.a, tc.aDir, tc.b, tc.bDir))
		})
	}
}

func TestFormatWhen(t *testing.T) {
	tests := []struct {
		zone string
		off  int
		want string
	}{
		{"UTC", 0, "1470757742 +0000"},
		{"CEST", 2 * 3600, "1470757742 +0200"},
		{"NST", -(3*3600 + 30*60), "1470757742 -0330"},
		{"IST", 5*3600 + 30*60, "1470757742 +0530"},
	}
	for _, tc := range tests {
		t.Run(tc.zone, func(t *testing.T) {
			tm := timeIn(1470757742, tc.zone, tc.off)
			assert.Equal(t, tc.want, FormatWhen(tm))
		})
	}
}

func timeIn(unix int64, zone string, off int) time.Time {
	return time.Unix(unix, 0).In(time.FixedZone(zone, off))
}

// TestEWAH decodes what ewah writes the way git's ewah reader
// walks it: a marker word (run of clean words, count of literal words),
// then the literal words.
func TestEWAH(t *testing.T) {
	tests := [][]int{
		nil,
		{0},
		{63, 64},
		{0, 5000},
		{1, 2, 64*3 + 5, 64 * 1000},
		{0, 64, 128, 192, 256, 320, 384},
		{100000},
	}
	for _, bits := range tests {
		t.Run(fmt.Sprint(bits), func(t *testing.T) {
			b := ewah(bits)
			size := binary.BigEndian.Uint32(b)
			n := binary.BigEndian.Uint32(b[4:])
			words := make([]uint64, n)
			for i := range words {
				words[i] = binary.BigEndian.Uint64(b[8+8*i:])
			}
			rlw := binary.BigEndian.Uint32(b[8+8*n:])
			require.Len(t, b, int(12+8*n))
			var got []int
			pos, lastMarker := 0, -1
			for i := 0; i < len(words); {
				marker := words[i]
				lastMarker = i
				require.Zero(t, marker&1, "runs are of zero words")
				pos += int((marker>>1)&0xffffffff) * 64
				lits := int(marker >> 33)
				i++
				for j := 0; j < lits; j++ {
					for bit := 0; bit < 64; bit++ {
						if words[i]&(1<<bit) != 0 {
							got = append(got, pos+bit)
						}
					}
					pos += 64
					i++
				}
			}
			assert.Equal(t, bits, got)
			assert.Equal(t, uint32(lastMarker), rlw, "position of the last marker word")
			if len(bits) > 0 {
				assert.Equal(t, uint32(bits[len(bits)-1]+1), size)
			}
		})
	}
}

// TestRootTree checks the in-place updates and splices against a tree
// encoded from scratch.
func TestRootTree(t *testing.T) {
	h := func(b byte) plumbing.Hash { var x plumbing.Hash; x[0] = b; return x }
	var es []TreeEntry
	for _, n := range []string{"m", "c", "x", "cluster.json"} {
		mode := filemode.Dir
		if n == "cluster.json" {
			mode = filemode.Regular
		}
		es = append(es, TreeEntry{Name: n, Mode: mode, Hash: h(1)})
	}
	rt := NewRootTree(es)
	want := func() []byte {
		var cur []TreeEntry
		for _, e := range rt.entries {
			cur = append(cur, e.TreeEntry)
		}
		SortTree(cur)
		return EncodeTree(cur)
	}
	steps := []struct {
		name string
		do   func()
	}{
		{"initial", func() {}},
		{"change", func() { rt.Set(TreeEntry{Name: "m", Mode: filemode.Dir, Hash: h(2)}) }},
		{"insert first", func() { rt.Set(TreeEntry{Name: "a", Mode: filemode.Dir, Hash: h(3)}) }},
		{"insert middle", func() { rt.Set(TreeEntry{Name: "cluster", Mode: filemode.Dir, Hash: h(4)}) }},
		{"insert last", func() { rt.Set(TreeEntry{Name: "z", Mode: filemode.Dir, Hash: h(5)}) }},
		{"change after inserts", func() { rt.Set(TreeEntry{Name: "x", Mode: filemode.Dir, Hash: h(6)}) }},
		{"mode change", func() { rt.Set(TreeEntry{Name: "x", Mode: filemode.Regular, Hash: h(7)}) }},
		{"remove", func() { rt.Remove("c") }},
		{"change after remove", func() { rt.Set(TreeEntry{Name: "z", Mode: filemode.Dir, Hash: h(8)}) }},
	}
	for _, st := range steps {
		st.do()
		assert.Equal(t, want(), rt.Bytes(), st.name)
		e, ok := rt.Get("z")
		if ok {
			assert.Equal(t, "z", e.Name)
		}
	}
}

// TestTreeDeltaAnyInput: TreeDelta never parses entries, so any base and
// target, trees or not, must patch back exactly.
func TestTreeDeltaAnyInput(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.IntN(4)) // few symbols: many false matches
		}
		return b
	}
	for i := 0; i < 300; i++ {
		base := random(1 + r.IntN(20000))
		target := append([]byte(nil), base...)
		for m := r.IntN(20); m > 0; m-- {
			at := r.IntN(len(target) + 1)
			switch r.IntN(3) {
			case 0: // insert
				target = append(target[:at], append(random(1+r.IntN(100)), target[at:]...)...)
			case 1: // delete
				end := min(len(target), at+1+r.IntN(100))
				target = append(target[:at], target[end:]...)
			default: // replace
				for k := at; k < min(len(target), at+1+r.IntN(30)); k++ {
					target[k] = byte(r.IntN(256))
				}
			}
		}
		if i%10 == 0 {
			target = random(r.IntN(5000))
		}
		d := TreeDelta(base, target)
		got, err := packfile.PatchDelta(base, d)
		require.NoError(t, err, "case %d", i)
		require.True(t, bytes.Equal(target, got), "case %d: patched bytes differ", i)
	}
}
