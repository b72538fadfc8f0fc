package gitenc

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
)

// largeObject is the payload size above which objects are packed with zlib
// level 0 (stored blocks). Only the root tree gets that big (about 40 bytes
// per host, so 400 KB at 10,000 hosts); compressing it costs ~4 ms
// per batch at BestSpeed and saves little, since half of it is random
// hashes; the other root trees of a pack are deltas of a few bytes.
const largeObject = 64 << 10

// packMaxDepth bounds delta chains, as git's default --depth does, so that
// reading an old tree never applies more than this many deltas.
const packMaxDepth = 50

// RootDeltas writes root trees into a pack, each as a delta against the
// previous one, or against the chain's full tree when the chain is as deep
// as allowed, or in full when the delta would not be much smaller.
type RootDeltas struct {
	prev      *packedTree // the last root tree written
	chainRoot *packedTree // the full root tree the current chain starts from
	// free holds copies no longer referenced, reused for the next copy: at
	// 10,000 hosts a root tree is 400 KB and a batch may hold hundreds.
	free [][]byte
}

// Write adds one root tree, whose id is h. copyPayload is set when the
// caller reuses the payload's memory afterwards (the store's in-memory
// root tree).
func (rd *RootDeltas) Write(pw *PackWriter, h plumbing.Hash, payload []byte, copyPayload bool) error {
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
		if delta := TreeDelta(base.payload, payload); len(delta) < len(payload)/2 {
			if err := pw.delta(h, base.offset, delta); err != nil {
				return err
			}
			next = &packedTree{payload: payload, offset: pw.last, depth: base.depth + 1}
		}
	}
	if next == nil {
		if err := pw.Full(h, plumbing.TreeObject, payload); err != nil {
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

// PackWriter writes a version 2 pack and its version 2 index, to memory
// (NewMemPackWriter, for a batch that the write protocol then makes
// durable with its other files) or to a file the caller created and makes
// durable (NewFilePackWriter, for merges, whose packs may be large).
type PackWriter struct {
	f       PackFile      // nil in memory
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

// PackFile is the file a PackWriter writes (an *os.File): written in
// sequence, then patched and read back to compute its checksum.
type PackFile interface {
	io.ReadWriteSeeker
	io.WriterAt
}

// NewFilePackWriter returns a writer of a pack into f, which must be
// empty.
func NewFilePackWriter(f PackFile) *PackWriter {
	pw := &PackWriter{f: f}
	pw.init(f)
	return pw
}

// NewMemPackWriter returns a writer of a pack into memory.
func NewMemPackWriter() *PackWriter {
	pw := &PackWriter{mem: &bytes.Buffer{}}
	pw.init(pw.mem)
	return pw
}

func (pw *PackWriter) init(w io.Writer) {
	pw.bw = bufio.NewWriterSize(w, 256<<10)
	pw.zw, _ = zlib.NewWriterLevel(nil, zlib.BestSpeed)
	pw.zstore, _ = zlib.NewWriterLevel(nil, zlib.NoCompression)
	// The header's object count is patched when finishing, once known.
	_, _ = pw.bw.Write([]byte{'P', 'A', 'C', 'K', 0, 0, 0, 2, 0, 0, 0, 0})
	pw.off = 12
}

// Len returns the number of objects written so far.
func (pw *PackWriter) Len() int { return len(pw.entries) }

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

// Full adds an object, whose id is h, in full.
func (pw *PackWriter) Full(h plumbing.Hash, kind plumbing.ObjectType, payload []byte) error {
	return pw.entry(h, packType(kind), len(payload), nil, payload)
}

func (pw *PackWriter) delta(h plumbing.Hash, baseOffset int64, delta []byte) error {
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
func (pw *PackWriter) entry(h plumbing.Hash, typ byte, size int, baseRef, data []byte) error {
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

// FinishFile patches the object count into the file and appends the
// checksum. It returns the checksum (the pack is named
// pack-<checksum>.pack, see PackName), the pack's index and the pack's
// size in bytes. The caller makes both durable.
func (pw *PackWriter) FinishFile() (sum plumbing.Hash, idx []byte, size int64, err error) {
	if err := pw.bw.Flush(); err != nil {
		return sum, nil, 0, err
	}
	// The object count, known only now, goes into the header; then the
	// file is hashed for its trailer.
	if _, err := pw.f.WriteAt(pw.count(), 8); err != nil {
		return sum, nil, 0, err
	}
	if _, err := pw.f.Seek(0, io.SeekStart); err != nil {
		return sum, nil, 0, err
	}
	h := sha1.New()
	if _, err := io.Copy(h, pw.f); err != nil {
		return sum, nil, 0, err
	}
	h.Sum(sum[:0])
	if _, err := pw.f.Write(sum[:]); err != nil {
		return sum, nil, 0, err
	}
	if idx, err = pw.index(sum); err != nil {
		return sum, nil, 0, err
	}
	return sum, idx, pw.off + 20, nil
}

// FinishMem returns the name (see PackName), the pack and the index of a
// pack written to memory.
func (pw *PackWriter) FinishMem() (name string, pack, idx []byte, err error) {
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
	return PackName(packSum), pack, idx, nil
}

// PackName is the base name, "pack-<checksum>", of a pack and its index.
func PackName(sum plumbing.Hash) string { return "pack-" + sum.String() }

func (pw *PackWriter) count() []byte {
	n := uint32(len(pw.entries))
	return []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

// index encodes the pack's version 2 index.
func (pw *PackWriter) index(packSum plumbing.Hash) ([]byte, error) {
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

// Raw adds an object by copying its whole entry from another pack as it
// is (header and zlib data): a merge then neither inflates nor compresses
// it again. The entry must hold the object whole: a delta names its base
// by position or id, which Raw does not check.
func (pw *PackWriter) Raw(h plumbing.Hash, entry []byte) error {
	if _, err := pw.bw.Write(entry); err != nil {
		return err
	}
	pw.entries = append(pw.entries, idxfile.Entry{Hash: h, Offset: uint64(pw.off), CRC32: crc32.ChecksumIEEE(entry)})
	pw.last = pw.off
	pw.off += int64(len(entry))
	return nil
}

// Pack entry types of git's pack format (gitformat-pack(5)).
const (
	PackCommit   = packCommit
	PackTree     = packTree
	PackBlob     = packBlob
	PackTag      = 4
	PackOFSDelta = packOFSDelta
	PackREFDelta = 7
)

// EntryHeader is the header of a pack entry: its type, the size of its
// data once inflated, for an OFS_DELTA the distance back to its base and
// for a REF_DELTA its base's id, and the header's length (the zlib data
// follows).
type EntryHeader struct {
	Type byte
	Size int64
	Dist int64
	Ref  plumbing.Hash
	Len  int
}

// ParseEntryHeader reads the header at the start of b (gitformat-pack(5):
// a size in little-endian groups of 7 bits after the 3 type bits, an
// OFS_DELTA distance in big-endian groups of 7 bits each plus one).
func ParseEntryHeader(b []byte) (EntryHeader, error) {
	var e EntryHeader
	if len(b) == 0 {
		return e, errors.New("gitenc: empty pack entry")
	}
	c := b[0]
	e.Type = (c >> 4) & 7
	e.Size = int64(c & 0x0f)
	i, shift := 1, 4
	for c&0x80 != 0 {
		if i >= len(b) || shift > 56 {
			return e, errors.New("gitenc: bad pack entry size")
		}
		c = b[i]
		e.Size |= int64(c&0x7f) << shift
		shift += 7
		i++
	}
	switch e.Type {
	case PackOFSDelta:
		if i >= len(b) {
			return e, errors.New("gitenc: bad delta distance")
		}
		c = b[i]
		i++
		e.Dist = int64(c & 0x7f)
		for c&0x80 != 0 {
			if i >= len(b) || e.Dist > 1<<48 {
				return e, errors.New("gitenc: bad delta distance")
			}
			c = b[i]
			i++
			e.Dist = (e.Dist+1)<<7 | int64(c&0x7f)
		}
	case PackREFDelta:
		if i+20 > len(b) {
			return e, errors.New("gitenc: bad delta base")
		}
		copy(e.Ref[:], b[i:i+20])
		i += 20
	case PackCommit, PackTree, PackBlob, PackTag:
	default:
		return e, fmt.Errorf("gitenc: pack entry type %d", e.Type)
	}
	e.Len = i
	return e, nil
}

// Kind is the object type of a whole entry.
func (e EntryHeader) Kind() plumbing.ObjectType {
	switch e.Type {
	case PackCommit:
		return plumbing.CommitObject
	case PackTree:
		return plumbing.TreeObject
	case PackBlob:
		return plumbing.BlobObject
	case PackTag:
		return plumbing.TagObject
	}
	return plumbing.InvalidObject
}
