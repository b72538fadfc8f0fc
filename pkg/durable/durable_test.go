package durable

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "hosts")
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)

	files, bytes, fsyncs := Counts()
	require.NoError(t, WriteFile(p, []byte("one\n"), 0o644, ".tmp-"))
	require.NoError(t, WriteFile(p, []byte("two\n"), 0o644, ".tmp-"))
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "two\n", string(got))
	fi, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o644), fi.Mode().Perm(), "exact mode whatever the umask")
	assert.Equal(t, []string{"hosts"}, names(t, dir), "no temporary file left")

	f2, b2, s2 := Counts()
	assert.Equal(t, int64(2), f2-files)
	assert.Equal(t, int64(8), b2-bytes)
	assert.Equal(t, int64(4), s2-fsyncs, "one file and one directory fsync per write")
}

func TestWriteFileFails(t *testing.T) {
	dir := t.TempDir()
	err := WriteFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o644, ".tmp-")
	assert.ErrorIs(t, err, fs.ErrNotExist)

	// The target is a directory: the rename fails, the temp file goes.
	require.NoError(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "d", "keep"), nil, 0o644))
	assert.Error(t, WriteFile(filepath.Join(dir, "d"), []byte("x"), 0o644, ".tmp-"))
	assert.Equal(t, []string{"d"}, names(t, dir))
}

// TestBatchOrder checks the commit point protocol: late files appear after
// the others, the commit point last; before Apply nothing is visible.
func TestBatchOrder(t *testing.T) {
	for _, syncfsMin := range []int{16, 1} { // per-file fsyncs, and syncfs
		old := SyncfsMin
		SyncfsMin = syncfsMin
		t.Cleanup(func() { SyncfsMin = old })
		dir := t.TempDir()
		sub := filepath.Join(dir, "sub")
		require.NoError(t, os.Mkdir(sub, 0o755))
		ref := filepath.Join(dir, "ref")
		require.NoError(t, os.WriteFile(ref, []byte("old\n"), 0o644))

		b := NewBatch()
		require.NoError(t, b.AddLate(filepath.Join(sub, "record"), ".tmp-", []byte("late"), 0o644))
		require.NoError(t, b.Add(filepath.Join(dir, "object"), ".tmp-", []byte("early"), 0o444))
		l, err := AcquireLock(ref, time.Second)
		require.NoError(t, err)
		require.NoError(t, l.Write([]byte("new\n")))
		b.SetCommitPoint(l)
		b.SyncDir(dir)
		assert.False(t, b.Renamed(filepath.Join(sub, "record")))
		assert.NotContains(t, names(t, dir), "object", "nothing visible before Apply")

		require.NoError(t, b.Apply())
		assert.True(t, b.Landed())
		assert.True(t, b.Renamed(filepath.Join(sub, "record")))
		for p, want := range map[string]string{ref: "new\n", filepath.Join(dir, "object"): "early", filepath.Join(sub, "record"): "late"} {
			got, err := os.ReadFile(p)
			require.NoError(t, err)
			assert.Equal(t, want, string(got))
		}
		assert.ElementsMatch(t, []string{"object", "ref", "sub"}, names(t, dir), "lock and temps gone")
		assert.Equal(t, []string{"record"}, names(t, sub))
	}
}

func TestBatchAbort(t *testing.T) {
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref")
	b := NewBatch()
	require.NoError(t, b.Add(filepath.Join(dir, "a"), ".tmp-", []byte("a"), 0o644))
	l, err := AcquireLock(ref, time.Second)
	require.NoError(t, err)
	b.SetCommitPoint(l)
	b.Abort()
	assert.False(t, b.Landed())
	assert.Empty(t, names(t, dir), "temporary files and the lock removed")

	// A rename that fails stops the batch before its commit point.
	b = NewBatch()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "busy"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "busy", "x"), nil, 0o644))
	require.NoError(t, b.Add(filepath.Join(dir, "busy"), ".tmp-", []byte("a"), 0o644))
	l, err = AcquireLock(ref, time.Second)
	require.NoError(t, err)
	b.SetCommitPoint(l)
	assert.Error(t, b.Apply())
	assert.False(t, b.Landed())
	assert.Equal(t, []string{"busy"}, names(t, dir), "ref never written, lock and temps removed")
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "index")
	l, err := AcquireLock(p, time.Second)
	require.NoError(t, err)
	_, err = AcquireLock(p, 20*time.Millisecond)
	assert.True(t, errors.Is(err, ErrLocked), "held: %v", err)
	l.Release()
	_, err = os.Stat(p)
	assert.ErrorIs(t, err, fs.ErrNotExist, "released without touching the target")

	l, err = AcquireLock(p, time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Write([]byte("v1")))
	require.NoError(t, l.Commit())
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "v1", string(got))
	assert.Equal(t, []string{"index"}, names(t, dir))
}

func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".tmp-1"), nil, 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, ".tmp-git", "objects"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "keep"), nil, 0o644))
	n, err := RemoveTemps(dir, ".tmp-")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, []string{"keep"}, names(t, dir))
}
