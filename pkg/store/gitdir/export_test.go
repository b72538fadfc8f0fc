package gitdir

import (
	"mayu/pkg/durable"
	"path/filepath"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
)

// ScanPack runs the merge's pack reader over the pack called name in dir:
// objects stored whole for which want is false come raw.
func ScanPack(dir, name string, want func(plumbing.Hash, plumbing.ObjectType) bool, fn func(h plumbing.Hash, kind plumbing.ObjectType, payload, raw []byte) error) error {
	pr := newPackReader(dir)
	return pr.with(name, func(idx *idxfile.MemoryIndex, p *packfile.Packfile) error {
		return scanPack(filepath.Join(dir, name+".pack"), idx, p, want, fn)
	})
}

// SetStaleLockAge shortens the age past which Open takes a lock file for
// a killed process's, for tests that kill processes many times; it returns
// a function restoring the old value.
func SetStaleLockAge(d time.Duration) (restore func()) {
	old := staleLock
	staleLock = d
	return func() { staleLock = old }
}

// SetMergeFanIn changes how many packs of a level are merged into one.
func SetMergeFanIn(n int) (restore func()) {
	old := mergeFanIn
	mergeFanIn = n
	return func() { mergeFanIn = old }
}

// MergeNow waits for a background merge and merges every pack the store
// wrote into one.
func (d *Dir) MergeNow() error {
	d.packWG.Wait()
	d.wmu.Lock()
	packs := d.git.packs
	d.git.packs = nil
	gitDir := d.git.gitDir
	d.wmu.Unlock()
	if len(packs) < 2 {
		d.wmu.Lock()
		d.git.packs = append(d.git.packs, packs...)
		d.wmu.Unlock()
		return nil
	}
	d.mergeInto(gitDir, packs, 99)
	return nil
}

// Packs returns the names of the packs the store wrote and has not merged.
func (d *Dir) Packs() []string {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	var out []string
	for _, p := range d.git.packs {
		out = append(out, p.name)
	}
	return out
}

// IOCounts returns the files written, bytes written and fsyncs made so far
// by every store in the process.
func IOCounts() (files, bytes, fsyncs int64) { return durable.Counts() }

// SetSyncfsMin changes the batch size from which one syncfs replaces the
// per-file fsyncs.
func SetSyncfsMin(n int) (restore func()) {
	old := durable.SyncfsMin
	durable.SyncfsMin = n
	return func() { durable.SyncfsMin = old }
}

// WaitMerges waits for a background pack merge to finish, so that a test
// running git fsck does not race with the merge removing the packs it
// replaced. No write may run meanwhile.
func (d *Dir) WaitMerges() { d.packWG.Wait() }

// SetPackGrace changes how long a merged pack stays before it is deleted.
func SetPackGrace(d time.Duration) (restore func()) {
	old := packGrace
	packGrace = d
	return func() { packGrace = old }
}

// Retired returns the names of the packs merged away and not deleted yet.
func (d *Dir) Retired() []string {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	var out []string
	for _, r := range d.retired {
		out = append(out, r.name)
	}
	return out
}

// HoldWrites takes the write lock, as a group commit being made durable
// holds it, so that the requests arriving meanwhile queue for the next
// batch. queued reports whether a request leads and how many wait in the
// queue (a leader that took its batch has left it); release lets the
// writes go on.
func (d *Dir) HoldWrites() (queued func() (leading bool, n int), release func()) {
	d.wmu.Lock()
	queued = func() (bool, int) {
		d.qmu.Lock()
		defer d.qmu.Unlock()
		return d.leading, len(d.queue)
	}
	return queued, d.wmu.Unlock
}
