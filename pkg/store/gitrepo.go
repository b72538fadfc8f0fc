package store

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// ErrDamagedRepo is returned by OpenDir when the cluster directory has a
// .git that cannot be read. The store never re-initialises such a
// repository: the audit trail is the operator's to repair.
var ErrDamagedRepo = errors.New("store: damaged git repository")

// Identity of the commits, as Mayu 0.11 configured it.
const (
	commitName   = "mayu commiter"
	defaultEmail = "mayu@localhost"
)

// lockWait bounds how long a commit waits for a lock held by a git command
// an operator runs in the cluster directory.
const lockWait = 2 * time.Second

// staleLock is the age past which a lock file at open is taken to be left
// by a killed process. Opening waits for a younger lock to go or to age.
var staleLock = 3 * time.Second

// errHeadMoved says the branch changed under us (someone committed with the
// git CLI): the store reloads and retries.
var errHeadMoved = errors.New("store: git HEAD moved outside the store")

// gitRepo is the store's view of the repository: HEAD's root tree, the
// index and where to write. Its owner serialises access.
type gitRepo struct {
	workDir, gitDir string
	refName         string // the ref HEAD points to, or "HEAD" when detached
	head            plumbing.Hash
	root            *rootTree
	// extras holds the entries of a host directory other than conf.json,
	// for the rare directory that has any, so commits keep them.
	extras map[string][]treeEntry
	index  *gitIndex
	ident  string // "mayu commiter <email>"
	reflog bool
	// packs lists the packs this process wrote and has not merged yet.
	packs     []packFile
	packDirOK bool // objects/pack exists
	log       *slog.Logger
	now       func() time.Time
}

// headState is what HEAD holds, read at open.
type headState struct {
	refName string
	head    plumbing.Hash // zero when the branch has no commit yet
	root    []treeEntry
	// confBlob maps a host serial to its conf.json blob in HEAD.
	confBlob map[string]plumbing.Hash
	extras   map[string][]treeEntry
	// files lists every blob path of HEAD that is not a host's conf.json
	// (cluster.json included), for the index.
	files map[string]treeEntry
	ident string
	// cluster is cluster.json as HEAD holds it (nil if it has none).
	cluster []byte
}

// initGitDir creates an empty repository in workDir/.git atomically: the
// skeleton is built in a temporary directory and renamed into place, so a
// crash never leaves a half-made .git that the next start would have to
// call damaged.
func initGitDir(workDir string) error {
	tmp, err := os.MkdirTemp(workDir, tmpPrefix+"git-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp makes it 0700
		return err
	}
	for _, d := range []string{"objects/info", "objects/pack", "refs/heads", "refs/tags", "info", "logs/refs/heads"} {
		if err := os.MkdirAll(filepath.Join(tmp, d), 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{
		"HEAD": "ref: refs/heads/master\n",
		"config": "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n" +
			"[user]\n\tname = " + commitName + "\n\temail = " + defaultEmail + "\n",
		"description":  "Mayu cluster directory: every change to a machine record is a commit.\n",
		"info/exclude": excludeText,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(tmp, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	if err := filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return syncDir(p)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	}); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(workDir, ".git")); err != nil {
		return err
	}
	return syncDir(workDir)
}

// excludeText keeps the discovery registry and the store's temp files out
// of `git status`.
const excludeText = "# git ls-files --others --exclude-from=.git/info/exclude\n" +
	"/.discovery/\n" + tmpPrefix + "*\n"

// ensureExclude adds the store's patterns to .git/info/exclude of an
// existing repository (Mayu 0.11 did not have them).
func ensureExclude(gitDir string) error {
	p := filepath.Join(gitDir, "info", "exclude")
	old, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(old), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	var add []string
	for _, pat := range []string{"/.discovery/", tmpPrefix + "*"} {
		if !lines[pat] {
			add = append(add, pat)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	content := string(old)
	if content != "" && !strings.HasSuffix(content, "\n") {
		content += "\n"
	}
	content += strings.Join(add, "\n") + "\n"
	return writeFileAtomic(p, []byte(content), 0o644)
}

// readHead reads HEAD and the trees below it with go-git (which also reads
// packs written by `git gc`). Every failure is ErrDamagedRepo.
func readHead(workDir string, isHost func(string) bool) (*headState, error) {
	gitDir := filepath.Join(workDir, ".git")
	damaged := func(format string, a ...any) error {
		return fmt.Errorf("%w in %s: %s", ErrDamagedRepo, workDir, fmt.Sprintf(format, a...))
	}
	fi, err := os.Stat(gitDir)
	if err != nil {
		return nil, damaged("%v", err)
	}
	if !fi.IsDir() {
		return nil, damaged(".git is not a directory")
	}
	raw, err := os.ReadFile(filepath.Join(gitDir, "HEAD"))
	if err != nil {
		return nil, damaged("HEAD: %v", err)
	}
	hs := &headState{confBlob: map[string]plumbing.Hash{}, extras: map[string][]treeEntry{}, files: map[string]treeEntry{}}
	line := strings.TrimSpace(string(raw))
	switch {
	case strings.HasPrefix(line, "ref: refs/"):
		hs.refName = strings.TrimPrefix(line, "ref: ")
	case len(line) == 40 && plumbing.IsHash(line):
		hs.refName = "HEAD"
	default:
		return nil, damaged("HEAD holds %q", truncateString(line, 60))
	}
	repo, err := git.PlainOpen(workDir)
	if err != nil {
		return nil, damaged("%v", err)
	}
	hs.ident = commitName + " <" + defaultEmail + ">"
	if cfg, err := repo.Config(); err != nil {
		return nil, damaged("config: %v", err)
	} else if email := sanitizeIdent(cfg.User.Email); email != "" {
		hs.ident = commitName + " <" + email + ">"
	}
	ref, err := repo.Storer.Reference(plumbing.ReferenceName(hs.refName))
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return hs, nil // no commit yet: the store makes the initial one
	}
	if err != nil {
		return nil, damaged("%s: %v", hs.refName, err)
	}
	if ref.Type() != plumbing.HashReference {
		return nil, damaged("%s is not a commit reference", hs.refName)
	}
	hs.head = ref.Hash()
	if err := readCommitTree(repo, hs, isHost); err != nil {
		return nil, damaged("%v", err)
	}
	return hs, nil
}

// readCommitTree fills hs with the tree of commit hs.head, checking that
// every blob it names is present.
func readCommitTree(repo *git.Repository, hs *headState, isHost func(string) bool) error {
	commit, err := repo.CommitObject(hs.head)
	if err != nil {
		return fmt.Errorf("commit %s: %w", hs.head, err)
	}
	tree, err := repo.TreeObject(commit.TreeHash)
	if err != nil {
		return fmt.Errorf("tree %s: %w", commit.TreeHash, err)
	}
	has := func(h plumbing.Hash) error {
		return repo.Storer.HasEncodedObject(h)
	}
	for _, e := range tree.Entries {
		te := treeEntry{name: e.Name, mode: e.Mode, hash: e.Hash}
		hs.root = append(hs.root, te)
		switch {
		case te.isDir() && isHost(e.Name):
			sub, err := repo.TreeObject(e.Hash)
			if err != nil {
				return fmt.Errorf("tree %s of %s: %w", e.Hash, e.Name, err)
			}
			for _, se := range sub.Entries {
				if se.Name == confName && se.Mode.IsFile() {
					if err := has(se.Hash); err != nil {
						return fmt.Errorf("blob %s of %s/%s: %w", se.Hash, e.Name, confName, err)
					}
					hs.confBlob[e.Name] = se.Hash
					continue
				}
				hs.extras[e.Name] = append(hs.extras[e.Name], treeEntry{name: se.Name, mode: se.Mode, hash: se.Hash})
				if err := flatten(repo, e.Name+"/", treeEntry{name: se.Name, mode: se.Mode, hash: se.Hash}, hs.files); err != nil {
					return err
				}
			}
		default:
			if err := flatten(repo, "", te, hs.files); err != nil {
				return err
			}
		}
		if e.Name == clusterName && e.Mode.IsFile() {
			blob, err := repo.BlobObject(e.Hash)
			if err != nil {
				return fmt.Errorf("blob %s of %s: %w", e.Hash, clusterName, err)
			}
			r, err := blob.Reader()
			if err != nil {
				return fmt.Errorf("blob %s of %s: %w", e.Hash, clusterName, err)
			}
			hs.cluster, err = io.ReadAll(io.LimitReader(r, 1<<20))
			r.Close()
			if err != nil {
				return fmt.Errorf("blob %s of %s: %w", e.Hash, clusterName, err)
			}
		}
	}
	return nil
}

// flatten lists the blobs under a tree entry, for the index.
func flatten(repo *git.Repository, prefix string, e treeEntry, out map[string]treeEntry) error {
	if !e.isDir() {
		if e.mode != filemode.Submodule {
			if err := repo.Storer.HasEncodedObject(e.hash); err != nil {
				return fmt.Errorf("blob %s of %s%s: %w", e.hash, prefix, e.name, err)
			}
		}
		out[prefix+e.name] = treeEntry{name: prefix + e.name, mode: e.mode, hash: e.hash}
		return nil
	}
	t, err := repo.TreeObject(e.hash)
	if err != nil {
		return fmt.Errorf("tree %s of %s%s: %w", e.hash, prefix, e.name, err)
	}
	return walkTree(repo, prefix+e.name+"/", t, out)
}

func walkTree(repo *git.Repository, prefix string, t *object.Tree, out map[string]treeEntry) error {
	for _, c := range t.Entries {
		if err := flatten(repo, prefix, treeEntry{name: c.Name, mode: c.Mode, hash: c.Hash}, out); err != nil {
			return err
		}
	}
	return nil
}

func newGitRepo(workDir string, hs *headState, log *slog.Logger) *gitRepo {
	g := &gitRepo{
		workDir: workDir,
		gitDir:  filepath.Join(workDir, ".git"),
		refName: hs.refName,
		head:    hs.head,
		root:    newRootTree(hs.root),
		extras:  hs.extras,
		index:   newGitIndex(),
		ident:   hs.ident,
		log:     log,
		now:     time.Now,
	}
	if fi, err := os.Stat(filepath.Join(g.gitDir, "logs")); err == nil && fi.IsDir() {
		g.reflog = true
	}
	if fi, err := os.Stat(filepath.Join(g.gitDir, "objects", "pack")); err == nil && fi.IsDir() {
		g.packDirOK = true
	}
	return g
}

// cleanStale removes what a killed process can leave in .git: lock files
// past their age and temporary objects. A ref lock worth finishing has
// been consumed by rollForwardRef before.
func (g *gitRepo) cleanStale() {
	locks := []string{filepath.Join(g.gitDir, "index"), g.refPath()}
	for _, l := range locks {
		stale, err := g.waitLock(l)
		if err != nil {
			g.log.Warn("cannot remove stale lock", "path", l+".lock", "err", err)
			continue
		}
		if !stale {
			continue
		}
		if err := os.Remove(l + ".lock"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			g.log.Warn("cannot remove stale lock", "path", l+".lock", "err", err)
			continue
		}
		g.log.Warn("removed stale lock left by a killed process", "path", l+".lock")
	}
	packDir := filepath.Join(g.gitDir, "objects", "pack")
	for _, prefix := range []string{packTmpPrefix, idxTmpPrefix} {
		if n, err := removeTemps(packDir, prefix); err == nil && n > 0 {
			g.log.Warn("removed temporary pack files left by a crash", "count", n)
		}
	}
	// An index without its pack: a crash between the two renames of a
	// batch, or between the two removals of a merge. Git ignores it.
	idxs, _ := filepath.Glob(filepath.Join(packDir, "pack-*.idx"))
	for _, idx := range idxs {
		if _, err := os.Lstat(strings.TrimSuffix(idx, ".idx") + ".pack"); errors.Is(err, fs.ErrNotExist) {
			if err := os.Remove(idx); err == nil {
				g.log.Warn("removed a pack index without its pack, left by a crash", "path", idx)
			}
		}
	}
}

func (g *gitRepo) refPath() string {
	return filepath.Join(g.gitDir, filepath.FromSlash(g.refName))
}

// waitLock waits until path.lock is gone (false) or older than staleLock
// (true). A young lock is a git command at work, or a process killed a
// moment ago: which one, only its age tells.
func (g *gitRepo) waitLock(path string) (bool, error) {
	for {
		fi, err := os.Lstat(path + ".lock")
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if time.Since(fi.ModTime()) >= staleLock {
			return true, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

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
	refPath := g.refPath()
	stale, err := g.waitLock(refPath)
	if err != nil || !stale {
		return false, err
	}
	raw, err := os.ReadFile(refPath + ".lock")
	if err != nil {
		return false, nil // gone meanwhile, or unreadable: cleanStale decides
	}
	text := string(raw)
	if len(text) != 41 || text[40] != '\n' || !plumbing.IsHash(text[:40]) {
		return false, nil // written only partly: the record was not renamed yet
	}
	newHead := plumbing.NewHash(text[:40])
	cur, err := g.readRef()
	if err != nil || cur != hs.head || newHead == cur {
		return false, nil
	}
	skip := func(why string, err error) (bool, error) {
		g.log.Warn("not finishing the interrupted branch update", "lock", refPath+".lock", "head", newHead, "reason", why, "err", err)
		return false, nil
	}
	repo, err := git.PlainOpen(g.workDir)
	if err != nil {
		return skip("cannot open repository", err)
	}
	if err := checkAncestry(repo, newHead, hs); err != nil {
		return skip("commits missing or HEAD not an ancestor", err)
	}
	ls := &headState{head: newHead, confBlob: map[string]plumbing.Hash{}, extras: map[string][]treeEntry{}, files: map[string]treeEntry{}}
	if err := readCommitTree(repo, ls, isHost); err != nil {
		return skip("new tree unreadable", err)
	}
	// A batch renames its records one by one after its objects and this
	// lock are durable: a crash among those renames leaves some records
	// new and the others old. Each changed path must hold the new or the
	// old version (anything else is an edit the operator made since); at
	// least one must be new (else the batch had not begun to show); the
	// old ones are then written from the new commit, finishing the batch.
	var missing []string // paths still at the old version
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
			return skip("working tree holds neither version of "+s+"/"+confName, nil)
		}
	}
	if !check(clusterName, clusterBlob, ls.files[clusterName].hash, hs.files[clusterName].hash) {
		return skip("working tree holds neither version of "+clusterName, nil)
	}
	if !landed {
		return skip("no record of the new commit is in the working tree yet", nil)
	}
	for _, path := range missing {
		if err := g.restoreFromCommit(repo, newHead, path); err != nil {
			return skip("cannot write "+path+" from the new commit", err)
		}
		g.log.Warn("finished writing a record interrupted by a crash", "path", path)
	}
	if err := os.Rename(refPath+".lock", refPath); err != nil {
		return false, err
	}
	if err := syncDir(filepath.Dir(refPath)); err != nil {
		return false, err
	}
	if g.reflog {
		line := fmt.Sprintf("%s %s %s %s\tmayu: finished update interrupted by a crash\n", cur, newHead, g.ident, formatWhen(g.now()))
		logs := []string{filepath.Join(g.gitDir, "logs", filepath.FromSlash(g.refName))}
		if g.refName != "HEAD" {
			logs = append(logs, filepath.Join(g.gitDir, "logs", "HEAD"))
		}
		for _, p := range logs {
			if err := appendFile(p, line); err != nil {
				g.log.Warn("cannot append to reflog", "path", p, "err", err)
			}
		}
	}
	g.log.Warn("finished branch update interrupted by a crash", "ref", g.refName, "from", cur, "to", newHead)
	return true, nil
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
	return writeFileAtomic(p, []byte(data), 0o644)
}

// checkAncestry checks that hs.head is a first-parent ancestor of head
// (zero: head's history starts a new branch) within maxRollForward
// commits, and that what every commit on the way changed, compared with
// HEAD's root tree, is readable.
func checkAncestry(repo *git.Repository, head plumbing.Hash, hs *headState) error {
	base := make(map[string]plumbing.Hash, len(hs.root))
	for _, e := range hs.root {
		base[e.name] = e.hash
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
			if err := flatten(repo, "", treeEntry{name: e.Name, mode: e.Mode, hash: e.Hash}, map[string]treeEntry{}); err != nil {
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

// gitTx collects the objects of one or more commits into one pack (see
// gitpack.go) and makes it, and the branch update, durable in one batch.
type gitTx struct {
	g       *gitRepo
	oldHead plumbing.Hash
	head    plumbing.Hash
	pw      *packWriter // created at the first object
	roots   rootDeltas
	seen    map[plumbing.Hash]bool
	pack    string                // the pack's name, once written
	undo    map[string]*treeEntry // root entries as they were before the tx
	reflog  []string
	err     error // the first failure to encode an object
}

func (g *gitRepo) begin() *gitTx {
	return &gitTx{g: g, oldHead: g.head, head: g.head, seen: map[plumbing.Hash]bool{}, undo: map[string]*treeEntry{}}
}

// add puts an object into the tx's pack (once) and returns its id.
func (tx *gitTx) add(kind plumbing.ObjectType, payload []byte) plumbing.Hash {
	h := hashObject(kind, payload)
	if !tx.fresh(h) {
		return h
	}
	if err := tx.pw.full(h, kind, payload); err != nil && tx.err == nil {
		tx.err = err
	}
	return h
}

// addRoot adds a root tree, as a delta against the tx's previous one. The
// payload is the in-memory root tree's buffer: it is copied.
func (tx *gitTx) addRoot(payload []byte) plumbing.Hash {
	h := hashObject(plumbing.TreeObject, payload)
	if !tx.fresh(h) {
		return h
	}
	if err := tx.roots.write(tx.pw, h, payload, true); err != nil && tx.err == nil {
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
		tx.pw = newMemPackWriter()
	}
	return true
}

func (tx *gitTx) saveRoot(name string) {
	if _, ok := tx.undo[name]; ok {
		return
	}
	if e, ok := tx.g.root.get(name); ok {
		tx.undo[name] = &e
	} else {
		tx.undo[name] = nil
	}
}

// stageHost puts a conf.json blob into the host's directory tree.
func (tx *gitTx) stageHost(serial string, conf []byte) plumbing.Hash {
	blob := tx.add(plumbing.BlobObject, conf)
	es := append([]treeEntry{{name: confName, mode: filemode.Regular, hash: blob}}, tx.g.extras[serial]...)
	sortTree(es)
	sub := tx.add(plumbing.TreeObject, encodeTree(es))
	tx.saveRoot(serial)
	tx.g.root.set(treeEntry{name: serial, mode: filemode.Dir, hash: sub})
	return blob
}

// stageRootFile puts a blob at the top of the tree (cluster.json).
func (tx *gitTx) stageRootFile(name string, data []byte) plumbing.Hash {
	blob := tx.add(plumbing.BlobObject, data)
	tx.saveRoot(name)
	tx.g.root.set(treeEntry{name: name, mode: filemode.Regular, hash: blob})
	return blob
}

// stageRemove drops a top-level entry (a host directory deleted by hand).
func (tx *gitTx) stageRemove(name string) {
	tx.saveRoot(name)
	tx.g.root.remove(name)
}

// commit records the staged tree as a commit on top of the tx's head.
func (tx *gitTx) commit(msg string) {
	tree := tx.addRoot(tx.g.root.bytes())
	when := formatWhen(tx.g.now())
	c := tx.add(plumbing.CommitObject, commitPayload(tree, tx.head, tx.g.ident, when, msg))
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
func (tx *gitTx) write(b *writeBatch) error {
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
			b.syncDir(filepath.Dir(packDir))
		}
		name, pack, idx, err := tx.pw.finishMem()
		if err != nil {
			return err
		}
		// The index before its pack (the batch renames in this order): git
		// and go-git ignore an index without its pack, while go-git cannot
		// read a repository holding a pack without its index. Both are
		// durable before the ref names their commits.
		if err := b.add(filepath.Join(packDir, name+".idx"), idxTmpPrefix, idx, 0o444); err != nil {
			return err
		}
		if err := b.add(filepath.Join(packDir, name+".pack"), packTmpPrefix, pack, 0o444); err != nil {
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
	lock, err := acquireLock(refPath, lockWait)
	if err != nil {
		return err
	}
	cur, err := tx.g.readRef()
	if err != nil {
		lock.release()
		return err
	}
	if cur != tx.oldHead {
		lock.release()
		return fmt.Errorf("%w: %s is %s, expected %s", errHeadMoved, tx.g.refName, cur, tx.oldHead)
	}
	if err := lock.write([]byte(tx.head.String() + "\n")); err != nil {
		lock.release()
		return err
	}
	// The lock file is the batch's commit point: fsynced with the objects,
	// renamed over the ref only once they are durable.
	b.setCommitPoint(lock.f, refPath+".lock", refPath)
	lock.f = nil
	return nil
}

// done makes the tx's head the repository's head, after the batch
// committed, and appends the reflog.
func (tx *gitTx) done() {
	tx.g.head = tx.head
	if tx.pack != "" {
		tx.g.packs = append(tx.g.packs, packFile{name: tx.pack})
	}
	if tx.g.reflog && len(tx.reflog) > 0 {
		text := strings.Join(tx.reflog, "")
		logs := []string{filepath.Join(tx.g.gitDir, "logs", filepath.FromSlash(tx.g.refName))}
		if tx.g.refName != "HEAD" {
			logs = append(logs, filepath.Join(tx.g.gitDir, "logs", "HEAD"))
		}
		for _, p := range logs {
			if err := appendFile(p, text); err != nil {
				tx.g.log.Warn("cannot append to reflog", "path", p, "err", err)
			}
		}
	}
}

// rollback restores the in-memory tree after a failed batch.
func (tx *gitTx) rollback() {
	for name, e := range tx.undo {
		if e == nil {
			tx.g.root.remove(name)
		} else {
			tx.g.root.set(*e)
		}
	}
	tx.undo = map[string]*treeEntry{}
}

// readRef reads the branch's current value: the loose ref, else
// packed-refs (after `git pack-refs`), else zero (no commit yet).
func (g *gitRepo) readRef() (plumbing.Hash, error) {
	raw, err := os.ReadFile(filepath.Join(g.gitDir, filepath.FromSlash(g.refName)))
	if err == nil {
		s := strings.TrimSpace(string(raw))
		if g.refName == "HEAD" || plumbing.IsHash(s) {
			if !plumbing.IsHash(s) {
				return plumbing.ZeroHash, fmt.Errorf("%w: HEAD holds %q", ErrDamagedRepo, truncateString(s, 60))
			}
			return plumbing.NewHash(s), nil
		}
		return plumbing.ZeroHash, fmt.Errorf("%w: %s holds %q", ErrDamagedRepo, g.refName, truncateString(s, 60))
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return plumbing.ZeroHash, err
	}
	f, err := os.Open(filepath.Join(g.gitDir, "packed-refs"))
	if errors.Is(err, fs.ErrNotExist) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		hash, name, ok := strings.Cut(sc.Text(), " ")
		if ok && name == g.refName && plumbing.IsHash(hash) {
			return plumbing.NewHash(hash), nil
		}
	}
	return plumbing.ZeroHash, sc.Err()
}

// writeIndex writes .git/index from memory, as a split index (see
// gitsplit.go). It is a cache of HEAD plus stat data, so it is not
// fsynced: OpenDir rebuilds it anyway.
func (g *gitRepo) writeIndex() error {
	return g.writeSplit()
}

func formatWhen(t time.Time) string {
	_, off := t.Zone()
	sign := '+'
	if off < 0 {
		sign = '-'
		off = -off
	}
	return fmt.Sprintf("%d %c%02d%02d", t.Unix(), sign, off/3600, (off%3600)/60)
}

// sanitizeIdent drops what would break a commit header.
func sanitizeIdent(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '<', '>', '\n', '\r', 0:
			return -1
		}
		return r
	}, strings.TrimSpace(s))
}

// sanitizeMessage drops NUL bytes, which git cannot store in a commit.
func sanitizeMessage(s string) string {
	return strings.ReplaceAll(s, "\x00", "")
}

func appendFile(p, text string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(text)
	cerr := f.Close()
	if werr != nil {
		return werr
	}
	return cerr
}

func truncateString(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// blobID is the git object id of file content, used to tell whether a file
// on disk is what the store last wrote or committed.
func blobID(data []byte) plumbing.Hash { return hashObject(plumbing.BlobObject, data) }
