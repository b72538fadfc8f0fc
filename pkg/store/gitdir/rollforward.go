package gitdir

import (
	"fmt"
	"mayu/pkg/durable"
	"mayu/pkg/store/gitdir/internal/gitenc"
	"os"
	"path/filepath"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
)

// maxRollForward bounds the commits between HEAD and a stale ref lock's
// head that rollForwardRef walks: one write makes one commit per step, or
// at most recoverBulk+1 commits at open.
const maxRollForward = 1000

// rollForwardRef finishes a branch update interrupted by a crash. The
// write order (objects durable, ref lock written and fsynced, record
// renamed, lock renamed over the ref) means a record on disk that is newer
// than HEAD comes with a stale lock naming the commits that explain it.
// Moving the ref keeps their messages ("updated state to installed")
// instead of committing the file as a "recovered uncommitted change" (the
// retried request changes nothing, so the real message would be lost).
//
// It moves the ref only when the lock holds a whole commit id, every
// commit from it back to HEAD is readable, and the working tree holds
// what that commit holds for every path it changed; otherwise the lock is
// left to cleanStale (a crash before the record was renamed: the client
// was never answered and retries). disk maps serials to the blob id of
// their conf.json on disk; clusterBlob is cluster.json's (zero if none).
func (g *gitRepo) rollForwardRef(hs *headState, isHost func(string) bool, disk map[string]plumbing.Hash, clusterBlob plumbing.Hash) (bool, error) {
	newHead, ok, err := g.staleRefLock(hs.head)
	if err != nil || !ok {
		return false, err
	}
	skip := func(why string, err error) (bool, error) {
		g.log.Warn("not finishing the interrupted branch update", "lock", g.refPath()+".lock", "head", newHead, "reason", why, "err", err)
		return false, nil
	}
	repo, err := git.PlainOpen(g.workDir)
	if err != nil {
		return skip("cannot open repository", err)
	}
	if err := checkAncestry(repo, newHead, hs); err != nil {
		return skip("commits missing or HEAD not an ancestor", err)
	}
	ls := &headState{head: newHead, confBlob: map[string]plumbing.Hash{}, extras: map[string][]gitenc.TreeEntry{}, files: map[string]gitenc.TreeEntry{}}
	if err := readCommitTree(repo, ls, isHost); err != nil {
		return skip("new tree unreadable", err)
	}
	missing, why := unfinishedPaths(ls, hs, disk, clusterBlob)
	if why != "" {
		return skip(why, nil)
	}
	for _, path := range missing {
		if err := g.restoreFromCommit(repo, newHead, path); err != nil {
			return skip("cannot write "+path+" from the new commit", err)
		}
		g.log.Warn("finished writing a record interrupted by a crash", "path", path)
	}
	if err := g.moveRefToLock(hs.head, newHead); err != nil {
		return false, err
	}
	g.log.Warn("finished branch update interrupted by a crash", "ref", g.refName, "from", hs.head, "to", newHead)
	return true, nil
}

// staleRefLock returns the commit a stale lock of the branch names, when
// there is one that names a whole commit id and the branch is still at
// head (ok false otherwise: nothing to finish).
func (g *gitRepo) staleRefLock(head plumbing.Hash) (newHead plumbing.Hash, ok bool, err error) {
	refPath := g.refPath()
	stale, err := g.waitLock(refPath)
	if err != nil || !stale {
		return newHead, false, err
	}
	raw, err := os.ReadFile(refPath + ".lock")
	if err != nil {
		return newHead, false, nil // gone meanwhile, or unreadable: cleanStale decides
	}
	text := string(raw)
	if len(text) != 41 || text[40] != '\n' || !plumbing.IsHash(text[:40]) {
		return newHead, false, nil // written only partly: the record was not renamed yet
	}
	newHead = plumbing.NewHash(text[:40])
	cur, err := g.readRef()
	if err != nil || cur != head || newHead == cur {
		return newHead, false, nil
	}
	return newHead, true, nil
}

// unfinishedPaths compares the working tree (disk, clusterBlob) with the
// new commit's tree ls and HEAD's hs. A batch renames its records one by
// one after its objects and the ref lock are durable: a crash among those
// renames leaves some records new and the others old. Each changed path
// must hold the new or the old version (anything else is an edit the
// operator made since); at least one must be new (else the batch had not
// begun to show). It returns the paths still at the old version, to be
// written from the new commit, or why the batch cannot be finished.
func unfinishedPaths(ls, hs *headState, disk map[string]plumbing.Hash, clusterBlob plumbing.Hash) (missing []string, why string) {
	landed := false
	check := func(path string, onDisk, newBlob, oldBlob plumbing.Hash) bool {
		switch {
		case newBlob == oldBlob:
		case onDisk == newBlob:
			landed = true
		case onDisk == oldBlob:
			missing = append(missing, path)
		default:
			return false
		}
		return true
	}
	for s := range unionKeys(ls.confBlob, hs.confBlob) {
		if !check(s+"/"+confName, disk[s], ls.confBlob[s], hs.confBlob[s]) {
			return nil, "working tree holds neither version of " + s + "/" + confName
		}
	}
	if !check(clusterName, clusterBlob, ls.files[clusterName].Hash, hs.files[clusterName].Hash) {
		return nil, "working tree holds neither version of " + clusterName
	}
	if !landed {
		return nil, "no record of the new commit is in the working tree yet"
	}
	return missing, ""
}

// moveRefToLock renames the branch's lock over the ref, durably, and
// records the move in the reflog.
func (g *gitRepo) moveRefToLock(cur, newHead plumbing.Hash) error {
	refPath := g.refPath()
	if err := os.Rename(refPath+".lock", refPath); err != nil {
		return err
	}
	if err := durable.SyncDir(filepath.Dir(refPath)); err != nil {
		return err
	}
	g.appendReflog(fmt.Sprintf("%s %s %s %s\tmayu: finished update interrupted by a crash\n", cur, newHead, g.ident, gitenc.FormatWhen(g.now())))
	return nil
}

// restoreFromCommit writes the working-tree file at path as the commit
// holds it.
func (g *gitRepo) restoreFromCommit(repo *git.Repository, commit plumbing.Hash, path string) error {
	c, err := repo.CommitObject(commit)
	if err != nil {
		return err
	}
	f, err := c.File(path)
	if err != nil {
		return err
	}
	data, err := f.Contents()
	if err != nil {
		return err
	}
	p := filepath.Join(g.workDir, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return durable.WriteFile(p, []byte(data), 0o644, tmpPrefix)
}

// checkAncestry checks that hs.head is a first-parent ancestor of head
// (zero: head's history starts a new branch) within maxRollForward
// commits, and that what every commit on the way changed, compared with
// HEAD's root tree, is readable.
func checkAncestry(repo *git.Repository, head plumbing.Hash, hs *headState) error {
	base := make(map[string]plumbing.Hash, len(hs.root))
	for _, e := range hs.root {
		base[e.Name] = e.Hash
	}
	c := head
	for i := 0; i < maxRollForward; i++ {
		commit, err := repo.CommitObject(c)
		if err != nil {
			return fmt.Errorf("commit %s: %w", c, err)
		}
		tree, err := repo.TreeObject(commit.TreeHash)
		if err != nil {
			return fmt.Errorf("tree %s: %w", commit.TreeHash, err)
		}
		for _, e := range tree.Entries {
			if base[e.Name] == e.Hash {
				continue
			}
			if err := flatten(repo, "", gitenc.TreeEntry{Name: e.Name, Mode: e.Mode, Hash: e.Hash}, map[string]gitenc.TreeEntry{}); err != nil {
				return err
			}
		}
		if len(commit.ParentHashes) == 0 {
			if hs.head.IsZero() {
				return nil
			}
			return fmt.Errorf("root commit %s reached without meeting %s", c, hs.head)
		}
		c = commit.ParentHashes[0]
		if c == hs.head {
			return nil
		}
	}
	return fmt.Errorf("%s not within %d commits of %s", hs.head, maxRollForward, head)
}

func unionKeys(a, b map[string]plumbing.Hash) map[string]bool {
	out := make(map[string]bool, len(a)+len(b))
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}
