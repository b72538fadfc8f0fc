package gitdir

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"mayu/pkg/durable"
	"mayu/pkg/store/gitdir/internal/gitenc"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-billy/v5"
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
// smallPackSize that known does not list and that are not retired, as
// level 0.
func smallPacks(gitDir string, known []packFile, retired []retiredPack) []packFile {
	have := map[string]bool{}
	for _, r := range retired {
		have[r.name] = true
	}
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
// accumulated, and deletes the packs merged away more than packGrace ago
// (retired.go). It runs under wmu.
func (d *Dir) maybePack() {
	g := d.git
	if g == nil {
		return
	}
	d.sweepPacks(g.gitDir)
	if d.packing.Load() {
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
	if d.git != nil {
		d.git.packs = append(d.git.packs, packFile{name: name, level: level})
	}
	d.retirePacks(gitDir, names)
	d.log.Info("merged packs", "packs", len(packs), "into", name, "objects", n, "bytes", size, "took", time.Since(start))
}

// mergePacks writes every object of the named packs (in objects/pack)
// into one new pack, root trees (the trees commits point to) as deltas
// against the root tree before them, and returns its name.
func mergePacks(gitDir string, names []string) (name string, n int, size int64, err error) {
	pr := newPackReader(filepath.Join(gitDir, "objects", "pack"))
	roots, err := rootTrees(pr, names)
	if err != nil {
		return "", 0, 0, err
	}
	pr.cache.Clear()
	f, err := durable.CreateTemp(pr.dir, packTmpPrefix, 0o444)
	if err != nil {
		return "", 0, 0, err
	}
	defer func() {
		_ = f.Close()
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	pw := gitenc.NewFilePackWriter(f)
	if err := copyObjects(pr, names, roots, pw); err != nil {
		return "", 0, 0, err
	}
	if pw.Len() == 0 {
		return "", 0, 0, errors.New("nothing to merge")
	}
	name, size, err = finishPackFile(pr.dir, f, pw)
	return name, pw.Len(), size, err
}

// packReader opens the packs of a directory one at a time, sharing one
// small cache of resolved objects: go-git's default is 96 MiB per pack,
// and at 10,000 hosts a root tree is 400 KB.
type packReader struct {
	dir   string
	fsys  billy.Filesystem
	cache *cache.ObjectLRU
}

func newPackReader(dir string) *packReader {
	return &packReader{dir: dir, fsys: osfs.New(dir), cache: cache.NewObjectLRU(16 * cache.MiByte)}
}

// with calls fn with the index and the pack of the pack called name.
func (pr *packReader) with(name string, fn func(*idxfile.MemoryIndex, *packfile.Packfile) error) error {
	xf, err := os.Open(filepath.Join(pr.dir, name+".idx"))
	if err != nil {
		return err
	}
	idx := idxfile.NewMemoryIndex()
	err = idxfile.NewDecoder(bufio.NewReader(xf)).Decode(idx)
	_ = xf.Close()
	if err != nil {
		return fmt.Errorf("%s.idx: %w", name, err)
	}
	pf, err := pr.fsys.Open(name + ".pack")
	if err != nil {
		return err
	}
	p := packfile.NewPackfileWithCache(idx, pr.fsys, pf, pr.cache, 0)
	defer p.Close()
	return fn(idx, p)
}

// rootTrees returns the root trees of the packs: the trees their commits
// name.
func rootTrees(pr *packReader, names []string) (map[plumbing.Hash]bool, error) {
	roots := map[plumbing.Hash]bool{}
	for _, nm := range names {
		err := pr.with(nm, func(_ *idxfile.MemoryIndex, p *packfile.Packfile) error {
			it, err := p.GetByType(plumbing.CommitObject)
			if err != nil {
				return err
			}
			return it.ForEach(func(o plumbing.EncodedObject) error {
				payload, err := readEncoded(o)
				if err != nil {
					return err
				}
				if tree, ok := gitenc.CommitTree(payload); ok {
					roots[tree] = true
				}
				return nil
			})
		})
		if err != nil {
			return nil, err
		}
	}
	return roots, nil
}

// copyObjects writes every object of the packs into pw once: root trees
// deltified again as one chain (RootDeltas), every other object stored
// whole copied as it is (PackWriter.Raw), without inflating it. Each pack
// is read in offset order (scanPack): resolving the store's root-tree
// deltas through go-git's object reader cost half the CPU of a storm at
// 10,000 hosts (every 400 KB tree rebuilt and hashed again for its
// cache), while their bases are the trees just read.
func copyObjects(pr *packReader, names []string, roots map[plumbing.Hash]bool, pw *gitenc.PackWriter) error {
	seen := map[plumbing.Hash]bool{}
	var rd gitenc.RootDeltas
	isRoot := func(h plumbing.Hash, kind plumbing.ObjectType) bool { return kind == plumbing.TreeObject && roots[h] }
	for _, nm := range names {
		err := pr.with(nm, func(idx *idxfile.MemoryIndex, p *packfile.Packfile) error {
			return scanPack(filepath.Join(pr.dir, nm+".pack"), idx, p, isRoot, func(h plumbing.Hash, kind plumbing.ObjectType, payload, raw []byte) error {
				if seen[h] {
					return nil
				}
				seen[h] = true
				switch {
				case raw != nil:
					return pw.Raw(h, raw)
				case isRoot(h, kind):
					return rd.Write(pw, h, payload, false)
				default:
					return pw.Full(h, kind, payload)
				}
			})
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// scanPack calls fn for every object of the pack at path, in offset
// order, with its id (from the index) and type. An object stored whole
// for which want is false comes as its raw entry (raw, payload nil); the
// others come inflated (payload, raw nil), deltas applied (git's pack
// format, gitformat-pack(5): OFS_DELTA and REF_DELTA, with
// gitenc.PatchDelta) to a base among the objects inflated last (scanCache), or
// else read through p. fn must not modify a payload: later deltas may use
// it as their base.
func scanPack(path string, idx *idxfile.MemoryIndex, p *packfile.Packfile, want func(plumbing.Hash, plumbing.ObjectType) bool,
	fn func(h plumbing.Hash, kind plumbing.ObjectType, payload, raw []byte) error) error {
	type at struct {
		off int64
		h   plumbing.Hash
	}
	var entries []at
	it, err := idx.EntriesByOffset()
	if err != nil {
		return err
	}
	for {
		e, err := it.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		entries = append(entries, at{int64(e.Offset), e.Hash})
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	name := filepath.Base(path)
	var cache scanCache
	var zr io.ReadCloser
	for i, e := range entries {
		end := fi.Size() - 20 // the pack's checksum
		if i+1 < len(entries) {
			end = entries[i+1].off
		}
		if end <= e.off {
			return fmt.Errorf("%s: object %s at %d has no data", name, e.h, e.off)
		}
		raw := make([]byte, end-e.off)
		if _, err := f.ReadAt(raw, e.off); err != nil {
			return fmt.Errorf("%s: object %s: %w", name, e.h, err)
		}
		hd, err := gitenc.ParseEntryHeader(raw)
		if err != nil {
			return fmt.Errorf("%s: object %s: %w", name, e.h, err)
		}
		kind := hd.Kind()
		whole := hd.Type != gitenc.PackOFSDelta && hd.Type != gitenc.PackREFDelta
		if whole && !want(e.h, kind) {
			if err := fn(e.h, kind, nil, raw); err != nil {
				return err
			}
			continue
		}
		data, err := inflate(&zr, raw[hd.Len:], hd.Size)
		if err != nil {
			return fmt.Errorf("%s: object %s: %w", name, e.h, err)
		}
		if !whole {
			base := e.off - hd.Dist
			if hd.Type == gitenc.PackREFDelta {
				if base, err = idx.FindOffset(hd.Ref); err != nil {
					return fmt.Errorf("%s: object %s: delta base %s: %w", name, e.h, hd.Ref, err)
				}
			}
			bk, bp, ok := cache.get(base)
			if !ok {
				o, err := p.GetByOffset(base)
				if err != nil {
					return fmt.Errorf("%s: object %s: delta base at %d: %w", name, e.h, base, err)
				}
				if bp, err = readEncoded(o); err != nil {
					return fmt.Errorf("%s: object %s: delta base at %d: %w", name, e.h, base, err)
				}
				bk = o.Type()
			}
			if data, err = gitenc.PatchDelta(bp, data); err != nil {
				return fmt.Errorf("%s: object %s: %w", name, e.h, err)
			}
			kind = bk
		}
		cache.put(e.off, kind, data)
		if err := fn(e.h, kind, data, nil); err != nil {
			return err
		}
	}
	return nil
}

// inflate decompresses one entry's zlib data, which must hold exactly
// size bytes; *zr is reused from entry to entry.
func inflate(zr *io.ReadCloser, data []byte, size int64) ([]byte, error) {
	src := bytes.NewReader(data)
	if *zr == nil {
		r, err := zlib.NewReader(src)
		if err != nil {
			return nil, err
		}
		*zr = r
	} else if err := (*zr).(zlib.Resetter).Reset(src, nil); err != nil {
		return nil, err
	}
	out := make([]byte, size)
	if _, err := io.ReadFull(*zr, out); err != nil {
		return nil, fmt.Errorf("inflating %d bytes: %w", size, err)
	}
	return out, nil
}

// scanCache holds the objects scanPack read last, and the last large ones
// stored whole: the bases of the store's root-tree deltas (the previous
// root tree, a few objects back, or the chain's full tree).
type scanCache struct {
	recent [8]scanned
	next   int
	whole  [2]scanned
	nwhole int
}

type scanned struct {
	off     int64
	kind    plumbing.ObjectType
	payload []byte
}

func (c *scanCache) put(off int64, kind plumbing.ObjectType, payload []byte) {
	c.recent[c.next%len(c.recent)] = scanned{off, kind, payload}
	c.next++
	if len(payload) >= 64<<10 {
		c.whole[c.nwhole%len(c.whole)] = scanned{off, kind, payload}
		c.nwhole++
	}
}

func (c *scanCache) get(off int64) (plumbing.ObjectType, []byte, bool) {
	for _, l := range [][]scanned{c.recent[:], c.whole[:]} {
		for _, o := range l {
			if o.payload != nil && o.off == off {
				return o.kind, o.payload, true
			}
		}
	}
	return 0, nil, false
}

// finishPackFile completes the pack written to the temporary file f and
// its index, fsyncs both and renames them to pack-<checksum>.{pack,idx}
// in dir. It returns the pack's name and size in bytes.
func finishPackFile(dir string, f *os.File, pw *gitenc.PackWriter) (string, int64, error) {
	sum, idx, size, err := pw.FinishFile()
	if err != nil {
		return "", 0, err
	}
	if err := f.Sync(); err != nil {
		return "", 0, err
	}
	xf, err := durable.CreateTemp(dir, idxTmpPrefix, 0o444)
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
	name := gitenc.PackName(sum)
	if err := os.Rename(xf.Name(), filepath.Join(dir, name+".idx")); err != nil {
		return "", 0, err
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name+".pack")); err != nil {
		_ = os.Remove(filepath.Join(dir, name+".idx"))
		return "", 0, err
	}
	if err := durable.SyncDir(dir); err != nil {
		return "", 0, err
	}
	return name, size, nil
}

func readEncoded(o plumbing.EncodedObject) ([]byte, error) {
	r, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}
