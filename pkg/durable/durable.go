// Package durable replaces files so that a reader, or a power loss, sees
// either the old content or the new one, never a torn file, and so that a
// replacement reported done survives a crash.
//
// The protocol is the same for one file (WriteFile) and for many (Batch):
// write the new content under a temporary name in the final directory,
// fsync it, rename it over the final name, fsync the directory. A Batch
// shares the fsync rounds among all its files, and can end with a commit
// point (a lock file, as git's refs use) that is renamed only once
// everything else is durable. Linux only: it uses fdatasync(2) and
// syncfs(2).
package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// counts counts the writes of every caller in the process, for the
// benchmarks' per-operation figures (files, bytes and fsyncs do not depend
// on the machine's speed).
var counts struct {
	files, bytes, fsyncs atomic.Int64
}

// Counts returns the files created, bytes written and fsync calls
// (fdatasync, fsync of a directory, syncfs) made so far by this package in
// the process.
func Counts() (files, bytes, fsyncs int64) {
	return counts.files.Load(), counts.bytes.Load(), counts.fsyncs.Load()
}

// WriteFile replaces path with data durably: a temporary file named
// tempPrefix<random> beside path is written, fsynced, given exactly perm
// (whatever the umask: another user's process, dnsmasq after dropping its
// privileges, may have to read it), renamed over path, and path's
// directory is fsynced. On error the temporary file is removed and path
// is unchanged, unless only the final directory fsync failed.
func WriteFile(path string, data []byte, perm fs.FileMode, tempPrefix string) error {
	b := NewBatch()
	if err := b.add(path, tempPrefix, data, perm, false, true); err != nil {
		b.Abort()
		return err
	}
	return b.Apply()
}

// CreateTemp creates dir/prefix<random> exclusively, with perm less the
// umask. Unlike os.CreateTemp it needs no chmod afterwards.
func CreateTemp(dir, prefix string, perm fs.FileMode) (*os.File, error) {
	for i := 0; ; i++ {
		name := filepath.Join(dir, prefix+strconv.FormatUint(rand.Uint64(), 36))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
		if err == nil || !errors.Is(err, fs.ErrExist) || i > 100 {
			return f, err
		}
	}
}

// RemoveTemps deletes the entries of dir whose names start with prefix
// (what a crash left of a write), directories included, and returns how
// many it removed.
func RemoveTemps(dir, prefix string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err == nil {
				n++
			}
		}
	}
	return n, nil
}

// SyncDir fsyncs a directory, making the entries created, renamed or
// removed in it durable.
func SyncDir(dir string) error {
	counts.fsyncs.Add(1)
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

// syncFS flushes the whole filesystem that holds dir (syncfs(2)).
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
	counts.fsyncs.Add(1)
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", f.Name(), err)
	}
	return nil
}
