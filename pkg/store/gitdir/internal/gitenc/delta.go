package gitenc

import "bytes"

// TreeDelta returns a git delta that turns tree base into tree target.
// Both are sorted entry lists: entries present, unchanged, in both are
// copied from base (runs of them in one instruction), the others inserted.
// It allocates nothing per entry: it runs over every root tree packed.
func TreeDelta(base, target []byte) []byte {
	var d deltaBuf
	d.varint(len(base))
	d.varint(len(target))
	be := treeEntrySpans(base)
	i := 0
	for pos := 0; pos < len(target); {
		end := nextTreeEntry(target, pos)
		if end < 0 {
			// Not a tree we can parse: insert the rest.
			d.insert(target[pos:])
			break
		}
		entry := target[pos:end]
		pos = end
		if i < len(be) && bytes.Equal(base[be[i][0]:be[i][1]], entry) {
			d.copy(be[i][0], be[i][1]-be[i][0])
			i++
			continue
		}
		name, isDir := treeEntryName(entry)
		for i < len(be) {
			bn, bd := treeEntryName(base[be[i][0]:be[i][1]])
			if !TreeLess(bn, bd, name, isDir) {
				break
			}
			i++
		}
		if i < len(be) && bytes.Equal(base[be[i][0]:be[i][1]], entry) {
			d.copy(be[i][0], be[i][1]-be[i][0])
			i++
		} else {
			d.insert(entry)
		}
	}
	return d.bytes()
}

// treeEntrySpans returns [start, end) of each entry.
func treeEntrySpans(t []byte) [][2]int {
	out := make([][2]int, 0, len(t)/40+1)
	for pos := 0; pos < len(t); {
		end := nextTreeEntry(t, pos)
		if end < 0 {
			break
		}
		out = append(out, [2]int{pos, end})
		pos = end
	}
	return out
}

// nextTreeEntry returns the end of the entry starting at pos, or -1.
func nextTreeEntry(t []byte, pos int) int {
	nul := bytes.IndexByte(t[pos:], 0)
	if nul < 0 || pos+nul+21 > len(t) {
		return -1
	}
	return pos + nul + 21
}

// treeEntryName returns an entry's name and whether it is a directory.
func treeEntryName(e []byte) ([]byte, bool) {
	sp := bytes.IndexByte(e, ' ')
	nul := bytes.IndexByte(e, 0)
	if sp < 0 || nul < sp {
		return nil, false
	}
	return e[sp+1 : nul], sp == 5 && string(e[:sp]) == "40000"
}

// deltaBuf builds git delta instructions, merging adjacent copies and
// batching inserts.
type deltaBuf struct {
	out              []byte
	copyOff, copyLen int
	pending          []byte
}

func (d *deltaBuf) varint(n int) {
	for n >= 0x80 {
		d.out = append(d.out, byte(n)|0x80)
		n >>= 7
	}
	d.out = append(d.out, byte(n))
}

func (d *deltaBuf) copy(off, n int) {
	d.flushInsert()
	if d.copyLen > 0 && d.copyOff+d.copyLen == off {
		d.copyLen += n
		return
	}
	d.flushCopy()
	d.copyOff, d.copyLen = off, n
}

func (d *deltaBuf) insert(b []byte) {
	d.flushCopy()
	d.pending = append(d.pending, b...)
}

func (d *deltaBuf) flushInsert() {
	for len(d.pending) > 0 {
		n := len(d.pending)
		if n > 0x7f {
			n = 0x7f
		}
		d.out = append(d.out, byte(n))
		d.out = append(d.out, d.pending[:n]...)
		d.pending = d.pending[n:]
	}
	d.pending = d.pending[:0]
}

func (d *deltaBuf) flushCopy() {
	for d.copyLen > 0 {
		n := d.copyLen
		if n > 0xffffff {
			n = 0xffffff
		}
		cmd := byte(0x80)
		var args []byte
		for i, off := 0, d.copyOff; i < 4; i++ {
			if b := byte(off >> (8 * i)); b != 0 {
				cmd |= 1 << i
				args = append(args, b)
			}
		}
		for i := 0; i < 3; i++ {
			if b := byte(n >> (8 * i)); b != 0 {
				cmd |= 0x10 << i
				args = append(args, b)
			}
		}
		d.out = append(d.out, cmd)
		d.out = append(d.out, args...)
		d.copyOff += n
		d.copyLen -= n
	}
}

func (d *deltaBuf) bytes() []byte {
	d.flushCopy()
	d.flushInsert()
	return d.out
}
