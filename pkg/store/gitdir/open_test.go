package gitdir_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/pkg/store"
	"mayu/pkg/store/gitdir"
)

func TestDirInit(t *testing.T) {
	tests := []struct {
		name    string
		noGit   bool
		wantLog []string
	}{
		{"git", false, []string{"initial commit"}},
		{"nogit", true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "a", "cluster") // missing parents are created
			d, err := gitdir.Open(dir, gitdir.Options{NoGit: tc.noGit})
			require.NoError(t, err)
			defer d.Close()

			var c struct {
				GitStore bool
				Config   store.ClusterConfig
			}
			require.NoError(t, json.Unmarshal(readFile(t, dir, "cluster.json"), &c))
			assert.Equal(t, !tc.noGit, c.GitStore)
			assert.Equal(t, store.Cluster{Config: c.Config}, d.Cluster())

			_, err = os.Stat(filepath.Join(dir, ".git"))
			if tc.noGit {
				assert.ErrorIs(t, err, fs.ErrNotExist, "--no-git makes no repository")
				return
			}
			require.NoError(t, err)
			fi, err := os.Stat(filepath.Join(dir, ".git"))
			require.NoError(t, err)
			assert.Equal(t, fs.FileMode(0o755), fi.Mode().Perm(), ".git has git init's mode")
			assert.Equal(t, tc.wantLog, gitLog(t, dir))
			assert.Equal(t, "cluster.json\n", git(t, dir, "ls-tree", "--name-only", "HEAD"))
			assert.Equal(t, "mayu commiter <mayu@localhost>|mayu commiter <mayu@localhost>\n",
				git(t, dir, "log", "-1", "--format=%an <%ae>|%cn <%ce>"))
			exclude := string(readFile(t, dir, ".git/info/exclude"))
			assert.Contains(t, exclude, "/.discovery/")
			assert.Contains(t, exclude, ".mayu-tmp-*")
			// The discovery registry lives beside the records, uncommitted.
			require.NoError(t, os.MkdirAll(filepath.Join(dir, ".discovery"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, ".discovery", "registry.json"), []byte("{}"), 0o644))
			checkRepo(t, dir)
		})
	}
}

// TestDirCompat opens a cluster directory as Mayu 0.11 leaves it, with a
// history made by the stock git CLI, loose or packed by `git gc`.
func TestDirCompat(t *testing.T) {
	for _, packed := range []bool{false, true} {
		t.Run(fmt.Sprintf("packed=%v", packed), func(t *testing.T) {
			dir := fixture(t, packed)
			before := snapshotFiles(t, dir)
			headBefore := strings.TrimSpace(git(t, dir, "rev-parse", "HEAD"))
			logBefore := gitLog(t, dir)

			d, err := gitdir.Open(dir, gitdir.Options{})
			require.NoError(t, err)
			defer d.Close()

			assert.Equal(t, headBefore, strings.TrimSpace(git(t, dir, "rev-parse", "HEAD")), "opening must not commit")
			assert.Equal(t, before, snapshotFiles(t, dir), "opening must not rewrite any file")
			checkRepo(t, dir)

			list := d.List()
			require.Len(t, list, 3)
			for _, h := range list {
				b, err := h.Marshal()
				require.NoError(t, err)
				// Mayu 0.11 wrote no trailing newline; everything else is
				// byte for byte the same JSON.
				assert.Equal(t, before[h.Serial+"/conf.json"]+"\n", string(b), h.Serial)
			}
			assert.Equal(t, "416b381afbc752dfc77e48ba7a99ccc3", d.Cluster().Config.DefaultEtcdClusterToken)
			h, err := d.ByMAC("08:00:27:3C:AA:01")
			require.NoError(t, err)
			assert.Equal(t, "0800278e158a-0", h.Serial)
			assert.Equal(t, 2, d.ProfileCount("core-services"))
			b, err := d.Get("0800278e158b-1")
			require.NoError(t, err)
			v, ok := b.OverrideString("CoreOSVersion")
			assert.True(t, ok)
			assert.Equal(t, "1010.5.0", v)

			_, err = d.Update("0800278e158a-0", store.Step{Message: "updated host cabinet", Apply: func(h *host.Host) error { h.Cabinet = 5; return nil }})
			require.NoError(t, err)
			assert.Equal(t, append([]string{"0800278e158a-0: updated host cabinet"}, logBefore...), gitLog(t, dir))
			assert.Equal(t, headBefore, strings.TrimSpace(git(t, dir, "rev-parse", "HEAD~1")), "new commits are appended")
			// The repository's configured identity is kept.
			assert.Equal(t, "mayu commiter <support+noise@giantswarm.io>\n", git(t, dir, "log", "-1", "--format=%an <%ae>"))
			assert.Contains(t, git(t, dir, "reflog", "-1"), "0800278e158a-0: updated host cabinet")
			checkRepo(t, dir)
			after := snapshotFiles(t, dir)
			assert.Equal(t, before["notes.txt"], after["notes.txt"])
			assert.Equal(t, before["0800278e158b-1/conf.json"], after["0800278e158b-1/conf.json"])
		})
	}
}

func TestDirLegacyCluster(t *testing.T) {
	tests := []struct {
		name, json string
		want       store.Cluster
		gitStore   bool
	}{
		{"token", `{"GitStore": true, "Config": {"DefaultEtcdClusterToken": "41f07d10ab835b22071a32d5c1b75a6d"}}`,
			store.Cluster{Config: store.ClusterConfig{DefaultEtcdClusterToken: "41f07d10ab835b22071a32d5c1b75a6d"}}, true},
		{"discovery url", `{"GitStore": true, "Config": {"EtcdDiscoveryURL": "https://discovery.example/abc"}}`,
			store.Cluster{Config: store.ClusterConfig{EtcdDiscoveryURL: "https://discovery.example/abc"}}, true},
		{"no git store", `{"GitStore": false, "Config": {}}`, store.Cluster{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, "cluster.json"), []byte(tc.json), 0o644))
			d, err := gitdir.Open(dir, gitdir.Options{})
			require.NoError(t, err)
			defer d.Close()
			assert.Equal(t, tc.want, d.Cluster())
			assert.Equal(t, tc.json, string(readFile(t, dir, "cluster.json")), "read, not rewritten")
			assert.Equal(t, []string{"initial commit"}, gitLog(t, dir))
			checkRepo(t, dir)

			// GitStore is the backend's: written back as it was read.
			_, err = d.UpdateCluster("set token", func(c *store.Cluster) error {
				c.Config.DefaultEtcdClusterToken = "changed"
				return nil
			})
			require.NoError(t, err)
			var file struct{ GitStore bool }
			require.NoError(t, json.Unmarshal(readFile(t, dir, "cluster.json"), &file))
			assert.Equal(t, tc.gitStore, file.GitStore)
		})
	}
	t.Run("malformed", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "cluster.json"), []byte(`{"GitStore": tr`), 0o644))
		_, err := gitdir.Open(dir, gitdir.Options{})
		assert.ErrorIs(t, err, store.ErrStorage)
	})
}

func TestDirReopen(t *testing.T) {
	for _, noGit := range []bool{false, true} {
		t.Run(fmt.Sprintf("nogit=%v", noGit), func(t *testing.T) {
			dir := t.TempDir()
			d, err := gitdir.Open(dir, gitdir.Options{NoGit: noGit})
			require.NoError(t, err)
			for i := 0; i < 5; i++ {
				_, err := d.Create(fmt.Sprintf("s%d", i), step("host created", func(h *host.Host) {
					h.Enabled = true
					h.InternalAddr = net.IPv4(10, 0, 0, byte(i))
					h.LastBoot = time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)
				}))
				require.NoError(t, err)
			}
			want := marshalAll(t, d.List())
			require.NoError(t, d.Close())
			_, err = d.Update("s1", step("x", func(h *host.Host) { h.Cabinet = 1 }))
			assert.ErrorIs(t, err, store.ErrStorage, "a closed store refuses writes")

			var logBefore []string
			if !noGit {
				logBefore = gitLog(t, dir)
			}
			d2, err := gitdir.Open(dir, gitdir.Options{NoGit: noGit})
			require.NoError(t, err)
			defer d2.Close()
			assert.Equal(t, want, marshalAll(t, d2.List()))
			h, err := d2.ByIP(net.ParseIP("10.0.0.3"))
			require.NoError(t, err)
			assert.Equal(t, "s3", h.Serial)
			if !noGit {
				assert.Equal(t, logBefore, gitLog(t, dir))
				checkRepo(t, dir)
			} else {
				_, err := os.Stat(filepath.Join(dir, ".git"))
				assert.ErrorIs(t, err, fs.ErrNotExist)
			}
		})
	}
}

// TestDirNoGitThenGit: changes made with --no-git are committed when the
// directory is next opened with git.
func TestDirNoGitThenGit(t *testing.T) {
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	_, err = d.Create("s1", step("host created", func(h *host.Host) { h.Enabled = true }))
	require.NoError(t, err)
	require.NoError(t, d.Close())

	d, err = gitdir.Open(dir, gitdir.Options{NoGit: true})
	require.NoError(t, err)
	_, err = d.Update("s1", step("updated host cabinet", func(h *host.Host) { h.Cabinet = 3 }))
	require.NoError(t, err)
	_, err = d.Create("s2", step("host created", func(h *host.Host) { h.Enabled = true }))
	require.NoError(t, err)
	require.NoError(t, d.Close())
	assert.Equal(t, []string{"s1: host created", "initial commit"}, gitLog(t, dir), "--no-git commits nothing")

	logs := &proctest.Output{}
	d, err = gitdir.Open(dir, gitdir.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, []string{"s2: recovered uncommitted change", "s1: recovered uncommitted change", "s1: host created", "initial commit"}, gitLog(t, dir))
	assert.Contains(t, logs.String(), "committed uncommitted change")
	checkRepo(t, dir)
	h, err := d.Get("s1")
	require.NoError(t, err)
	assert.Equal(t, uint(3), h.Cabinet)
}

func TestDirRecoverBulk(t *testing.T) {
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{NoGit: true})
	require.NoError(t, err)
	for i := 0; i < 12; i++ {
		_, err := d.Create(fmt.Sprintf("s%02d", i), step("host created", func(h *host.Host) { h.Enabled = true }))
		require.NoError(t, err)
	}
	require.NoError(t, d.Close())
	d, err = gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, []string{"initial commit"}, gitLog(t, dir), "a directory without .git gets one initial commit holding everything")
	assert.Len(t, strings.Fields(git(t, dir, "ls-tree", "--name-only", "HEAD")), 13)
	checkRepo(t, dir)
	require.NoError(t, d.Close())

	// Many changes made while mayu was stopped become one commit.
	for i := 0; i < 12; i++ {
		p := filepath.Join(dir, fmt.Sprintf("s%02d", i), "conf.json")
		h, err := host.Unmarshal(readFile(t, dir, fmt.Sprintf("s%02d/conf.json", i)))
		require.NoError(t, err)
		h.Cabinet = 9
		b, _ := h.Marshal()
		require.NoError(t, os.WriteFile(p, b, 0o644))
	}
	d, err = gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	assert.Equal(t, []string{"recovered uncommitted changes of 12 hosts", "initial commit"}, gitLog(t, dir))
	checkRepo(t, dir)
}

func TestDirDamaged(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"HEAD garbage", func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, ".git", "HEAD"), []byte("garbage\n"), 0o644))
		}},
		{"HEAD missing", func(t *testing.T, dir string) {
			require.NoError(t, os.Remove(filepath.Join(dir, ".git", "HEAD")))
		}},
		{"branch points to a missing commit", func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, ".git", "refs", "heads", "master"), []byte(strings.Repeat("ab", 20)+"\n"), 0o644))
		}},
		{"branch ref garbage", func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, ".git", "refs", "heads", "master"), []byte("not a hash\n"), 0o644))
		}},
		{"root tree corrupt", func(t *testing.T, dir string) {
			corruptObject(t, dir, strings.TrimSpace(git(t, dir, "rev-parse", "HEAD^{tree}")))
		}},
		{"host tree missing", func(t *testing.T, dir string) {
			removeObject(t, dir, strings.TrimSpace(git(t, dir, "rev-parse", "HEAD:s1")))
		}},
		{"record blob missing", func(t *testing.T, dir string) {
			removeObject(t, dir, strings.TrimSpace(git(t, dir, "rev-parse", "HEAD:s1/conf.json")))
		}},
		{".git is a file", func(t *testing.T, dir string) {
			require.NoError(t, os.RemoveAll(filepath.Join(dir, ".git")))
			require.NoError(t, os.WriteFile(filepath.Join(dir, ".git"), []byte("gitdir: /nonexistent\n"), 0o644))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d, err := gitdir.Open(dir, gitdir.Options{})
			require.NoError(t, err)
			_, err = d.Create("s1", step("host created", func(h *host.Host) { h.Enabled = true }))
			require.NoError(t, err)
			require.NoError(t, d.Close())
			tc.damage(t, dir)
			before := snapshotFiles(t, filepath.Join(dir))

			_, err = gitdir.Open(dir, gitdir.Options{})
			require.Error(t, err)
			assert.ErrorIs(t, err, gitdir.ErrDamagedRepo)
			assert.Equal(t, before, snapshotFiles(t, dir), "a damaged repository is left as it is, never re-initialised")
		})
	}
}

// TestDirClusterJSONRestored: a cluster.json deleted by hand comes back
// from HEAD, with its etcd token, instead of being replaced by defaults.
func TestDirClusterJSONRestored(t *testing.T) {
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	_, err = d.UpdateCluster("Set default etcd cluster to 'tok'", func(c *store.Cluster) error {
		c.Config.DefaultEtcdClusterToken = "tok"
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, d.Close())
	logBefore := gitLog(t, dir)
	require.NoError(t, os.Remove(filepath.Join(dir, "cluster.json")))

	d, err = gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, "tok", d.Cluster().Config.DefaultEtcdClusterToken)
	assert.Equal(t, logBefore, gitLog(t, dir))
	checkRepo(t, dir)
}
