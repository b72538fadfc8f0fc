package store

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// tmpPrefix starts the name of every temporary file the store creates in
// the working tree. It is listed in .git/info/exclude, so a temp file left
// by a crash never shows in `git status`, and OpenDir removes leftovers.
const tmpPrefix = ".mayu-tmp-"

// batchOpen bounds the files a batch keeps open: a bulk commit (the
// initial commit of a directory with thousands of hosts) writes more
// objects than the process may have descriptors.
const batchOpen = 256

// fsyncParallel bounds the concurrent fsync calls of one batch. On a
// journaling filesystem concurrent fsyncs share one journal commit, so a
// batch of N files costs far less than N sequential fsyncs.
const fsyncParallel = 8

// syncfsMin is the number of files (or directories) of one sync round from
// which a batch flushes them with one syncfs(2) of the filesystem instead
// of one fsync each. A group commit of a boot storm writes a record and a
// host directory per machine in the batch; fsyncing them costs rounds of
// fsyncParallel calls, each waiting for the journal, while syncfs writes
// them back and commits the journal once (and flushes the device's cache,
// as fsync does). Below it, per-file fsyncs touch nothing else on the
// filesystem. (BenchmarkUpdateConcurrent compares both.)
var syncfsMin = 16

// ioCounts counts the store's writes, for the benchmarks' per-operation
// figures (files, bytes and fsyncs do not depend on the machine's speed).
var ioCounts struct {
	files, bytes, fsyncs atomic.Int64
}

// writeBatch makes a set of files appear atomically and durably: every file
// is written under a temporary name in its final directory, all are fsynced
// (in parallel), renamed into place in the order they were added, and the
// directories that received them are fsynced. A batch may end with a commit
// point (the branch ref): it is renamed only after everything else is
// durable, so after a power loss the ref never names an object that is not
// on disk.
//
// Files added with addLate (a record in the working tree) are renamed only
// after the other files (the batch's pack) and the commit point's content are
// durable, and before the commit point. So whenever a new record is on
// disk, the objects of its commits are too and the ref lock names the new
// head: a crash before the ref rename is rolled forward at open
// (rollForwardRef, which also writes the records a crash left old) instead
// of being committed as an unexplained change.
//
// A reader never sees a partly written file, and a crash leaves either the
// old or the new file, plus at worst a temporary file that OpenDir removes.
type writeBatch struct {
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
	// cleanup (renamed, or removed by abort).
	renamed, done bool
	// late files are renamed after the others are durable (addLate).
	late bool
}

func newWriteBatch() *writeBatch {
	return &writeBatch{dirs: map[string]bool{}}
}

// add writes data to a temporary file beside final. The caller's prefix
// keeps temp names recognisable (tmpPrefix in the working tree, packTmpPrefix
// among objects).
func (b *writeBatch) add(final, prefix string, data []byte, perm fs.FileMode) error {
	return b.addFile(final, prefix, data, perm, false)
}

// addLate is add for a file that must not appear before the batch's other
// files and its commit point's content are durable.
func (b *writeBatch) addLate(final, prefix string, data []byte, perm fs.FileMode) error {
	return b.addFile(final, prefix, data, perm, true)
}

func (b *writeBatch) addFile(final, prefix string, data []byte, perm fs.FileMode, late bool) error {
	f, err := createTemp(filepath.Dir(final), prefix, perm)
	if err != nil {
		return err
	}
	b.files = append(b.files, &batchFile{f: f, tmp: f.Name(), final: final, late: late})
	b.open++
	ioCounts.files.Add(1)
	ioCounts.bytes.Add(int64(len(data)))
	if _, err := f.Write(data); err != nil {
		return err
	}
	if b.open >= batchOpen {
		return b.syncOpen()
	}
	return nil
}

// createTemp creates prefix<random> in dir with perm (less the umask),
// exclusively. Unlike os.CreateTemp it needs no chmod afterwards.
func createTemp(dir, prefix string, perm fs.FileMode) (*os.File, error) {
	for i := 0; ; i++ {
		name := filepath.Join(dir, prefix+strconv.FormatUint(rand.Uint64(), 36))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
		if err == nil || !errors.Is(err, fs.ErrExist) || i > 100 {
			return f, err
		}
	}
}

// setCommitPoint adds the file that makes the batch take effect (a ref
// lock file, written and still open), to be renamed last.
func (b *writeBatch) setCommitPoint(f *os.File, tmp, final string) {
	b.commit = &batchFile{f: f, tmp: tmp, final: final}
}

// syncOpen fsyncs and closes the files still open, in parallel, with the
// commit point.
func (b *writeBatch) syncOpen() error {
	files := append([]*batchFile(nil), b.files[len(b.files)-b.open:]...)
	if b.commit != nil && b.commit.f != nil {
		files = append(files, b.commit)
	}
	if len(files) >= syncfsMin {
		if err := syncfs(files[0].f); err != nil {
			return err
		}
	} else {
		ioCounts.fsyncs.Add(int64(len(files)))
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

// syncDir asks for dir to be fsynced after the renames, for a directory
// that got a new entry the batch did not create itself (a new host
// directory in the cluster directory).
func (b *writeBatch) syncDir(dir string) { b.dirs[dir] = true }

// apply fsyncs, renames and fsyncs the directories, then does the same
// for the late files and the commit point. On error the files not yet
// renamed are removed.
func (b *writeBatch) apply() error {
	defer b.abort()
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
		// late file on disk implies a readable lock naming the new head.
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
	return syncDir(filepath.Dir(b.commit.final))
}

func (b *writeBatch) rename(bf *batchFile) error {
	if err := os.Rename(bf.tmp, bf.final); err != nil {
		return err
	}
	bf.renamed, bf.done = true, true
	b.dirs[filepath.Dir(bf.final)] = true
	return nil
}

// landed reports whether every file was renamed into place: after that,
// only a directory fsync can have failed, and the change has happened.
func (b *writeBatch) landed() bool {
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

// abort closes and removes whatever was not renamed into place.
func (b *writeBatch) abort() {
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
	if len(list) >= syncfsMin {
		return syncFS(list[0])
	}
	return parallel(len(list), func(i int) error { return syncDir(list[i]) })
}

func syncDir(dir string) error {
	ioCounts.fsyncs.Add(1)
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// syncFS flushes the whole filesystem that holds dir (syncfs(2)): every
// directory of the batch is on it, since the cluster directory and its
// .git are one tree.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return syncfs(d)
}

// syncfs flushes the filesystem that holds f.
func syncfs(f *os.File) error {
	ioCounts.fsyncs.Add(1)
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", f.Name(), err)
	}
	return nil
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

// writeFileAtomic writes one file with the batch protocol.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	b := newWriteBatch()
	if err := b.add(path, tmpPrefix, data, perm); err != nil {
		b.abort()
		return err
	}
	return b.apply()
}

// lockFile is git's lock protocol: <path>.lock created exclusively, written,
// fsynced, renamed over <path>. Stock git uses the same names, so a git
// command running in the cluster directory at the same time waits for us
// (or we for it) instead of both writing.
type lockFile struct {
	path string
	f    *os.File
}

// errLocked says the lock is held by someone else past the wait.
var errLocked = errors.New("lock held by another process")

// acquireLock creates path.lock, waiting up to wait for a holder to finish.
func acquireLock(path string, wait time.Duration) (*lockFile, error) {
	deadline := time.Now().Add(wait)
	delay := time.Millisecond
	for {
		f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			ioCounts.files.Add(1)
			return &lockFile{path: path, f: f}, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s.lock: %w", path, errLocked)
		}
		time.Sleep(delay)
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

func (l *lockFile) write(data []byte) error {
	ioCounts.bytes.Add(int64(len(data)))
	_, err := l.f.Write(data)
	return err
}

func (l *lockFile) sync() error { return unix.Fdatasync(int(l.f.Fd())) }

// commit renames the lock over the target.
func (l *lockFile) commit() error {
	if err := l.f.Close(); err != nil {
		_ = os.Remove(l.path + ".lock")
		return err
	}
	l.f = nil
	if err := os.Rename(l.path+".lock", l.path); err != nil {
		_ = os.Remove(l.path + ".lock")
		return err
	}
	return nil
}

// release drops the lock without changing the target.
func (l *lockFile) release() {
	if l.f != nil {
		_ = l.f.Close()
		l.f = nil
		_ = os.Remove(l.path + ".lock")
	}
}

// removeTemps deletes leftover temporary files with the prefix in dir.
func removeTemps(dir, prefix string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			// RemoveAll: a crash during initGitDir leaves a directory.
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err == nil {
				n++
			}
		}
	}
	return n, nil
}
