package gitdir_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store"
)

func step(msg string, fn func(h *host.Host)) store.Step {
	return store.Step{Message: msg, Apply: func(h *host.Host) error { fn(h); return nil }}
}

// fixture copies testdata/mayu-0.11 and gives it a history made by the
// stock git CLI, as Mayu 0.11 did (git add + git commit per change).
func fixture(t *testing.T, packed bool) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join("testdata", "mayu-0.11")
	require.NoError(t, filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if e.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), b, 0o644)
	}))
	git(t, dir, "init", "-q", "-b", "master")
	git(t, dir, "config", "--local", "user.name", "mayu commiter")
	git(t, dir, "config", "--local", "user.email", "support+noise@giantswarm.io")
	git(t, dir, "add", "cluster.json")
	git(t, dir, "commit", "-q", "-m", "initial commit")
	for _, s := range []string{"0800278e158a-0", "0800278e158b-1", "0800278e158c-2"} {
		git(t, dir, "add", s+"/conf.json")
		git(t, dir, "commit", "-q", "-m", s+": host created")
	}
	// A file of the operator's, tracked beside the records.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("spare disks in cabinet 4\n"), 0o644))
	git(t, dir, "add", "notes.txt")
	git(t, dir, "commit", "-q", "-m", "notes")
	if packed {
		git(t, dir, "gc", "-q", "--prune=now")
		_, err := os.Stat(filepath.Join(dir, ".git", "refs", "heads", "master"))
		require.ErrorIs(t, err, fs.ErrNotExist, "gc packs the refs too")
	}
	return dir
}

// snapshotFiles returns every file under dir outside .git, and .git/HEAD.
func snapshotFiles(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if e.IsDir() && rel == ".git" {
			return fs.SkipDir
		}
		if !e.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[filepath.ToSlash(rel)] = string(b)
		}
		return nil
	}))
	if b, err := os.ReadFile(filepath.Join(dir, ".git", "HEAD")); err == nil {
		out[".git/HEAD"] = string(b)
	}
	return out
}

// checkFilesMatch asserts that the index serves exactly what is on disk.
func checkFilesMatch(t testing.TB, dir string, s store.Store) {
	t.Helper()
	onDisk := map[string]string{}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "conf.json"))
		if err != nil {
			continue
		}
		h, err := host.Unmarshal(b)
		require.NoError(t, err, "conf.json of %s", e.Name())
		m, _ := h.Marshal()
		onDisk[e.Name()] = string(m)
	}
	served := map[string]string{}
	for _, h := range s.List() {
		m, _ := h.Marshal()
		served[h.Serial] = string(m)
	}
	assert.Equal(t, onDisk, served, "index and disk differ")
}

func marshalAll(t testing.TB, hs []host.Host) []string {
	var out []string
	for _, h := range hs {
		b, err := h.Marshal()
		require.NoError(t, err)
		out = append(out, string(b))
	}
	sort.Strings(out)
	return out
}

func readFile(t testing.TB, dir, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
	require.NoError(t, err)
	return b
}

func objectPath(dir, id string) string {
	return filepath.Join(dir, ".git", "objects", id[:2], id[2:])
}

func corruptObject(t *testing.T, dir, id string) {
	explode(t, dir)
	p := objectPath(dir, id)
	require.NoError(t, os.Chmod(p, 0o644))
	require.NoError(t, os.WriteFile(p, []byte("this is not zlib"), 0o644))
}

func removeObject(t *testing.T, dir, id string) {
	explode(t, dir)
	require.NoError(t, os.Remove(objectPath(dir, id)))
}

// explode turns the repository's packs into loose objects with stock git,
// so that a test can damage a single object.
func explode(t *testing.T, dir string) {
	t.Helper()
	needGit(t)
	packs, err := filepath.Glob(filepath.Join(dir, ".git", "objects", "pack", "pack-*.pack"))
	require.NoError(t, err)
	for _, p := range packs {
		data, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NoError(t, os.Remove(strings.TrimSuffix(p, ".pack")+".idx"))
		require.NoError(t, os.Remove(p))
		cmd := exec.Command("git", "unpack-objects", "-q")
		cmd.Dir = dir
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "git unpack-objects: %s", out)
	}
}

func drainChan(c chan struct{}) {
	time.Sleep(50 * time.Millisecond)
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

// needGit returns the stock git binary, skipping loudly when it is missing
// (failing under MAYU_E2E=required, as CI runs).
func needGit(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("git")
	if err != nil {
		if os.Getenv("MAYU_E2E") == "required" {
			t.Fatalf("git CLI not installed (Debian package git) and MAYU_E2E=required")
		}
		t.Skipf("SKIP: git CLI not installed (Debian package git): cannot check the history with stock git")
	}
	return p
}

// git runs the stock git CLI in dir and returns its stdout.
func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(needGit(t), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=operator", "GIT_AUTHOR_EMAIL=op@example.com", "GIT_COMMITTER_NAME=operator", "GIT_COMMITTER_EMAIL=op@example.com")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "git %s: %s", strings.Join(args, " "), stderr.String())
	return stdout.String()
}

// checkRepo asserts what an operator expects of the cluster directory:
// fsck clean, status clean.
func checkRepo(t testing.TB, dir string) {
	t.Helper()
	// A pack merge of a store still open may run meanwhile: the packs it
	// merges away stay for readers like this one (retired.go), so the
	// first report counts.
	cmd := exec.Command(needGit(t), "fsck", "--full", "--strict", "--no-dangling")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "git fsck: %s", out)
	require.Empty(t, strings.TrimSpace(string(out)), "git fsck output")
	require.Empty(t, git(t, dir, "status", "--porcelain", "--untracked-files=all"), "git status must be clean")
}

func gitLog(t testing.TB, dir string) []string {
	t.Helper()
	out := strings.TrimSpace(git(t, dir, "log", "--format=%s"))
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}
