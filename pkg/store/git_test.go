package store_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"mayu/pkg/store"
	"mayu/pkg/store/storetest"
)

func TestDirConformance(t *testing.T) {
	for _, noGit := range []bool{false, true} {
		name := "git"
		if noGit {
			name = "nogit"
		}
		t.Run(name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) store.Store {
				dir := t.TempDir()
				d, err := store.OpenDir(dir, store.DirOptions{NoGit: noGit})
				require.NoError(t, err)
				t.Cleanup(func() {
					require.NoError(t, d.Close())
					if !noGit {
						checkRepo(t, dir)
					}
				})
				return d
			})
		})
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
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+t.TempDir(), "GIT_AUTHOR_NAME=operator", "GIT_AUTHOR_EMAIL=op@example.com", "GIT_COMMITTER_NAME=operator", "GIT_COMMITTER_EMAIL=op@example.com")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "git %s: %s", strings.Join(args, " "), stderr.String())
	return stdout.String()
}

// checkRepo asserts what an operator expects of the cluster directory:
// fsck clean, status clean.
func checkRepo(t testing.TB, dir string) {
	t.Helper()
	cmd := exec.Command(needGit(t), "fsck", "--full", "--strict", "--no-dangling")
	cmd.Dir = dir
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

var _ = filepath.Join
