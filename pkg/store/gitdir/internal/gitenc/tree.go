package gitenc

import (
	"sort"
	"strconv"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// TreeEntry is one entry of a tree object.
type TreeEntry struct {
	Name string
	Mode filemode.FileMode
	Hash plumbing.Hash
}

// IsDir reports whether the entry is a subtree.
func (e TreeEntry) IsDir() bool { return e.Mode == filemode.Dir }

// TreeLess is git's tree order: names compared bytewise, a directory
// compared as if its name ended in '/'. It serves the in-memory trees
// (string names) and the encoded ones the packer walks ([]byte names).
func TreeLess[T string | []byte](a T, aDir bool, b T, bDir bool) bool {
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

// SortTree sorts entries in git's tree order.
func SortTree(es []TreeEntry) {
	sort.Slice(es, func(i, j int) bool { return TreeLess(es[i].Name, es[i].IsDir(), es[j].Name, es[j].IsDir()) })
}

func appendTreeEntry(b []byte, e TreeEntry) []byte {
	b = strconv.AppendUint(b, uint64(e.Mode), 8)
	b = append(b, ' ')
	b = append(b, e.Name...)
	b = append(b, 0)
	return append(b, e.Hash[:]...)
}

// EncodeTree returns the payload of a tree object holding es, which must
// be sorted (SortTree).
func EncodeTree(es []TreeEntry) []byte {
	var b []byte
	for _, e := range es {
		b = appendTreeEntry(b, e)
	}
	return b
}

// RootTree is the root tree of HEAD kept in memory in its encoded form.
// Changing a host's subtree hash is a 20-byte copy into the buffer, so a
// commit costs one hash and one write of the buffer, never a rebuild.
// Adding a host splices its entry into the buffer (a memmove); a bulk
// commit of thousands of new hosts appends them unsorted and sorts once,
// when the tree is next needed.
type RootTree struct {
	entries []*rootEntry
	pos     map[string]*rootEntry
	buf     []byte
	dirty   bool // entries appended since buf was built (entries unsorted)
}

type rootEntry struct {
	TreeEntry
	off  int // offset of the entry in buf
	plen int // length of its "<mode> <name>\x00" prefix: the hash follows
}

// NewRootTree returns the tree of entries es, in any order.
func NewRootTree(es []TreeEntry) *RootTree {
	t := &RootTree{pos: make(map[string]*rootEntry, len(es)), dirty: true}
	for _, e := range es {
		re := &rootEntry{TreeEntry: e}
		t.entries = append(t.entries, re)
		t.pos[e.Name] = re
	}
	return t
}

// Bytes returns the encoded tree. The caller must not modify it, and it
// changes with the next Set.
func (t *RootTree) Bytes() []byte {
	if !t.dirty {
		return t.buf
	}
	sort.Slice(t.entries, func(i, j int) bool {
		a, b := t.entries[i], t.entries[j]
		return TreeLess(a.Name, a.IsDir(), b.Name, b.IsDir())
	})
	size := 0
	for _, e := range t.entries {
		size += 8 + len(e.Name) + 20
	}
	t.buf = make([]byte, 0, size+size/8)
	for _, e := range t.entries {
		e.off = len(t.buf)
		t.buf = appendTreeEntry(t.buf, e.TreeEntry)
		e.plen = len(t.buf) - 20 - e.off
	}
	t.dirty = false
	return t.buf
}

// Get returns the entry called name.
func (t *RootTree) Get(name string) (TreeEntry, bool) {
	e, ok := t.pos[name]
	if !ok {
		return TreeEntry{}, false
	}
	return e.TreeEntry, true
}

// Set adds or replaces the entry called e.Name.
func (t *RootTree) Set(e TreeEntry) {
	cur, ok := t.pos[e.Name]
	switch {
	case ok && cur.Mode == e.Mode:
		cur.Hash = e.Hash
		if !t.dirty {
			copy(t.buf[cur.off+cur.plen:], e.Hash[:])
		}
	case ok:
		cur.TreeEntry = e
		t.dirty = true
	case t.dirty:
		re := &rootEntry{TreeEntry: e}
		t.entries = append(t.entries, re)
		t.pos[e.Name] = re
	default:
		t.insert(e)
	}
}

// insert splices a new entry into the sorted, encoded tree.
func (t *RootTree) insert(e TreeEntry) {
	i := sort.Search(len(t.entries), func(i int) bool {
		return !TreeLess(t.entries[i].Name, t.entries[i].IsDir(), e.Name, e.IsDir())
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
	re := &rootEntry{TreeEntry: e, off: at, plen: len(enc) - 20}
	t.entries = append(t.entries, nil)
	copy(t.entries[i+1:], t.entries[i:])
	t.entries[i] = re
	t.pos[e.Name] = re
}

// Remove drops the entry called name, if any.
func (t *RootTree) Remove(name string) {
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
