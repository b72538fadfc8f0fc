package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// Lock is git's lock protocol: <path>.lock created exclusively, written,
// renamed over <path>. Stock git uses the same names, so a git command
// running on the same files at the same time waits for us (or we for it)
// instead of both writing.
type Lock struct {
	path string
	f    *os.File
}

// ErrLocked says the lock is held by someone else past the wait.
var ErrLocked = errors.New("lock held by another process")

// AcquireLock creates path.lock, waiting up to wait for a holder to finish
// (polling, 1 ms doubling to 50 ms). Past the wait it returns an error
// wrapping ErrLocked.
func AcquireLock(path string, wait time.Duration) (*Lock, error) {
	deadline := time.Now().Add(wait)
	delay := time.Millisecond
	for {
		f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			counts.files.Add(1)
			return &Lock{path: path, f: f}, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s.lock: %w", path, ErrLocked)
		}
		time.Sleep(delay)
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// Write appends data to the lock file.
func (l *Lock) Write(data []byte) error {
	counts.bytes.Add(int64(len(data)))
	_, err := l.f.Write(data)
	return err
}

// Commit renames the lock over the target, without fsync: for a cache
// (git's index) that a crash may lose. A durable change goes through a
// Batch's commit point instead.
func (l *Lock) Commit() error {
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

// Release drops the lock without changing the target.
func (l *Lock) Release() {
	if l.f != nil {
		_ = l.f.Close()
		l.f = nil
		_ = os.Remove(l.path + ".lock")
	}
}
