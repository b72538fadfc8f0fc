package store

import (
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"golang.org/x/sys/unix"
)

// This file holds git's on-disk formats the store writes on its hot path:
// object ids, trees kept in memory, and the index file (packs are in
// gitpack.go). They are written here rather than through go-git's
// filesystem storer because that storer
// neither fsyncs nor replaces refs atomically (it truncates the ref file in
// place), and its index and tree writers re-encode everything each time.
// go-git still reads the repository (packs included) when the store opens.

// largeObject is the payload size above which objects are packed with zlib
// level 0 (stored blocks). Only the root tree gets that big (about 40 bytes
// per host, so 400 KB at 10,000 hosts); compressing it costs ~4 ms
// per batch at BestSpeed and saves little, since half of it is random
// hashes; the other root trees of a pack are deltas of a few bytes.
const largeObject = 64 << 10

// hashObject returns the object id of a payload. crypto/sha1 gives the same
// ids as git's collision-detecting SHA-1 for every real input and is several
// times faster.
func hashObject(kind plumbing.ObjectType, payload []byte) plumbing.Hash {
	h := sha1.New()
	h.Write(objectHeader(kind, len(payload)))
	h.Write(payload)
	var id plumbing.Hash
	h.Sum(id[:0])
	return id
}

func objectHeader(kind plumbing.ObjectType, n int) []byte {
	b := make([]byte, 0, 16)
	b = append(b, kind.String()...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, 0)
}

// treeEntry is one entry of a tree object.
type treeEntry struct {
	name string
	mode filemode.FileMode
	hash plumbing.Hash
}

func (e treeEntry) isDir() bool { return e.mode == filemode.Dir }

// treeLess is git's tree order: names compared bytewise, a directory
// compared as if its name ended in '/'. It serves the in-memory trees
// (string names) and the encoded ones the packer walks ([]byte names).
func treeLess[T string | []byte](a T, aDir bool, b T, bDir bool) bool {
	n := min(len(a), len(b))
	if string(a[:n]) != string(b[:n]) {
		return string(a[:n]) < string(b[:n])
	}
	ca, cb := byte(0), byte(0)
	if len(a) > n {
		ca = a[n]
	} else if aDir {
		ca = '/'
	}
	if len(b) > n {
		cb = b[n]
	} else if bDir {
		cb = '/'
	}
	return ca < cb
}

func sortTree(es []treeEntry) {
	sort.Slice(es, func(i, j int) bool { return treeLess(es[i].name, es[i].isDir(), es[j].name, es[j].isDir()) })
}

func appendTreeEntry(b []byte, e treeEntry) []byte {
	b = strconv.AppendUint(b, uint64(e.mode), 8)
	b = append(b, ' ')
	b = append(b, e.name...)
	b = append(b, 0)
	return append(b, e.hash[:]...)
}

func encodeTree(es []treeEntry) []byte {
	var b []byte
	for _, e := range es {
		b = appendTreeEntry(b, e)
	}
	return b
}

// rootTree is the root tree of HEAD kept in memory in its encoded form.
// Changing a host's subtree hash is a 20-byte copy into the buffer, so a
// commit costs one hash and one write of the buffer, never a rebuild.
// Adding a host splices its entry into the buffer (a memmove); a bulk
// commit of thousands of new hosts appends them unsorted and sorts once,
// when the tree is next needed.
type rootTree struct {
	entries []*rootEntry
	pos     map[string]*rootEntry
	buf     []byte
	dirty   bool // entries appended since buf was built (entries unsorted)
}

type rootEntry struct {
	treeEntry
	off  int // offset of the entry in buf
	plen int // length of its "<mode> <name>\x00" prefix: the hash follows
}

func newRootTree(es []treeEntry) *rootTree {
	t := &rootTree{pos: make(map[string]*rootEntry, len(es)), dirty: true}
	for _, e := range es {
		re := &rootEntry{treeEntry: e}
		t.entries = append(t.entries, re)
		t.pos[e.name] = re
	}
	return t
}

// bytes returns the encoded tree.
func (t *rootTree) bytes() []byte {
	if !t.dirty {
		return t.buf
	}
	sort.Slice(t.entries, func(i, j int) bool {
		a, b := t.entries[i], t.entries[j]
		return treeLess(a.name, a.isDir(), b.name, b.isDir())
	})
	size := 0
	for _, e := range t.entries {
		size += 8 + len(e.name) + 20
	}
	t.buf = make([]byte, 0, size+size/8)
	for _, e := range t.entries {
		e.off = len(t.buf)
		t.buf = appendTreeEntry(t.buf, e.treeEntry)
		e.plen = len(t.buf) - 20 - e.off
	}
	t.dirty = false
	return t.buf
}

func (t *rootTree) get(name string) (treeEntry, bool) {
	e, ok := t.pos[name]
	if !ok {
		return treeEntry{}, false
	}
	return e.treeEntry, true
}

func (t *rootTree) set(e treeEntry) {
	cur, ok := t.pos[e.name]
	switch {
	case ok && cur.mode == e.mode:
		cur.hash = e.hash
		if !t.dirty {
			copy(t.buf[cur.off+cur.plen:], e.hash[:])
		}
	case ok:
		cur.treeEntry = e
		t.dirty = true
	case t.dirty:
		re := &rootEntry{treeEntry: e}
		t.entries = append(t.entries, re)
		t.pos[e.name] = re
	default:
		t.insert(e)
	}
}

// insert splices a new entry into the sorted, encoded tree.
func (t *rootTree) insert(e treeEntry) {
	i := sort.Search(len(t.entries), func(i int) bool {
		return !treeLess(t.entries[i].name, t.entries[i].isDir(), e.name, e.isDir())
	})
	enc := appendTreeEntry(nil, e)
	at := len(t.buf)
	if i < len(t.entries) {
		at = t.entries[i].off
	}
	t.buf = append(t.buf, enc...) // grow
	copy(t.buf[at+len(enc):], t.buf[at:len(t.buf)-len(enc)])
	copy(t.buf[at:], enc)
	for _, later := range t.entries[i:] {
		later.off += len(enc)
	}
	re := &rootEntry{treeEntry: e, off: at, plen: len(enc) - 20}
	t.entries = append(t.entries, nil)
	copy(t.entries[i+1:], t.entries[i:])
	t.entries[i] = re
	t.pos[e.name] = re
}

func (t *rootTree) remove(name string) {
	e, ok := t.pos[name]
	if !ok {
		return
	}
	delete(t.pos, name)
	for i, x := range t.entries {
		if x == e {
			t.entries = append(t.entries[:i], t.entries[i+1:]...)
			break
		}
	}
	t.dirty = true
}

// gitIndex is .git/index kept in memory, encoded: one entry per path,
// sorted by path. An entry's length depends only on its path, so updating
// a file's entry overwrites it in place, and writing the index is one
// checksum and one write. Keeping it in step with HEAD is what makes
// `git status` clean after every commit without the store ever scanning
// the working tree.
type gitIndex struct {
	ents  map[string][]byte // path -> encoded entry (version 2, padded)
	paths []string          // sorted bytewise, as git sorts index entries, unless dirty
	off   map[string]int    // path -> offset of its entry in buf
	buf   []byte            // header and entries, without the checksum
	dirty bool              // paths added or removed since buf was built
	base  *splitBase        // the shared index .git/index refers to (gitsplit.go)
}

func newGitIndex() *gitIndex { return &gitIndex{ents: map[string][]byte{}, dirty: true} }

// set records path with the object id and the file's stat data. st may be
// nil (stat unknown): git then re-reads the file to compare it, which is
// slower for git but still correct.
func (x *gitIndex) set(path string, mode filemode.FileMode, h plumbing.Hash, st *unix.Stat_t) {
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

func (x *gitIndex) remove(path string) {
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

// encode returns the index file, version 2, without extensions (git
// rebuilds its cache-tree extension when it needs one), and its checksum.
func (x *gitIndex) encode() (body []byte, sum [20]byte) {
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

// commitPayload encodes a commit object.
func commitPayload(tree, parent plumbing.Hash, ident, when, msg string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "tree %s\n", tree)
	if !parent.IsZero() {
		fmt.Fprintf(&b, "parent %s\n", parent)
	}
	fmt.Fprintf(&b, "author %s %s\ncommitter %s %s\n\n", ident, when, ident, when)
	b.WriteString(msg)
	if len(msg) == 0 || msg[len(msg)-1] != '\n' {
		b.WriteByte('\n')
	}
	return b.Bytes()
}
