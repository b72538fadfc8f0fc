package store

import (
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

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
func (x *gitIndex) track(path string, removed bool) {
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

// writeSplit writes .git/index as a split index, first writing a new
// shared index when there is none yet, it is gone, or the changes have
// grown past a sixteenth of it.
func (g *gitRepo) writeSplit() error {
	x := g.index
	var old string
	if b := x.base; b == nil || b.changes() > 64+b.count/16 || !exists(filepath.Join(g.gitDir, b.name)) {
		if b != nil {
			old = b.name
		}
		if err := g.writeSharedIndex(); err != nil {
			return err
		}
	}
	lock, err := acquireLock(filepath.Join(g.gitDir, "index"), lockWait)
	if err != nil {
		return err
	}
	body := x.encodeSplit()
	sum := sha1.Sum(body)
	if err := lock.write(body); err != nil {
		lock.release()
		return err
	}
	if err := lock.write(sum[:]); err != nil {
		lock.release()
		return err
	}
	if err := lock.commit(); err != nil {
		return err
	}
	if old != "" && old != x.base.name {
		_ = os.Remove(filepath.Join(g.gitDir, old))
	}
	return nil
}

// writeSharedIndex writes the whole index as a new shared index.
func (g *gitRepo) writeSharedIndex() error {
	x := g.index
	body, sum := x.encode()
	name := "sharedindex." + plumbing.Hash(sum).String()
	data := make([]byte, 0, len(body)+20)
	data = append(append(data, body...), sum[:]...)
	if err := writeFileAtomic(filepath.Join(g.gitDir, name), data, 0o644); err != nil {
		return err
	}
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
	return nil
}

// encodeSplit returns .git/index (without checksum) holding the changes
// since the shared index: replaced entries (with empty names, as the
// format wants) in the order of their positions, then added entries by
// path, then the link extension.
func (x *gitIndex) encodeSplit() []byte {
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
	link = append(link, ewahEncode(deleted)...)
	link = append(link, ewahEncode(replaced)...)
	out = append(out, "link"...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(link)))
	return append(out, link...)
}

// ewahEncode serialises a bitmap with the given bits set (sorted) in the
// EWAH form git uses: bit count, word count, 64-bit words, position of the
// last marker word. A marker word holds a run of zero words (bits 1-32)
// and the number of literal words after it (bits 33-63).
func ewahEncode(bits []int) []byte {
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

// cleanSharedIndexes removes shared indexes other than the current one
// that are old enough that no git command can still be reading them
// (git itself expires them after two weeks, but only when it writes a
// split index).
func (g *gitRepo) cleanSharedIndexes() {
	entries, err := os.ReadDir(g.gitDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, "sharedindex.") || (g.index.base != nil && n == g.index.base.name) {
			continue
		}
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < time.Hour {
			continue
		}
		if err := os.Remove(filepath.Join(g.gitDir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			g.log.Warn("cannot remove old shared index", "file", n, "err", err)
		}
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
