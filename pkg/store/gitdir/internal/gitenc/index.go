package gitenc

import (
	"crypto/sha1"
	"encoding/binary"
	"sort"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"golang.org/x/sys/unix"
)

// Index is .git/index kept in memory, encoded: one entry per path,
// sorted by path. An entry's length depends only on its path, so updating
// a file's entry overwrites it in place, and writing the index is one
// checksum and one write. Keeping it in step with HEAD is what makes
// `git status` clean after every commit without the store ever scanning
// the working tree.
type Index struct {
	ents  map[string][]byte // path -> encoded entry (version 2, padded)
	paths []string          // sorted bytewise, as git sorts index entries, unless dirty
	off   map[string]int    // path -> offset of its entry in buf
	buf   []byte            // header and entries, without the checksum
	dirty bool              // paths added or removed since buf was built
	base  *splitBase        // the shared index .git/index refers to (splitindex.go)
}

// NewIndex returns an empty index.
func NewIndex() *Index { return &Index{ents: map[string][]byte{}, dirty: true} }

// Set records path with the object id and the file's stat data. st may be
// nil (stat unknown): git then re-reads the file to compare it, which is
// slower for git but still correct.
func (x *Index) Set(path string, mode filemode.FileMode, h plumbing.Hash, st *unix.Stat_t) {
	enc := encodeIndexEntry(path, mode, h, st)
	x.track(path, false)
	if _, ok := x.ents[path]; ok {
		x.ents[path] = enc
		if !x.dirty {
			copy(x.buf[x.off[path]:], enc)
		}
		return
	}
	x.ents[path] = enc
	x.paths = append(x.paths, path)
	x.dirty = true
}

// Remove drops the entry of path, if any.
func (x *Index) Remove(path string) {
	if _, ok := x.ents[path]; !ok {
		return
	}
	x.track(path, true)
	delete(x.ents, path)
	for i, p := range x.paths {
		if p == path {
			x.paths = append(x.paths[:i], x.paths[i+1:]...)
			break
		}
	}
	x.dirty = true
}

// Encode returns the index file, version 2, without extensions (git
// rebuilds its cache-tree extension when it needs one), and its checksum.
func (x *Index) Encode() (body []byte, sum [20]byte) {
	if x.dirty {
		sort.Strings(x.paths)
		size := 12
		for _, p := range x.paths {
			size += len(x.ents[p])
		}
		x.buf = make([]byte, 0, size)
		x.buf = append(x.buf, "DIRC"...)
		x.buf = binary.BigEndian.AppendUint32(x.buf, 2)
		x.buf = binary.BigEndian.AppendUint32(x.buf, uint32(len(x.paths)))
		x.off = make(map[string]int, len(x.paths))
		for _, p := range x.paths {
			x.off[p] = len(x.buf)
			x.buf = append(x.buf, x.ents[p]...)
		}
		x.dirty = false
	}
	return x.buf, sha1.Sum(x.buf)
}

func encodeIndexEntry(path string, mode filemode.FileMode, h plumbing.Hash, st *unix.Stat_t) []byte {
	n := 62 + len(path)
	padded := (n + 8) &^ 7
	b := make([]byte, 0, padded)
	var s unix.Stat_t
	if st != nil {
		s = *st
	}
	u32 := func(v uint32) { b = binary.BigEndian.AppendUint32(b, v) }
	u32(uint32(s.Ctim.Sec))
	u32(uint32(s.Ctim.Nsec))
	u32(uint32(s.Mtim.Sec))
	u32(uint32(s.Mtim.Nsec))
	u32(uint32(s.Dev))
	u32(uint32(s.Ino))
	u32(uint32(mode))
	u32(s.Uid)
	u32(s.Gid)
	u32(uint32(s.Size))
	b = append(b, h[:]...)
	flags := len(path)
	if flags > 0xfff {
		flags = 0xfff
	}
	b = binary.BigEndian.AppendUint16(b, uint16(flags))
	b = append(b, path...)
	for len(b) < padded {
		b = append(b, 0)
	}
	return b
}
