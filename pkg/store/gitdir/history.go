package gitdir

import (
	"fmt"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"mayu/pkg/store"
)

// historyAttempts bounds the reads of History: a read that runs while a
// background pack merge (packmerge.go) renames its new pack into place can
// miss an object that is there; read again, it is found.
const historyAttempts = 3

// History implements store.Historian: it follows the branch from its head
// back through first parents (mayu's history is linear) and keeps the
// commits whose subject is "<serial>: ..." (every commit mayu and Mayu
// 0.11 make for a host, hand edits included). It reads git's objects as
// any concurrent git reader does, without the store's locks. Each call
// reads every pack index first: about 0.2 s with the 1,000 packs a storm
// of 2,000 writes leaves for a while (measured on a 2-core machine), so it
// serves operators' reads, never a path a booting machine waits on.
func (d *Dir) History(serial string, max, scan int) ([]store.Commit, error) {
	if d.git == nil {
		return nil, fmt.Errorf("%w: the cluster directory is run with --no-git", store.ErrNoHistory)
	}
	if err := store.CheckSerial(serial); err != nil {
		return nil, err
	}
	var err error
	for attempt := 0; attempt < historyAttempts; attempt++ {
		var out []store.Commit
		if out, err = d.history(serial, max, scan); err == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("%w: read the history: %w", store.ErrStorage, err)
}

func (d *Dir) history(serial string, max, scan int) ([]store.Commit, error) {
	head, err := d.git.readRef()
	if err != nil || head.IsZero() {
		return nil, err
	}
	// A small cache: the walk reads each commit once, and go-git's default
	// (96 MiB) would be held by every concurrent request.
	st := filesystem.NewStorage(osfs.New(d.git.gitDir), cache.NewObjectLRU(cache.MiByte))
	repo, err := git.Open(st, nil)
	if err != nil {
		return nil, err
	}
	var out []store.Commit
	at := head
	for n := 0; scan <= 0 || n < scan; n++ {
		c, err := repo.CommitObject(at)
		if err != nil {
			return nil, fmt.Errorf("commit %s: %w", at, err)
		}
		if hc, ok := store.ParseCommitMessage(serial, c.Message); ok {
			hc.Hash, hc.Time = c.Hash.String(), c.Committer.When.UTC()
			out = append(out, hc)
			if max > 0 && len(out) >= max {
				break
			}
		}
		if c.NumParents() == 0 {
			break
		}
		at = c.ParentHashes[0]
	}
	return out, nil
}

var _ store.Historian = (*Dir)(nil)
