package store

import "time"

// SetStaleLockAge shortens the age past which OpenDir takes a lock file for
// a killed process's, for tests that kill processes many times; it returns
// a function restoring the old value.
func SetStaleLockAge(d time.Duration) (restore func()) {
	old := staleLock
	staleLock = d
	return func() { staleLock = old }
}

// SetPackThreshold changes how many loose objects trigger a pack.
func SetPackThreshold(n int) (restore func()) {
	old := packThreshold
	packThreshold = n
	return func() { packThreshold = old }
}

// PackNow waits for a background pack and packs what is left loose, so a
// test can reopen a directory whose HEAD is in a pack.
func (d *Dir) PackNow() error {
	d.packWG.Wait()
	d.wmu.Lock()
	objs := d.git.written
	d.git.written, d.git.writtenBytes = nil, 0
	gitDir := d.git.gitDir
	d.wmu.Unlock()
	_, _, _, err := packLoose(gitDir, objs)
	return err
}

// IOCounts returns the files written, bytes written and fsyncs made so far
// by every store in the process.
func IOCounts() (files, bytes, fsyncs int64) {
	return ioCounts.files.Load(), ioCounts.bytes.Load(), ioCounts.fsyncs.Load()
}
