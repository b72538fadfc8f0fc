package durable

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// batchOpen bounds the files a batch keeps open: a bulk commit (the
// initial commit of a directory with thousands of hosts) writes more
// files than the process may have descriptors.
const batchOpen = 256

// fsyncParallel bounds the concurrent fsync calls of one batch. On a
// journaling filesystem concurrent fsyncs share one journal commit, so a
// batch of N files costs far less than N sequential fsyncs.
const fsyncParallel = 8

// SyncfsMin is the number of files (or directories) of one sync round from
// which a batch flushes them with one syncfs(2) of the filesystem instead
// of one fsync each. A group commit of a boot storm writes a record and a
// host directory per machine in the batch; fsyncing them costs rounds of
// fsyncParallel calls, each waiting for the journal, while syncfs writes
// them back and commits the journal once (and flushes the device's cache,
// as fsync does). Below it, per-file fsyncs touch nothing else on the
// filesystem. Every file of one batch must be on one filesystem. Tests
// and benchmarks change it before writing (the store's
// BenchmarkUpdateConcurrent compares both).
var SyncfsMin = 16

// Batch makes a set of files appear atomically and durably: every file is
// written under a temporary name in its final directory, all are fsynced
// (in parallel), renamed into place in the order they were added, and the
// directories that received them are fsynced. A batch may end with a
// commit point (a lock file, see SetCommitPoint): it is renamed only after
// everything else is durable, so after a power loss it never names a file
// that is not on disk.
//
// Files added with AddLate are renamed only after the other files and the
// commit point's content are durable, and before the commit point. So
// whenever a late file is on disk, the other files are too and the commit
// point's lock is readable: a crash before the commit point's rename can
// be rolled forward by the caller.
//
// A reader never sees a partly written file, and a crash leaves either the
// old or the new file, plus at worst a temporary file the caller removes
// (RemoveTemps). A Batch is not safe for concurrent use.
type Batch struct {
	files  []*batchFile
	open   int             // files[len-open:] are still open, not yet synced
	dirs   map[string]bool // directories to fsync (new entries in them)
	commit *batchFile      // renamed last, after dirs are synced
}

type batchFile struct {
	f     *os.File
	tmp   string
	final string
	// renamed is set once the file is in place; done once it needs no
	// cleanup (renamed, or removed by Abort).
	renamed, done bool
	// late files are renamed after the others are durable (AddLate).
	late bool
}

// NewBatch returns an empty batch.
func NewBatch() *Batch {
	return &Batch{dirs: map[string]bool{}}
}

// Add writes data to a temporary file prefix<random> beside final, with
// perm less the umask. The prefix keeps temporary names recognisable to
// the caller's cleanup.
func (b *Batch) Add(final, prefix string, data []byte, perm fs.FileMode) error {
	return b.add(final, prefix, data, perm, false, false)
}

// AddLate is Add for a file that must not appear before the batch's other
// files and its commit point's content are durable.
func (b *Batch) AddLate(final, prefix string, data []byte, perm fs.FileMode) error {
	return b.add(final, prefix, data, perm, true, false)
}

func (b *Batch) add(final, prefix string, data []byte, perm fs.FileMode, late, exactPerm bool) error {
	f, err := CreateTemp(filepath.Dir(final), prefix, perm)
	if err != nil {
		return err
	}
	b.files = append(b.files, &batchFile{f: f, tmp: f.Name(), final: final, late: late})
	b.open++
	counts.files.Add(1)
	counts.bytes.Add(int64(len(data)))
	if _, err := f.Write(data); err != nil {
		return err
	}
	if exactPerm {
		if err := f.Chmod(perm); err != nil {
			return err
		}
	}
	if b.open >= batchOpen {
		return b.syncOpen()
	}
	return nil
}

// SetCommitPoint makes the lock the file that makes the batch take effect:
// its content is fsynced with the other files, and it is renamed over its
// target last. The batch takes the lock over: the caller neither commits
// nor releases it.
func (b *Batch) SetCommitPoint(l *Lock) {
	b.commit = &batchFile{f: l.f, tmp: l.path + ".lock", final: l.path}
	l.f = nil
}

// SyncDir asks for dir to be fsynced after the renames, for a directory
// that got a new entry the batch did not create itself (a new
// subdirectory made by the caller).
func (b *Batch) SyncDir(dir string) { b.dirs[dir] = true }

// Renamed reports whether the file added for final is in place.
func (b *Batch) Renamed(final string) bool {
	for _, f := range b.files {
		if f.final == final && f.renamed {
			return true
		}
	}
	return false
}

// syncOpen fsyncs and closes the files still open, in parallel, with the
// commit point.
func (b *Batch) syncOpen() error {
	files := append([]*batchFile(nil), b.files[len(b.files)-b.open:]...)
	if b.commit != nil && b.commit.f != nil {
		files = append(files, b.commit)
	}
	if len(files) >= SyncfsMin {
		if err := syncfs(files[0].f); err != nil {
			return err
		}
	} else {
		counts.fsyncs.Add(int64(len(files)))
		if err := parallel(len(files), func(i int) error { return unix.Fdatasync(int(files[i].f.Fd())) }); err != nil {
			return fmt.Errorf("fsync: %w", err)
		}
	}
	for _, bf := range files {
		err := bf.f.Close()
		bf.f = nil
		if err != nil {
			return err
		}
	}
	b.open = 0
	return nil
}

// Apply fsyncs, renames and fsyncs the directories, then does the same
// for the late files and the commit point. On error the files not yet
// renamed are removed; Landed tells whether the change happened anyway.
func (b *Batch) Apply() error {
	defer b.Abort()
	if err := b.syncOpen(); err != nil {
		return err
	}
	hasLate := false
	for _, bf := range b.files {
		if bf.late {
			hasLate = true
			continue
		}
		if err := b.rename(bf); err != nil {
			return err
		}
	}
	if hasLate {
		// The commit point's directory entry joins the first sync, so a
		// late file on disk implies a readable lock.
		if b.commit != nil {
			b.dirs[filepath.Dir(b.commit.final)] = true
		}
		if err := syncDirs(b.dirs); err != nil {
			return err
		}
		b.dirs = map[string]bool{}
		for _, bf := range b.files {
			if bf.late {
				if err := b.rename(bf); err != nil {
					return err
				}
			}
		}
	}
	if err := syncDirs(b.dirs); err != nil {
		return err
	}
	if b.commit == nil {
		return nil
	}
	if err := os.Rename(b.commit.tmp, b.commit.final); err != nil {
		return err
	}
	b.commit.renamed, b.commit.done = true, true
	return SyncDir(filepath.Dir(b.commit.final))
}

func (b *Batch) rename(bf *batchFile) error {
	if err := os.Rename(bf.tmp, bf.final); err != nil {
		return err
	}
	bf.renamed, bf.done = true, true
	b.dirs[filepath.Dir(bf.final)] = true
	return nil
}

// Landed reports whether every file was renamed into place: after that,
// only a directory fsync can have failed, and the change has happened.
func (b *Batch) Landed() bool {
	for _, bf := range b.files {
		if !bf.renamed {
			return false
		}
	}
	if b.commit != nil {
		return b.commit.renamed
	}
	return len(b.files) > 0
}

// Abort closes and removes whatever was not renamed into place, the commit
// point's lock included. It is safe to call after Apply.
func (b *Batch) Abort() {
	files := b.files
	if b.commit != nil {
		files = append(files[:len(files):len(files)], b.commit)
	}
	for _, bf := range files {
		if bf.f != nil {
			_ = bf.f.Close()
			bf.f = nil
		}
		if !bf.done {
			_ = os.Remove(bf.tmp)
			bf.done = true
		}
	}
}

// syncDirs fsyncs the directories in parallel, so their new entries (the
// renames) are durable.
func syncDirs(dirs map[string]bool) error {
	list := make([]string, 0, len(dirs))
	for d := range dirs {
		list = append(list, d)
	}
	if len(list) >= SyncfsMin {
		return syncFS(list[0])
	}
	return parallel(len(list), func(i int) error { return SyncDir(list[i]) })
}

// parallel runs fn(0..n-1) with at most fsyncParallel at a time and returns
// the first error.
func parallel(n int, fn func(i int) error) error {
	if n == 0 {
		return nil
	}
	if n == 1 {
		return fn(0)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, fsyncParallel)
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	return first
}
