package gitdir

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mayu/pkg/durable"
	"mayu/pkg/store/gitdir/internal/gitenc"
	"os"
	"path/filepath"
	"strings"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// ErrDamagedRepo is returned by Open when the cluster directory has a
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
// .git/index and where to write. Its owner serialises access.
type gitRepo struct {
	workDir, gitDir string
	refName         string // the ref HEAD points to, or "HEAD" when detached
	head            plumbing.Hash
	root            *gitenc.RootTree
	// extras holds the entries of a host directory other than conf.json,
	// for the rare directory that has any, so commits keep them.
	extras map[string][]gitenc.TreeEntry
	index  *gitenc.Index
	ident  string // "mayu commiter <email>"
	email  string // the committer's email, as in ident
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
	root    []gitenc.TreeEntry
	// confBlob maps a host serial to its conf.json blob in HEAD.
	confBlob map[string]plumbing.Hash
	extras   map[string][]gitenc.TreeEntry
	// files lists every blob path of HEAD that is not a host's conf.json
	// (cluster.json included), for .git/index.
	files map[string]gitenc.TreeEntry
	email string
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
			return durable.SyncDir(p)
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
	return durable.SyncDir(workDir)
}

// excludePatterns keep the discovery registry, the machines' bindings
// (credential hashes: never committed), the admin API's token file (a
// secret: `git add -A` must not commit it) and the store's temp files out
// of `git status`.
var excludePatterns = []string{"/.discovery/", "/.machine-auth/", "/.admin-tokens*", tmpPrefix + "*"}

// excludeText is the exclude file of a new repository.
var excludeText = "# git ls-files --others --exclude-from=.git/info/exclude\n" +
	strings.Join(excludePatterns, "\n") + "\n"

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
	for _, pat := range excludePatterns {
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
	return durable.WriteFile(p, []byte(content), 0o644, tmpPrefix)
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
	hs := &headState{confBlob: map[string]plumbing.Hash{}, extras: map[string][]gitenc.TreeEntry{}, files: map[string]gitenc.TreeEntry{}}
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
	hs.email = defaultEmail
	if cfg, err := repo.Config(); err != nil {
		return nil, damaged("config: %v", err)
	} else if email := sanitizeIdent(cfg.User.Email); email != "" {
		hs.email = email
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
		te := gitenc.TreeEntry{Name: e.Name, Mode: e.Mode, Hash: e.Hash}
		hs.root = append(hs.root, te)
		switch {
		case te.IsDir() && isHost(e.Name):
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
				hs.extras[e.Name] = append(hs.extras[e.Name], gitenc.TreeEntry{Name: se.Name, Mode: se.Mode, Hash: se.Hash})
				if err := flatten(repo, e.Name+"/", gitenc.TreeEntry{Name: se.Name, Mode: se.Mode, Hash: se.Hash}, hs.files); err != nil {
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

// flatten lists the blobs under a tree entry, for .git/index.
func flatten(repo *git.Repository, prefix string, e gitenc.TreeEntry, out map[string]gitenc.TreeEntry) error {
	if !e.IsDir() {
		if e.Mode != filemode.Submodule {
			if err := repo.Storer.HasEncodedObject(e.Hash); err != nil {
				return fmt.Errorf("blob %s of %s%s: %w", e.Hash, prefix, e.Name, err)
			}
		}
		out[prefix+e.Name] = gitenc.TreeEntry{Name: prefix + e.Name, Mode: e.Mode, Hash: e.Hash}
		return nil
	}
	t, err := repo.TreeObject(e.Hash)
	if err != nil {
		return fmt.Errorf("tree %s of %s%s: %w", e.Hash, prefix, e.Name, err)
	}
	return walkTree(repo, prefix+e.Name+"/", t, out)
}

func walkTree(repo *git.Repository, prefix string, t *object.Tree, out map[string]gitenc.TreeEntry) error {
	for _, c := range t.Entries {
		if err := flatten(repo, prefix, gitenc.TreeEntry{Name: c.Name, Mode: c.Mode, Hash: c.Hash}, out); err != nil {
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
		root:    gitenc.NewRootTree(hs.root),
		extras:  hs.extras,
		index:   gitenc.NewIndex(),
		ident:   commitName + " <" + hs.email + ">",
		email:   hs.email,
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
		if n, err := durable.RemoveTemps(packDir, prefix); err == nil && n > 0 {
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

// appendReflog appends lines to the branch's reflog and HEAD's, when the
// repository keeps reflogs. A failure is logged: the reflog is a
// convenience, the commits are the audit trail.
func (g *gitRepo) appendReflog(text string) {
	if !g.reflog {
		return
	}
	logs := []string{filepath.Join(g.gitDir, "logs", filepath.FromSlash(g.refName))}
	if g.refName != "HEAD" {
		logs = append(logs, filepath.Join(g.gitDir, "logs", "HEAD"))
	}
	for _, p := range logs {
		if err := appendFile(p, text); err != nil {
			g.log.Warn("cannot append to reflog", "path", p, "err", err)
		}
	}
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
func blobID(data []byte) plumbing.Hash { return gitenc.BlobID(data) }
