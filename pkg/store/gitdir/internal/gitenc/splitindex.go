package gitenc

import (
	"crypto/sha1"
	"encoding/binary"
	"sort"

	"github.com/go-git/go-git/v5/plumbing"
)

// .git/index is one flat file with an entry per tracked path: 880 KB at
// 10,000 hosts, and git status needs it current after every commit.
// Rewriting it per update would make every update cost O(hosts). git's
// split index (index-format.txt, "Split index") avoids that: a shared
// index file, sharedindex.<sha1>, holds all entries as of some moment, and
// .git/index holds only the entries replaced or added since, with bitmaps
// of the replaced and deleted ones. The store writes a new shared index
// only when the changes reach a sixteenth of it, so an update writes a
// few kilobytes. Stock git reads split indexes whatever its settings.

// splitBase is the shared index .git/index refers to.
type splitBase struct {
	name  string         // "sharedindex.<sha1>"
	sum   plumbing.Hash  // its checksum, which names it
	paths []string       // its entries' paths, in order
	pos   map[string]int // path -> entry position
	ents  map[string][]byte
	count int
	// The changes since the shared index was written.
	replaced, added, deleted map[string]bool
}

func (b *splitBase) changes() int { return len(b.replaced) + len(b.added) + len(b.deleted) }

// track records a change to path in the split state.
func (x *Index) track(path string, removed bool) {
	b := x.base
	if b == nil {
		return
	}
	_, inBase := b.pos[path]
	switch {
	case removed && inBase:
		b.deleted[path] = true
		delete(b.replaced, path)
	case removed:
		delete(b.added, path)
	case inBase:
		delete(b.deleted, path)
		b.replaced[path] = true
	default:
		b.added[path] = true
	}
}

// NeedsBase reports whether a new shared index must be written before the
// next split one: there is none yet, or the changes since it grew past a
// sixteenth of it.
func (x *Index) NeedsBase() bool {
	b := x.base
	return b == nil || b.changes() > 64+b.count/16
}

// BaseName returns the file name of the shared index in use, "" if none.
func (x *Index) BaseName() string {
	if x.base == nil {
		return ""
	}
	return x.base.name
}

// EncodeBase encodes the whole index as a shared index: its file name
// ("sharedindex.<checksum>", in .git) and content. Calling use, once the
// file is written, makes it the base of the following split indexes.
func (x *Index) EncodeBase() (name string, data []byte, use func()) {
	body, sum := x.Encode()
	name = "sharedindex." + plumbing.Hash(sum).String()
	data = make([]byte, 0, len(body)+20)
	data = append(append(data, body...), sum[:]...)
	use = func() {
		b := &splitBase{
			name: name, sum: sum, count: len(x.paths), paths: append([]string(nil), x.paths...),
			pos:      make(map[string]int, len(x.paths)),
			ents:     make(map[string][]byte, len(x.paths)),
			replaced: map[string]bool{}, added: map[string]bool{}, deleted: map[string]bool{},
		}
		for i, p := range x.paths {
			b.pos[p] = i
			b.ents[p] = x.ents[p]
		}
		x.base = b
	}
	return name, data, use
}

// EncodeSplit returns .git/index, checksum included, holding the changes
// since the shared index (EncodeBase must have been used): replaced
// entries (with empty names, as the format wants) in the order of their
// positions, then added entries by path, then the link extension.
func (x *Index) EncodeSplit() []byte {
	b := x.base
	var replaced, deleted []int
	for p := range b.replaced {
		if string(x.ents[p]) == string(b.ents[p]) {
			continue // changed and changed back
		}
		replaced = append(replaced, b.pos[p])
	}
	for p := range b.deleted {
		deleted = append(deleted, b.pos[p])
	}
	added := make([]string, 0, len(b.added))
	for p := range b.added {
		added = append(added, p)
	}
	sort.Ints(replaced)
	sort.Ints(deleted)
	sort.Strings(added)
	paths := b.paths

	out := make([]byte, 0, 12+64*len(replaced)+90*len(added)+64)
	out = append(out, "DIRC"...)
	out = binary.BigEndian.AppendUint32(out, 2)
	out = binary.BigEndian.AppendUint32(out, uint32(len(replaced)+len(added)))
	for _, i := range replaced {
		e := x.ents[paths[i]]
		// Same stat data and id, flags with a zero name length, padding.
		out = append(out, e[:60]...)
		out = append(out, 0, 0, 0, 0)
	}
	for _, p := range added {
		out = append(out, x.ents[p]...)
	}
	var link []byte
	link = append(link, b.sum[:]...)
	link = append(link, ewah(deleted)...)
	link = append(link, ewah(replaced)...)
	out = append(out, "link"...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(link)))
	out = append(out, link...)
	sum := sha1.Sum(out)
	return append(out, sum[:]...)
}

// ewah serialises a bitmap with the given bits set (sorted) in the
// EWAH form git uses: bit count, word count, 64-bit words, position of the
// last marker word. A marker word holds a run of zero words (bits 1-32)
// and the number of literal words after it (bits 33-63).
func ewah(bits []int) []byte {
	words := []uint64{0}
	rlw := 0
	next := 0 // first word index not yet covered
	for i := 0; i < len(bits); {
		w := bits[i] / 64
		var lit uint64
		for i < len(bits) && bits[i]/64 == w {
			lit |= 1 << (uint(bits[i]) % 64)
			i++
		}
		marker := words[rlw]
		switch {
		case marker>>33 == 0 && (marker>>1)&0xffffffff == 0:
			words[rlw] = uint64(w-next)<<1 | 1<<33
		case w == next && marker>>33 < 1<<31-1:
			words[rlw] += 1 << 33
		default:
			words = append(words, uint64(w-next)<<1|1<<33)
			rlw = len(words) - 1
		}
		words = append(words, lit)
		next = w + 1
	}
	size := 0
	if len(bits) > 0 {
		size = bits[len(bits)-1] + 1
	}
	out := make([]byte, 0, 12+8*len(words))
	out = binary.BigEndian.AppendUint32(out, uint32(size))
	out = binary.BigEndian.AppendUint32(out, uint32(len(words)))
	for _, w := range words {
		out = binary.BigEndian.AppendUint64(out, w)
	}
	return binary.BigEndian.AppendUint32(out, uint32(rlw))
}
