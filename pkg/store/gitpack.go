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
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
)

// Every commit writes a new root tree of about 40 bytes per host: 400 KB
// at 10,000 hosts. Each durable batch (gitTx) is therefore written as one
// pack and its index, two files whatever the batch's size, with every root
// tree after the batch's first stored as a delta against the one before:
// the trees are sorted entry lists, so the delta is computed by walking
// both lists, in time linear in their size, and holds little more than the
// entries that changed. Loose objects would cost four files per commit,
// and on ext4 creating files while the journal commits costs far more CPU
// than writing them (see docs/PERFORMANCE.md).
//
// Mayu 0.11 had `git gc --auto` run after its commits. This store instead
// merges its own packs in the background, tiered: mergeFanIn packs of one
// level become one pack of the next, their root trees deltified again
// across the former pack boundaries, so a long-running mayu keeps
// O(mergeFanIn * log(commits)) packs and about one full root tree per
// packMaxDepth commits.

// mergeFanIn is the number of packs of one level merged into one.
var mergeFanIn = 16

// packMaxDepth bounds delta chains, as git's default --depth does, so that
// reading an old tree never applies more than this many deltas.
const packMaxDepth = 50

// Temporary names in objects/pack, prefixed as git's own (`git gc` removes
// stale ones; fsck ignores them).
const (
	packTmpPrefix = "tmp_pack_mayu-"
	idxTmpPrefix  = "tmp_idx_mayu-"
)

// packFile is a pack this process wrote: a batch's (level 0) or a merge's.
type packFile struct {
	name  string // "pack-<checksum>"
	level int
}

// smallPackSize is the size under which a pack found at open is merged
// like the store's own: the batches an earlier run left unmerged, not the
// big packs of `git gc`.
const smallPackSize = 4 << 20

// smallPacks returns known plus the packs in the repository under
// smallPackSize that known does not list, as level 0.
func smallPacks(gitDir string, known []packFile) []packFile {
	have := map[string]bool{}
	for _, p := range known {
		have[p.name] = true
	}
	packDir := filepath.Join(gitDir, "objects", "pack")
	files, _ := filepath.Glob(filepath.Join(packDir, "pack-*.pack"))
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".pack")
		fi, err := os.Stat(f)
		if err != nil || fi.Size() >= smallPackSize || have[name] {
			continue
		}
		if _, err := os.Stat(filepath.Join(packDir, name+".idx")); err != nil {
			continue
		}
		// A pack the operator marked to keep (or a promisor pack) is
		// left as it is, as git gc does.
		if exists(filepath.Join(packDir, name+".keep")) || exists(filepath.Join(packDir, name+".promisor")) {
			continue
		}
		known = append(known, packFile{name: name})
	}
	return known
}

// maybePack starts a background merge when mergeFanIn packs of a level
// accumulated. It runs under wmu. The merged packs are deleted only after
// the new one is durable, and under wmu, so the store's own readers (go-git
// at a reload) never see a pack vanish.
func (d *Dir) maybePack() {
	g := d.git
	if g == nil || d.packing.Load() {
		return
	}
	level := -1
	count := map[int]int{}
	for _, p := range g.packs {
		count[p.level]++
		if count[p.level] >= mergeFanIn && (level < 0 || p.level < level) {
			level = p.level
		}
	}
	if level < 0 {
		return
	}
	var take, keep []packFile
	for _, p := range g.packs {
		if p.level == level {
			take = append(take, p)
		} else {
			keep = append(keep, p)
		}
	}
	g.packs = keep
	d.packing.Store(true)
	d.packWG.Add(1)
	go func() {
		defer d.packWG.Done()
		defer d.packing.Store(false)
		d.mergeInto(g.gitDir, take, level+1)
	}()
}

// mergeInto merges the packs into one of the given level and drops them.
func (d *Dir) mergeInto(gitDir string, packs []packFile, level int) {
	start := time.Now()
	names := make([]string, len(packs))
	for i, p := range packs {
		names[i] = p.name
	}
	name, n, size, err := mergePacks(gitDir, names)
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if err != nil {
		// Not tried again in this run (a damaged pack would fail every
		// time); `git gc` packs them, and the next start retries.
		d.log.Warn("cannot merge packs; they stay as they are", "packs", len(packs), "err", err)
		return
	}
	packDir := filepath.Join(gitDir, "objects", "pack")
	for _, old := range names {
		// The pack first: an index without its pack is ignored by git and
		// go-git (and removed at the next start), a pack without its index
		// makes go-git fail.
		_ = os.Remove(filepath.Join(packDir, old+".pack"))
		_ = os.Remove(filepath.Join(packDir, old+".idx"))
		// What git may keep beside a pack it wrote.
		_ = os.Remove(filepath.Join(packDir, old+".rev"))
		_ = os.Remove(filepath.Join(packDir, old+".bitmap"))
	}
	if d.git != nil {
		d.git.packs = append(d.git.packs, packFile{name: name, level: level})
	}
	d.log.Info("merged packs", "packs", len(packs), "into", name, "objects", n, "bytes", size, "took", time.Since(start))
}

// mergePacks writes every object of the named packs (in objects/pack)
// into one new pack, root trees (the trees commits point to) as deltas
// against the root tree before them, and returns its name.
func mergePacks(gitDir string, names []string) (name string, n int, size int64, err error) {
	packDir := filepath.Join(gitDir, "objects", "pack")
	fsys := osfs.New(packDir)
	// One small cache of resolved objects for all the packs, opened one at
	// a time: go-git's default is 96 MiB per pack, and at 10,000 hosts a
	// root tree is 400 KB.
	objCache := cache.NewObjectLRU(16 * cache.MiByte)
	withPack := func(nm string, fn func(*idxfile.MemoryIndex, *packfile.Packfile) error) error {
		xf, err := os.Open(filepath.Join(packDir, nm+".idx"))
		if err != nil {
			return err
		}
		idx := idxfile.NewMemoryIndex()
		err = idxfile.NewDecoder(bufio.NewReader(xf)).Decode(idx)
		_ = xf.Close()
		if err != nil {
			return fmt.Errorf("%s.idx: %w", nm, err)
		}
		pf, err := fsys.Open(nm + ".pack")
		if err != nil {
			return err
		}
		p := packfile.NewPackfileWithCache(idx, fsys, pf, objCache, 0)
		defer p.Close()
		return fn(idx, p)
	}
	// Pass 1: the root trees are the trees of the commits.
	roots := map[plumbing.Hash]bool{}
	for _, nm := range names {
		err := withPack(nm, func(_ *idxfile.MemoryIndex, p *packfile.Packfile) error {
			it, err := p.GetByType(plumbing.CommitObject)
			if err != nil {
				return err
			}
			return it.ForEach(func(o plumbing.EncodedObject) error {
				payload, err := readEncoded(o)
				if err != nil {
					return err
				}
				if tree, ok := commitTree(payload); ok {
					roots[tree] = true
				}
				return nil
			})
		})
		if err != nil {
			return "", 0, 0, err
		}
	}
	objCache.Clear()
	// Pass 2: every object, in the order the packs were written.
	pw, err := newPackWriter(packDir)
	if err != nil {
		return "", 0, 0, err
	}
	defer pw.abort()
	seen := map[plumbing.Hash]bool{}
	var rd rootDeltas
	for _, nm := range names {
		err := withPack(nm, func(idx *idxfile.MemoryIndex, p *packfile.Packfile) error {
			it, err := idx.EntriesByOffset()
			if err != nil {
				return err
			}
			for {
				e, err := it.Next()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if seen[e.Hash] {
					continue
				}
				seen[e.Hash] = true
				o, err := p.GetByOffset(int64(e.Offset))
				if err != nil {
					return fmt.Errorf("object %s: %w", e.Hash, err)
				}
				payload, err := readEncoded(o)
				if err != nil {
					return fmt.Errorf("object %s: %w", e.Hash, err)
				}
				if o.Type() == plumbing.TreeObject && roots[e.Hash] {
					err = rd.write(pw, e.Hash, payload, false)
				} else {
					err = pw.full(e.Hash, o.Type(), payload)
				}
				if err != nil {
					return err
				}
			}
		})
		if err != nil {
			return "", 0, 0, err
		}
	}
	if len(seen) == 0 {
		return "", 0, 0, errors.New("nothing to merge")
	}
	name, size, err = pw.finish()
	return name, len(seen), size, err
}

func readEncoded(o plumbing.EncodedObject) ([]byte, error) {
	r, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// commitTree returns the tree a commit payload names.
func commitTree(payload []byte) (plumbing.Hash, bool) {
	line, _, _ := bytes.Cut(payload, []byte{'\n'})
	hex, ok := bytes.CutPrefix(line, []byte("tree "))
	if !ok || !plumbing.IsHash(string(hex)) {
		return plumbing.ZeroHash, false
	}
	return plumbing.NewHash(string(hex)), true
}

// rootDeltas writes root trees into a pack, each as a delta against the
// previous one, or against the chain's full tree when the chain is as deep
// as allowed, or in full when the delta would not be much smaller.
type rootDeltas struct {
	prev      *packedTree // the last root tree written
	chainRoot *packedTree // the full root tree the current chain starts from
	// free holds copies no longer referenced, reused for the next copy: at
	// 10,000 hosts a root tree is 400 KB and a batch may hold hundreds.
	free [][]byte
}

// write adds one root tree. copyPayload is set when the caller reuses the
// payload's memory afterwards (the store's in-memory root tree).
func (rd *rootDeltas) write(pw *packWriter, h plumbing.Hash, payload []byte, copyPayload bool) error {
	if copyPayload {
		var buf []byte
		if n := len(rd.free); n > 0 {
			buf, rd.free = rd.free[n-1][:0], rd.free[:n-1]
		}
		payload = append(buf, payload...)
	}
	base := rd.prev
	if base != nil && base.depth >= packMaxDepth {
		base = rd.chainRoot
	}
	var next *packedTree
	if base != nil {
		if delta := treeDelta(base.payload, payload); len(delta) < len(payload)/2 {
			if err := pw.delta(h, base.offset, delta); err != nil {
				return err
			}
			next = &packedTree{payload: payload, offset: pw.last, depth: base.depth + 1}
		}
	}
	if next == nil {
		if err := pw.full(h, plumbing.TreeObject, payload); err != nil {
			return err
		}
		next = &packedTree{payload: payload, offset: pw.last}
	}
	old, oldChain := rd.prev, rd.chainRoot
	rd.prev = next
	if next.depth == 0 {
		rd.chainRoot = next
	}
	if copyPayload {
		for i, t := range []*packedTree{old, oldChain} {
			if t == nil || t == rd.prev || t == rd.chainRoot || (i == 1 && t == old) {
				continue
			}
			rd.free = append(rd.free, t.payload)
		}
	}
	return nil
}

type packedTree struct {
	payload []byte
	offset  int64
	depth   int
}

// packWriter writes a version 2 pack and its version 2 index, to a file
// (newPackWriter, for merges) or to memory (newMemPackWriter, for a batch
// that the write protocol then makes durable with its other files).
type packWriter struct {
	dir     string
	f       *os.File      // nil in memory
	mem     *bytes.Buffer // nil to a file
	bw      *bufio.Writer
	off     int64
	last    int64 // offset of the last object written
	entries []idxfile.Entry
	zbuf    bytes.Buffer
	zw      *zlib.Writer // BestSpeed
	zstore  *zlib.Writer // stored blocks, for payloads over largeObject
	header  []byte
}

func newPackWriter(dir string) (*packWriter, error) {
	f, err := createTemp(dir, packTmpPrefix, 0o444)
	if err != nil {
		return nil, err
	}
	pw := &packWriter{dir: dir, f: f}
	pw.init(f)
	return pw, nil
}

func newMemPackWriter() *packWriter {
	pw := &packWriter{mem: &bytes.Buffer{}}
	pw.init(pw.mem)
	return pw
}

func (pw *packWriter) init(w io.Writer) {
	pw.bw = bufio.NewWriterSize(w, 256<<10)
	pw.zw, _ = zlib.NewWriterLevel(nil, zlib.BestSpeed)
	pw.zstore, _ = zlib.NewWriterLevel(nil, zlib.NoCompression)
	// The header's object count is patched in finish, once known.
	_, _ = pw.bw.Write([]byte{'P', 'A', 'C', 'K', 0, 0, 0, 2, 0, 0, 0, 0})
	pw.off = 12
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
	zw := pw.zw
	if len(data) > largeObject {
		zw = pw.zstore
	}
	zw.Reset(&pw.zbuf)
	if _, err := zw.Write(data); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
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
	if _, err := pw.f.WriteAt(pw.count(), 8); err != nil {
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
	idx, err := pw.index(packSum)
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
	if _, err := xf.Write(idx); err != nil {
		return "", 0, err
	}
	if err := xf.Sync(); err != nil {
		return "", 0, err
	}
	// The index first, as in a batch (see gitTx.write).
	name := "pack-" + packSum.String()
	if err := os.Rename(xf.Name(), filepath.Join(pw.dir, name+".idx")); err != nil {
		return "", 0, err
	}
	if err := os.Rename(pw.f.Name(), filepath.Join(pw.dir, name+".pack")); err != nil {
		_ = os.Remove(filepath.Join(pw.dir, name+".idx"))
		return "", 0, err
	}
	_ = pw.f.Close()
	pw.f = nil
	if err := syncDir(pw.dir); err != nil {
		return "", 0, err
	}
	return name, size, nil
}

// finishMem returns the name, the pack and the index of a pack written to
// memory.
func (pw *packWriter) finishMem() (name string, pack, idx []byte, err error) {
	if err := pw.bw.Flush(); err != nil {
		return "", nil, nil, err
	}
	pack = pw.mem.Bytes()
	copy(pack[8:12], pw.count())
	packSum := plumbing.Hash(sha1.Sum(pack))
	pack = append(pack, packSum[:]...)
	if idx, err = pw.index(packSum); err != nil {
		return "", nil, nil, err
	}
	return "pack-" + packSum.String(), pack, idx, nil
}

func (pw *packWriter) count() []byte {
	n := uint32(len(pw.entries))
	return []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

// index encodes the pack's version 2 index.
func (pw *packWriter) index(packSum plumbing.Hash) ([]byte, error) {
	var iw idxfile.Writer
	if err := iw.OnHeader(uint32(len(pw.entries))); err != nil {
		return nil, err
	}
	for _, e := range pw.entries {
		iw.Add(e.Hash, e.Offset, e.CRC32)
	}
	if err := iw.OnFooter(packSum); err != nil {
		return nil, err
	}
	mi, err := iw.Index()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := idxfile.NewEncoder(&buf).Encode(mi); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (pw *packWriter) abort() {
	if pw.f != nil {
		_ = pw.f.Close()
		_ = os.Remove(pw.f.Name())
		pw.f = nil
	}
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
			if !treeLess(bn, bd, name, isDir) {
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
