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
