package store

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
)

// Every commit writes a new root tree of about 40 bytes per host: 400 KB
// at 10,000 hosts, so 10 commits per machine would leave 40 GB of loose
// objects. Mayu 0.11 had `git gc --auto` run after its commits; this store
// instead packs the loose objects it wrote, in the background, once there
// are packThreshold of them. In the pack, a root tree is stored as a delta
// against an earlier one: the trees are sorted entry lists, so the delta is
// computed by walking both lists, in time linear in their size, and holds
// little more than the entries that changed.

// packThreshold is the number of loose objects written before they are
// packed (about a thousand commits); packBytes bounds their size, which
// at 10,000 hosts is reached first (about 600 commits).
var (
	packThreshold       = 4096
	packBytes     int64 = 256 << 20
)

// packMaxDepth bounds delta chains, as git's default --depth does, so that
// reading an old tree never applies more than this many deltas.
const packMaxDepth = 50

// Temporary names in objects/pack, prefixed as git's own (`git gc` removes
// stale ones; fsck ignores them).
const (
	packTmpPrefix = "tmp_pack_mayu-"
	idxTmpPrefix  = "tmp_idx_mayu-"
)

// looseObj is an object the store wrote as a loose object.
type looseObj struct {
	hash plumbing.Hash
	root bool // a root tree: stored as a delta in the pack
}

// maybePack starts packing when enough loose objects were written. It runs
// in the background: loose objects never change, and each is deleted only
// after the pack holding it is durable, so writers need not wait.
func (d *Dir) maybePack() {
	g := d.git
	if g == nil || (len(g.written) < packThreshold && g.writtenBytes < packBytes) || d.packing.Load() {
		return
	}
	objs := g.written
	g.written, g.writtenBytes = nil, 0
	d.packing.Store(true)
	d.packWG.Add(1)
	go func() {
		defer d.packWG.Done()
		defer d.packing.Store(false)
		start := time.Now()
		name, n, size, err := packLoose(g.gitDir, objs)
		if err != nil {
			d.log.Warn("cannot pack loose objects; they stay loose", "err", err)
			return
		}
		d.log.Info("packed loose objects", "pack", name, "objects", n, "bytes", size, "took", time.Since(start))
	}()
}

// packLoose writes the objects into one pack with its index and deletes
// the loose copies. Objects already gone (packed by `git gc`) are skipped.
func packLoose(gitDir string, objs []looseObj) (name string, n int, size int64, err error) {
	packDir := filepath.Join(gitDir, "objects", "pack")
	if err := os.MkdirAll(packDir, 0o755); err != nil {
		return "", 0, 0, err
	}
	pw, err := newPackWriter(packDir)
	if err != nil {
		return "", 0, 0, err
	}
	defer pw.abort()

	var (
		seen      = map[plumbing.Hash]bool{}
		packed    []plumbing.Hash
		prev      *packedTree // the last root tree written
		chainRoot *packedTree // the full root tree the current chain starts from
	)
	for _, o := range objs {
		if seen[o.hash] {
			continue
		}
		kind, payload, err := readLoose(gitDir, o.hash)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", 0, 0, fmt.Errorf("read object %s: %w", o.hash, err)
		}
		seen[o.hash] = true
		packed = append(packed, o.hash)
		if !o.root || kind != plumbing.TreeObject {
			if err := pw.full(o.hash, kind, payload); err != nil {
				return "", 0, 0, err
			}
			continue
		}
		// A root tree: a delta against the previous one, or against the
		// chain's full tree when the chain is as deep as allowed.
		base := prev
		if base != nil && base.depth >= packMaxDepth {
			base = chainRoot
		}
		if base != nil {
			if delta := treeDelta(base.payload, payload); len(delta) < len(payload)/2 {
				if err := pw.delta(o.hash, base.offset, delta); err != nil {
					return "", 0, 0, err
				}
				prev = &packedTree{payload: payload, offset: pw.last, depth: base.depth + 1}
				continue
			}
		}
		if err := pw.full(o.hash, kind, payload); err != nil {
			return "", 0, 0, err
		}
		prev = &packedTree{payload: payload, offset: pw.last}
		chainRoot = prev
	}
	if len(packed) == 0 {
		return "", 0, 0, nil
	}
	name, size, err = pw.finish()
	if err != nil {
		return "", 0, 0, err
	}
	// The pack is durable: the loose copies can go. An unlink lost in a
	// crash only leaves an object stored twice.
	for _, h := range packed {
		hex := h.String()
		_ = os.Remove(filepath.Join(gitDir, "objects", hex[:2], hex[2:]))
	}
	return name, len(packed), size, nil
}

type packedTree struct {
	payload []byte
	offset  int64
	depth   int
}

// packWriter writes a version 2 pack and its version 2 index.
type packWriter struct {
	dir     string
	f       *os.File
	bw      *bufio.Writer
	off     int64
	last    int64 // offset of the last object written
	entries []idxfile.Entry
	zbuf    bytes.Buffer
	zw      *zlib.Writer
	header  []byte
}

func newPackWriter(dir string) (*packWriter, error) {
	f, err := createTemp(dir, packTmpPrefix, 0o444)
	if err != nil {
		return nil, err
	}
	pw := &packWriter{dir: dir, f: f}
	pw.bw = bufio.NewWriterSize(f, 256<<10)
	pw.zw, _ = zlib.NewWriterLevel(nil, zlib.BestSpeed)
	// The header's object count is patched in finish, once known.
	if _, err := pw.bw.Write([]byte{'P', 'A', 'C', 'K', 0, 0, 0, 2, 0, 0, 0, 0}); err != nil {
		return nil, err
	}
	pw.off = 12
	return pw, nil
}

// Pack object types.
const (
	packCommit   = 1
	packTree     = 2
	packBlob     = 3
	packOFSDelta = 6
)

func packType(k plumbing.ObjectType) byte {
	switch k {
	case plumbing.CommitObject:
		return packCommit
	case plumbing.TreeObject:
		return packTree
	default:
		return packBlob
	}
}

func (pw *packWriter) full(h plumbing.Hash, kind plumbing.ObjectType, payload []byte) error {
	return pw.entry(h, packType(kind), len(payload), nil, payload)
}

func (pw *packWriter) delta(h plumbing.Hash, baseOffset int64, delta []byte) error {
	// The distance to the base, in git's offset encoding.
	dist := uint64(pw.off - baseOffset)
	var enc [10]byte
	i := len(enc) - 1
	enc[i] = byte(dist & 0x7f)
	for dist >>= 7; dist != 0; dist >>= 7 {
		dist--
		i--
		enc[i] = 0x80 | byte(dist&0x7f)
	}
	return pw.entry(h, packOFSDelta, len(delta), enc[i:], delta)
}

// entry writes one object: type and size header, the delta's base offset
// if any, and the zlib-compressed data. The idx records its offset and the
// CRC-32 of those bytes.
func (pw *packWriter) entry(h plumbing.Hash, typ byte, size int, baseRef, data []byte) error {
	hdr := pw.header[:0]
	c := typ<<4 | byte(size&0x0f)
	size >>= 4
	for size != 0 {
		hdr = append(hdr, c|0x80)
		c = byte(size & 0x7f)
		size >>= 7
	}
	hdr = append(hdr, c)
	hdr = append(hdr, baseRef...)
	pw.header = hdr

	pw.zbuf.Reset()
	pw.zw.Reset(&pw.zbuf)
	if _, err := pw.zw.Write(data); err != nil {
		return err
	}
	if err := pw.zw.Close(); err != nil {
		return err
	}
	crc := crc32.NewIEEE()
	crc.Write(hdr)
	crc.Write(pw.zbuf.Bytes())
	if _, err := pw.bw.Write(hdr); err != nil {
		return err
	}
	if _, err := pw.bw.Write(pw.zbuf.Bytes()); err != nil {
		return err
	}
	pw.entries = append(pw.entries, idxfile.Entry{Hash: h, Offset: uint64(pw.off), CRC32: crc.Sum32()})
	pw.last = pw.off
	pw.off += int64(len(hdr) + pw.zbuf.Len())
	return nil
}

// finish patches the object count, writes the checksum and the index,
// fsyncs both and renames them to pack-<checksum>.{pack,idx}.
func (pw *packWriter) finish() (string, int64, error) {
	if err := pw.bw.Flush(); err != nil {
		return "", 0, err
	}
	// The object count, known only now, goes into the header; then the
	// file is hashed for its trailer.
	count := uint32(len(pw.entries))
	var cnt [4]byte
	cnt[0], cnt[1], cnt[2], cnt[3] = byte(count>>24), byte(count>>16), byte(count>>8), byte(count)
	if _, err := pw.f.WriteAt(cnt[:], 8); err != nil {
		return "", 0, err
	}
	if _, err := pw.f.Seek(0, io.SeekStart); err != nil {
		return "", 0, err
	}
	sum := sha1.New()
	if _, err := io.Copy(sum, pw.f); err != nil {
		return "", 0, err
	}
	var packSum plumbing.Hash
	sum.Sum(packSum[:0])
	if _, err := pw.f.Write(packSum[:]); err != nil {
		return "", 0, err
	}
	if err := pw.f.Sync(); err != nil {
		return "", 0, err
	}
	size := pw.off + 20

	var iw idxfile.Writer
	if err := iw.OnHeader(count); err != nil {
		return "", 0, err
	}
	for _, e := range pw.entries {
		iw.Add(e.Hash, e.Offset, e.CRC32)
	}
	if err := iw.OnFooter(packSum); err != nil {
		return "", 0, err
	}
	mi, err := iw.Index()
	if err != nil {
		return "", 0, err
	}
	xf, err := createTemp(pw.dir, idxTmpPrefix, 0o444)
	if err != nil {
		return "", 0, err
	}
	defer func() {
		_ = xf.Close()
		_ = os.Remove(xf.Name())
	}()
	xb := bufio.NewWriter(xf)
	if _, err := idxfile.NewEncoder(xb).Encode(mi); err != nil {
		return "", 0, err
	}
	if err := xb.Flush(); err != nil {
		return "", 0, err
	}
	if err := xf.Sync(); err != nil {
		return "", 0, err
	}
	name := "pack-" + packSum.String()
	if err := os.Rename(pw.f.Name(), filepath.Join(pw.dir, name+".pack")); err != nil {
		return "", 0, err
	}
	_ = pw.f.Close()
	pw.f = nil
	if err := os.Rename(xf.Name(), filepath.Join(pw.dir, name+".idx")); err != nil {
		return "", 0, err
	}
	if err := syncDir(pw.dir); err != nil {
		return "", 0, err
	}
	return name, size, nil
}

func (pw *packWriter) abort() {
	if pw.f != nil {
		_ = pw.f.Close()
		_ = os.Remove(pw.f.Name())
		pw.f = nil
	}
}

// readLoose reads a loose object written by anyone.
func readLoose(gitDir string, h plumbing.Hash) (plumbing.ObjectType, []byte, error) {
	hex := h.String()
	f, err := os.Open(filepath.Join(gitDir, "objects", hex[:2], hex[2:]))
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	zr, err := zlib.NewReader(bufio.NewReader(f))
	if err != nil {
		return 0, nil, err
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return 0, nil, err
	}
	hdr, payload, ok := bytes.Cut(raw, []byte{0})
	if !ok {
		return 0, nil, fmt.Errorf("object %s: no header", h)
	}
	kindName, sizeStr, ok := bytes.Cut(hdr, []byte{' '})
	if !ok {
		return 0, nil, fmt.Errorf("object %s: bad header %q", h, hdr)
	}
	kind, err := plumbing.ParseObjectType(string(kindName))
	if err != nil {
		return 0, nil, fmt.Errorf("object %s: %w", h, err)
	}
	if n, err := strconv.Atoi(string(sizeStr)); err != nil || n != len(payload) {
		return 0, nil, fmt.Errorf("object %s: size %q does not match %d bytes", h, sizeStr, len(payload))
	}
	return kind, payload, nil
}

// treeDelta returns a git delta that turns tree base into tree target.
// Both are sorted entry lists: entries present, unchanged, in both are
// copied from base (runs of them in one instruction), the others inserted.
// It allocates nothing per entry: it runs over every root tree packed.
func treeDelta(base, target []byte) []byte {
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
			if !treeLessBytes(bn, bd, name, isDir) {
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

// treeLessBytes is treeLess on byte slices.
func treeLessBytes(a []byte, aDir bool, b []byte, bDir bool) bool {
	n := min(len(a), len(b))
	if c := bytes.Compare(a[:n], b[:n]); c != 0 {
		return c < 0
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
