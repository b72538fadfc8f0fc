package gitdir

import (
	"errors"
	"io/fs"
	"mayu/pkg/durable"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// writeIndex writes .git/index from memory as a split index (see
// gitenc.Index), first writing a new shared index when there is none yet,
// it is gone, or the changes have grown past a sixteenth of it. It is a
// cache of HEAD plus stat data, so it is not fsynced: Open rebuilds it
// anyway.
func (g *gitRepo) writeIndex() error {
	x := g.index
	old := x.BaseName()
	if x.NeedsBase() || !exists(filepath.Join(g.gitDir, old)) {
		name, data, use := x.EncodeBase()
		if err := durable.WriteFile(filepath.Join(g.gitDir, name), data, 0o644, tmpPrefix); err != nil {
			return err
		}
		use()
	}
	lock, err := durable.AcquireLock(filepath.Join(g.gitDir, "index"), lockWait)
	if err != nil {
		return err
	}
	if err := lock.Write(x.EncodeSplit()); err != nil {
		lock.Release()
		return err
	}
	if err := lock.Commit(); err != nil {
		return err
	}
	if old != "" && old != x.BaseName() {
		_ = os.Remove(filepath.Join(g.gitDir, old))
	}
	return nil
}

// cleanSharedIndexes removes shared indexes other than the current one
// that are old enough that no git command can still be reading them
// (git itself expires them after two weeks, but only when it writes a
// split index).
func (g *gitRepo) cleanSharedIndexes() {
	entries, err := os.ReadDir(g.gitDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, "sharedindex.") || n == g.index.BaseName() {
			continue
		}
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < time.Hour {
			continue
		}
		if err := os.Remove(filepath.Join(g.gitDir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			g.log.Warn("cannot remove old shared index", "file", n, "err", err)
		}
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
