package gitdir

import (
	"fmt"
	"io"
	"mayu/pkg/durable"
	"mayu/pkg/store/gitdir/internal/gitenc"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// gitTx collects the objects of one or more commits into one pack (see
// gitpack.go) and makes it, and the branch update, durable in one batch.
type gitTx struct {
	g       *gitRepo
	oldHead plumbing.Hash
	head    plumbing.Hash
	pw      *gitenc.PackWriter // created at the first object
	roots   gitenc.RootDeltas
	seen    map[plumbing.Hash]bool
	pack    string                       // the pack's name, once written
	undo    map[string]*gitenc.TreeEntry // root entries as they were before the tx
	reflog  []string
	err     error // the first failure to encode an object
}

func (g *gitRepo) begin() *gitTx {
	return &gitTx{g: g, oldHead: g.head, head: g.head, seen: map[plumbing.Hash]bool{}, undo: map[string]*gitenc.TreeEntry{}}
}

// add puts an object into the tx's pack (once) and returns its id.
func (tx *gitTx) add(kind plumbing.ObjectType, payload []byte) plumbing.Hash {
	h := gitenc.HashObject(kind, payload)
	if !tx.fresh(h) {
		return h
	}
	if err := tx.pw.Full(h, kind, payload); err != nil && tx.err == nil {
		tx.err = err
	}
	return h
}

// addRoot adds a root tree, as a delta against the tx's previous one. The
// payload is the in-memory root tree's buffer: it is copied.
func (tx *gitTx) addRoot(payload []byte) plumbing.Hash {
	h := gitenc.HashObject(plumbing.TreeObject, payload)
	if !tx.fresh(h) {
		return h
	}
	if err := tx.roots.Write(tx.pw, h, payload, true); err != nil && tx.err == nil {
		tx.err = err
	}
	return h
}

func (tx *gitTx) fresh(h plumbing.Hash) bool {
	if tx.seen[h] {
		return false
	}
	tx.seen[h] = true
	if tx.pw == nil {
		tx.pw = gitenc.NewMemPackWriter()
	}
	return true
}

func (tx *gitTx) saveRoot(name string) {
	if _, ok := tx.undo[name]; ok {
		return
	}
	if e, ok := tx.g.root.Get(name); ok {
		tx.undo[name] = &e
	} else {
		tx.undo[name] = nil
	}
}

// stageHost puts a conf.json blob into the host's directory tree.
func (tx *gitTx) stageHost(serial string, conf []byte) plumbing.Hash {
	blob := tx.add(plumbing.BlobObject, conf)
	es := append([]gitenc.TreeEntry{{Name: confName, Mode: filemode.Regular, Hash: blob}}, tx.g.extras[serial]...)
	gitenc.SortTree(es)
	sub := tx.add(plumbing.TreeObject, gitenc.EncodeTree(es))
	tx.saveRoot(serial)
	tx.g.root.Set(gitenc.TreeEntry{Name: serial, Mode: filemode.Dir, Hash: sub})
	return blob
}

// stageRootFile puts a blob at the top of the tree (cluster.json).
func (tx *gitTx) stageRootFile(name string, data []byte) plumbing.Hash {
	blob := tx.add(plumbing.BlobObject, data)
	tx.saveRoot(name)
	tx.g.root.Set(gitenc.TreeEntry{Name: name, Mode: filemode.Regular, Hash: blob})
	return blob
}

// stageRemove drops a top-level entry (a host directory deleted by hand).
func (tx *gitTx) stageRemove(name string) {
	tx.saveRoot(name)
	tx.g.root.Remove(name)
}

// commit records the staged tree as a commit on top of the tx's head.
func (tx *gitTx) commit(msg string) {
	tree := tx.addRoot(tx.g.root.Bytes())
	now := tx.g.now()
	payload, err := encodeCommit(tree, tx.head, tx.g.email, now, msg)
	if err != nil && tx.err == nil {
		tx.err = err
	}
	c := tx.add(plumbing.CommitObject, payload)
	when := gitenc.FormatWhen(now)
	kind := "commit"
	if tx.head.IsZero() {
		kind = "commit (initial)"
	}
	first, _, _ := strings.Cut(msg, "\n")
	tx.reflog = append(tx.reflog, fmt.Sprintf("%s %s %s %s\t%s: %s\n", tx.head, c, tx.g.ident, when, kind, first))
	tx.head = c
}

// write adds the pack and the branch update to the batch. The ref lock
// is taken here and verified, so a commit made by the git CLI since we read
// HEAD is detected (errHeadMoved) instead of being overwritten.
func (tx *gitTx) write(b *durable.Batch) error {
	if tx.err != nil {
		return tx.err
	}
	if tx.pw != nil {
		packDir := filepath.Join(tx.g.gitDir, "objects", "pack")
		if !tx.g.packDirOK {
			if err := os.MkdirAll(packDir, 0o755); err != nil {
				return err
			}
			tx.g.packDirOK = true
			b.SyncDir(filepath.Dir(packDir))
		}
		name, pack, idx, err := tx.pw.FinishMem()
		if err != nil {
			return err
		}
		// The index before its pack (the batch renames in this order): git
		// and go-git ignore an index without its pack, while go-git cannot
		// read a repository holding a pack without its index. Both are
		// durable before the ref names their commits.
		if err := b.Add(filepath.Join(packDir, name+".idx"), idxTmpPrefix, idx, 0o444); err != nil {
			return err
		}
		if err := b.Add(filepath.Join(packDir, name+".pack"), packTmpPrefix, pack, 0o444); err != nil {
			return err
		}
		tx.pack = name
	}
	if tx.head == tx.oldHead {
		return nil
	}
	refPath := filepath.Join(tx.g.gitDir, filepath.FromSlash(tx.g.refName))
	if err := os.MkdirAll(filepath.Dir(refPath), 0o755); err != nil {
		return err
	}
	lock, err := durable.AcquireLock(refPath, lockWait)
	if err != nil {
		return err
	}
	cur, err := tx.g.readRef()
	if err != nil {
		lock.Release()
		return err
	}
	if cur != tx.oldHead {
		lock.Release()
		return fmt.Errorf("%w: %s is %s, expected %s", errHeadMoved, tx.g.refName, cur, tx.oldHead)
	}
	if err := lock.Write([]byte(tx.head.String() + "\n")); err != nil {
		lock.Release()
		return err
	}
	// The lock file is the batch's commit point: fsynced with the objects,
	// renamed over the ref only once they are durable.
	b.SetCommitPoint(lock)
	return nil
}

// done makes the tx's head the repository's head, after the batch
// committed, and appends the reflog.
func (tx *gitTx) done() {
	tx.g.head = tx.head
	if tx.pack != "" {
		tx.g.packs = append(tx.g.packs, packFile{name: tx.pack})
	}
	if len(tx.reflog) > 0 {
		tx.g.appendReflog(strings.Join(tx.reflog, ""))
	}
}

// rollback restores the in-memory tree after a failed batch.
func (tx *gitTx) rollback() {
	for name, e := range tx.undo {
		if e == nil {
			tx.g.root.Remove(name)
		} else {
			tx.g.root.Set(*e)
		}
	}
	tx.undo = map[string]*gitenc.TreeEntry{}
}

// encodeCommit encodes a commit object with go-git's encoder: tree, parent
// (none when zero), the store's identity with email at when, and msg,
// given a final newline as `git commit -m` does.
func encodeCommit(tree, parent plumbing.Hash, email string, when time.Time, msg string) ([]byte, error) {
	if !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	sig := object.Signature{Name: commitName, Email: email, When: when}
	c := &object.Commit{TreeHash: tree, Author: sig, Committer: sig, Message: msg}
	if !parent.IsZero() {
		c.ParentHashes = []plumbing.Hash{parent}
	}
	var o plumbing.MemoryObject
	if err := c.Encode(&o); err != nil {
		return nil, err
	}
	r, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}
