package gitenc

import "bytes"

// TreeDelta returns a git delta that turns tree base into tree target.
// Two root trees of the store differ in a few entries (a host's id
// changed, a host added or removed), so the delta copies the long runs the
// two share, found by comparing memory in blocks, and inserts the bytes
// between them. Where they part it looks for the nearest point where they
// agree again: the same offset a few bytes on (an id changed), target's
// next bytes further on in base (entries removed) or base's further on in
// target (entries added). It never parses entries, so its cost is one
// comparison of the two trees (tens of microseconds at 10,000 hosts) and
// nothing per entry; any input yields a correct delta (git's delta format:
// copies from base and inserts, as go-git's PatchDelta applies it).
func TreeDelta(base, target []byte) []byte {
	var d deltaBuf
	d.varint(len(base))
	d.varint(len(target))
	q, p := 0, 0
	for p < len(target) {
		if q < len(base) {
			if n := commonPrefix(base[q:], target[p:]); n >= minCopy || (n > 0 && p+n == len(target)) {
				d.copy(q, n)
				q, p = q+n, p+n
				continue
			}
		}
		ins, skip := resync(base[q:], target[p:])
		d.insert(target[p : p+ins])
		p, q = p+ins, q+skip
	}
	return d.bytes()
}

// Tuning of TreeDelta: a copy shorter than minCopy bytes is inserted
// instead (a copy instruction costs up to 8); syncLen bytes in a row must
// agree to resume copying; resync looks syncWindow bytes ahead.
const (
	minCopy    = 8
	syncLen    = 24
	syncWindow = 8 << 10
)

// resync returns how many bytes of t to insert and of b to skip before
// the two agree again for syncLen bytes: the fewest inserted wins. With
// no such point within syncWindow, it inserts up to syncWindow bytes.
func resync(b, t []byte) (ins, skip int) {
	if len(b) < syncLen || len(t) < syncLen {
		return len(t), len(b)
	}
	// Entries removed from base: t's next bytes come later in b.
	if j := bytes.Index(b[:min(len(b), syncWindow)], t[:syncLen]); j > 0 {
		return 0, j
	}
	best, bestSkip := -1, 0
	// Bytes replaced (an id changed): same offset, a few bytes on.
	for k := 1; k < min(64, len(t), len(b)) && k+syncLen <= min(len(t), len(b)); k++ {
		if bytes.Equal(t[k:k+syncLen], b[k:k+syncLen]) {
			best, bestSkip = k, k
			break
		}
	}
	// Entries added to target: b's next bytes come later in t.
	if j := bytes.Index(t[:min(len(t), syncWindow)], b[:syncLen]); j > 0 && (best < 0 || j < best) {
		best, bestSkip = j, 0
	}
	if best < 0 {
		n := min(len(t), syncWindow)
		return n, min(n, len(b))
	}
	return best, bestSkip
}

// commonPrefix is the length of the longest common prefix of a and b,
// compared in blocks first.
func commonPrefix(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for _, block := range []int{4096, 256, 16} {
		for i+block <= n && bytes.Equal(a[i:i+block], b[i:i+block]) {
			i += block
		}
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
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
