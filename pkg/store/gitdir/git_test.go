package gitdir_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store"
	"mayu/pkg/store/gitdir"
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
				d, err := gitdir.Open(dir, gitdir.Options{NoGit: noGit})
				require.NoError(t, err)
				t.Cleanup(func() {
					require.NoError(t, d.Close())
					checkFilesMatch(t, dir, d)
					if !noGit {
						checkRepo(t, dir)
					}
				})
				return d
			})
		})
	}
}

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

// TestDirAudit checks the history of one machine's life: one commit per
// step that changed the record, each holding the record as that step left
// it, and a single conf.json write holding the final state.
func TestDirAudit(t *testing.T) {
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()

	var snapshots []host.Host
	record := func(msg string, fn func(h *host.Host)) store.Step {
		return store.Step{Message: msg, Apply: func(h *host.Host) error {
			fn(h)
			snapshots = append(snapshots, h.Clone())
			return nil
		}}
	}
	calls := []struct {
		create bool
		steps  []store.Step
	}{
		{true, []store.Step{
			record("host created", func(h *host.Host) { h.Enabled = true; h.State = host.Configured }),
			record("updated with predefined settings", func(h *host.Host) { h.MachineID = "0000aabbccddeeff"; h.Hostname = "0000aabbccddeeff" }),
			record("updated host InternalAddr", func(h *host.Host) { h.InternalAddr = net.ParseIP("192.168.2.21").To4() }),
			record("updated host profile and metadata", func(h *host.Host) { h.Profile = "core-services"; h.FleetMetadata = host.FleetMeta{"role-core=true"} }),
			record("set default etcd discovery token", func(h *host.Host) { h.EtcdClusterToken = "416b381afbc752dfc77e48ba7a99ccc3" }),
		}},
		{false, []store.Step{
			record("collected host mac addresses", func(h *host.Host) { h.MacAddresses = []string{"08:00:27:8e:15:8a"} }),
			record("updated host connected nic", func(h *host.Host) { h.ConnectedNIC = "eth1" }),
			record("updated host ipmi address", func(h *host.Host) {}), // no change: no commit
			record("updated host state to installing", func(h *host.Host) { h.State = host.Installing }),
		}},
		{false, []store.Step{record("updated state to installed", func(h *host.Host) { h.State = host.Installed })}},
		{false, []store.Step{record("updated state to running", func(h *host.Host) {
			h.State = host.Running
			h.LastBoot = time.Date(2016, 8, 9, 15, 49, 2, 123456789, time.UTC)
		})}},
		{false, []store.Step{record("updated host overrides: CoreOSVersion", func(h *host.Host) {
			h.Overrides = map[string]interface{}{"CoreOSVersion": "1010.5.0"}
		})}},
	}
	for _, c := range calls {
		if c.create {
			_, err = d.Create("0800278e158a-0", c.steps...)
		} else {
			_, err = d.Update("0800278e158a-0", c.steps...)
		}
		require.NoError(t, err)
	}
	_, err = d.UpdateCluster("Set default etcd cluster to '416b381afbc752dfc77e48ba7a99ccc3'", func(c *store.Cluster) error {
		c.Config.DefaultEtcdClusterToken = "416b381afbc752dfc77e48ba7a99ccc3"
		return nil
	})
	require.NoError(t, err)

	want := []string{
		"Set default etcd cluster to '416b381afbc752dfc77e48ba7a99ccc3'",
		"0800278e158a-0: updated host overrides: CoreOSVersion",
		"0800278e158a-0: updated state to running",
		"0800278e158a-0: updated state to installed",
		"0800278e158a-0: updated host state to installing",
		"0800278e158a-0: updated host connected nic",
		"0800278e158a-0: collected host mac addresses",
		"0800278e158a-0: set default etcd discovery token",
		"0800278e158a-0: updated host profile and metadata",
		"0800278e158a-0: updated host InternalAddr",
		"0800278e158a-0: updated with predefined settings",
		"0800278e158a-0: host created",
		"initial commit",
	}
	assert.Equal(t, want, gitLog(t, dir))
	checkRepo(t, dir)

	// Each host commit holds the record as its step left it. The no-op
	// step's snapshot equals its predecessor's and has no commit.
	commits := strings.Fields(git(t, dir, "log", "--reverse", "--format=%H"))
	var distinct []host.Host
	for _, s := range snapshots {
		b, _ := s.Marshal()
		if len(distinct) > 0 {
			pb, _ := distinct[len(distinct)-1].Marshal()
			if bytes.Equal(b, pb) {
				continue
			}
		}
		distinct = append(distinct, s)
	}
	require.Len(t, distinct, len(commits)-2)
	for i, s := range distinct {
		b, err := s.Marshal()
		require.NoError(t, err)
		assert.Equal(t, string(b), git(t, dir, "show", commits[i+1]+":0800278e158a-0/conf.json"), "commit %d", i+1)
	}
	final, err := d.Get("0800278e158a-0")
	require.NoError(t, err)
	fb, _ := final.Marshal()
	assert.Equal(t, string(fb), string(readFile(t, dir, "0800278e158a-0/conf.json")))
	assert.Equal(t, `{
  "GitStore": true,
  "Config": {
    "DefaultEtcdClusterToken": "416b381afbc752dfc77e48ba7a99ccc3"
  }
}
`, string(readFile(t, dir, "cluster.json")))
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

	logs := &syncBuffer{}
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

// TestDirCrashLeftovers simulates what a kill -9 between writing a file
// and committing it leaves, and checks that opening reconciles it.
func TestDirCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	_, err = d.Create("s1", step("host created", func(h *host.Host) { h.Enabled = true }))
	require.NoError(t, err)
	_, err = d.Create("gone", step("host created", func(h *host.Host) { h.Enabled = true }))
	require.NoError(t, err)
	require.NoError(t, d.Close())

	// The record was written, the commit never made.
	h, err := host.Unmarshal(readFile(t, dir, "s1/conf.json"))
	require.NoError(t, err)
	h.State = host.Installing
	b, _ := h.Marshal()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "s1", "conf.json"), b, 0o644))
	// A create whose commit never happened.
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "s2"), 0o755))
	b2, _ := host.Host{Serial: "s2", Enabled: true}.Marshal()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "s2", "conf.json"), b2, 0o644))
	// A directory an operator removed while mayu was down.
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "gone")))
	// Temp files and locks of the killed process.
	old := time.Now().Add(-time.Minute)
	leftovers := []string{
		"s1/.mayu-tmp-123", ".mayu-tmp-456", ".git/index.lock", ".git/refs/heads/master.lock",
	}
	for _, p := range leftovers {
		require.NoError(t, os.WriteFile(filepath.Join(dir, p), []byte("partial"), 0o644))
		require.NoError(t, os.Chtimes(filepath.Join(dir, p), old, old))
	}
	// A batch's pack and index, half written.
	packDir := filepath.Join(dir, ".git", "objects", "pack")
	require.NoError(t, os.MkdirAll(packDir, 0o755))
	for _, tmp := range []string{"tmp_pack_mayu-1", "tmp_idx_mayu-1"} {
		require.NoError(t, os.WriteFile(filepath.Join(packDir, tmp), []byte("partial"), 0o644))
	}

	logs := &syncBuffer{}
	d, err = gitdir.Open(dir, gitdir.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, []string{
		"gone: removed by hand",
		"s2: recovered uncommitted change",
		"s1: recovered uncommitted change",
		"gone: host created",
		"s1: host created",
		"initial commit",
	}, gitLog(t, dir))
	for _, p := range append(leftovers, ".git/objects/pack/tmp_pack_mayu-1", ".git/objects/pack/tmp_idx_mayu-1") {
		_, err := os.Lstat(filepath.Join(dir, p))
		assert.ErrorIs(t, err, fs.ErrNotExist, p)
	}
	got, err := d.Get("s1")
	require.NoError(t, err)
	assert.Equal(t, host.Installing, got.State)
	_, err = d.Get("s2")
	require.NoError(t, err)
	_, err = d.Get("gone")
	assert.ErrorIs(t, err, store.ErrNotFound)
	assert.Contains(t, logs.String(), "stale lock")
	checkRepo(t, dir)
	checkFilesMatch(t, dir, d)
}

// TestDirKill kills a process writing to the store with SIGKILL at random
// moments and checks after each restart: fsck clean, status clean, the
// records on disk are the records served.
func TestDirKill(t *testing.T) {
	if os.Getenv("MAYU_STORE_KILL_HELPER") != "" {
		t.Skip("helper process")
	}
	// A lock left by the killed helper is waited for until it is this old.
	defer gitdir.SetStaleLockAge(300 * time.Millisecond)()
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	require.NoError(t, d.Close())
	for round, delay := range []time.Duration{0, 7, 19, 30, 55, 80, 150, 220} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestDirKillHelper$", "-test.v")
		cmd.Env = append(os.Environ(), "MAYU_STORE_KILL_HELPER="+dir, fmt.Sprintf("MAYU_STORE_KILL_ROUND=%d", round))
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		ready := make(chan struct{})
		go func() {
			buf := make([]byte, 4096)
			var seen []byte
			for {
				n, err := stdout.Read(buf)
				seen = append(seen, buf[:n]...)
				if bytes.Contains(seen, []byte("DONE 3\n")) {
					close(ready)
					_, _ = io.Copy(io.Discard, stdout)
					return
				}
				if err != nil {
					return
				}
			}
		}()
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatal("helper process did not start writing")
		}
		time.Sleep(delay * time.Millisecond)
		require.NoError(t, cmd.Process.Kill())
		_ = cmd.Wait()

		d, err := gitdir.Open(dir, gitdir.Options{})
		require.NoError(t, err, "round %d", round)
		checkRepo(t, dir)
		checkFilesMatch(t, dir, d)
		require.NoError(t, d.Close())
	}
	assert.Greater(t, len(gitLog(t, dir)), 10, "the helper made commits")
}

// TestDirKillHelper is the process TestDirKill kills.
func TestDirKillHelper(t *testing.T) {
	dir := os.Getenv("MAYU_STORE_KILL_HELPER")
	if dir == "" {
		t.Skip("run by TestDirKill")
	}
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	round := os.Getenv("MAYU_STORE_KILL_ROUND")
	for i := 0; ; i++ {
		fmt.Printf("DONE %d\n", i)
		serial := fmt.Sprintf("k%s-%d", round, i%5)
		if i < 5 {
			_, err = d.Create(serial, step("host created", func(h *host.Host) { h.Enabled = true }))
		} else {
			_, err = d.Update(serial,
				step("updated host cabinet", func(h *host.Host) { h.Cabinet++ }),
				step("updated host state", func(h *host.Host) { h.MachineOnCabinet++ }))
		}
		require.NoError(t, err)
		if i%7 == 0 {
			_, err = d.UpdateCluster(fmt.Sprintf("Set default etcd cluster to '%d'", i), func(c *store.Cluster) error {
				c.Config.DefaultEtcdClusterToken = fmt.Sprint(i)
				return nil
			})
			require.NoError(t, err)
		}
	}
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

func TestDirReservedSerial(t *testing.T) {
	d, err := gitdir.Open(t.TempDir(), gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()
	_, err = d.Create("cluster.json", step("host created", func(h *host.Host) { h.Enabled = true }))
	assert.ErrorIs(t, err, host.ErrInvalidSerial)
}

// TestDirExternalCommit: an operator commits in the cluster directory with
// the git CLI; the store notices the moved branch and carries on.
func TestDirExternalCommit(t *testing.T) {
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()
	_, err = d.Create("s1", step("host created", func(h *host.Host) { h.Enabled = true }))
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "NOTES"), []byte("rack 4 is flaky\n"), 0o644))
	// The operator also fixes the record itself and commits both.
	h, err := host.Unmarshal(readFile(t, dir, "s1/conf.json"))
	require.NoError(t, err)
	h.ProviderId = "rack-4"
	b, _ := h.Marshal()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "s1", "conf.json"), b, 0o644))
	git(t, dir, "add", "NOTES", "s1/conf.json")
	git(t, dir, "commit", "-q", "-m", "operator notes")

	got, err := d.Update("s1", step("updated host cabinet", func(h *host.Host) { h.Cabinet = 4 }))
	require.NoError(t, err)
	assert.Equal(t, "rack-4", got.ProviderId, "the step ran on the operator's record, not on a stale copy")
	assert.Equal(t, uint(4), got.Cabinet)
	assert.Equal(t, []string{"s1: updated host cabinet", "operator notes", "s1: host created", "initial commit"}, gitLog(t, dir))
	checkRepo(t, dir)
	checkFilesMatch(t, dir, d)
}

// TestDirConcurrency: many goroutines create and update different and the
// same serials while readers read the files and the index.
func TestDirConcurrency(t *testing.T) {
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()

	const workers, ops = 8, 12
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		expected = map[string]int{} // audit message -> times committed
	)
	count := func(msg string) {
		mu.Lock()
		expected[msg]++
		mu.Unlock()
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for r := 0; r < 3; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				for _, h := range d.List() {
					b, err := os.ReadFile(filepath.Join(dir, h.Serial, "conf.json"))
					if errors.Is(err, fs.ErrNotExist) {
						continue
					}
					if assert.NoError(t, err) {
						_, err := host.Unmarshal(b)
						assert.NoError(t, err, "torn conf.json of %s: %q", h.Serial, b)
					}
				}
			}
		}()
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			own := fmt.Sprintf("w%d", w)
			for i := 0; i < ops; i++ {
				// Everyone races to create the shared serial.
				if _, err := d.Create("shared", step("host created", func(h *host.Host) { h.Enabled = true })); err == nil {
					count("shared: host created")
				} else {
					assert.ErrorIs(t, err, store.ErrExists)
				}
				if i == 0 {
					_, err := d.Create(own, step("host created", func(h *host.Host) { h.Enabled = true }),
						step("updated host InternalAddr", func(h *host.Host) { h.InternalAddr = net.IPv4(10, 0, 1, byte(w)) }))
					if !assert.NoError(t, err) {
						return
					}
					count(own + ": host created")
					count(own + ": updated host InternalAddr")
					continue
				}
				_, err := d.Update(own, step("updated host cabinet", func(h *host.Host) { h.Cabinet++ }),
					step("updated host state", func(h *host.Host) { h.MachineOnCabinet = uint(i) }))
				if !assert.NoError(t, err) {
					return
				}
				count(own + ": updated host cabinet")
				count(own + ": updated host state")
				_, err = d.Update("shared", step("updated host metadata", func(h *host.Host) {
					h.FleetMetadata = append(h.FleetMetadata, fmt.Sprintf("%s-%d=1", own, i))
				}))
				if !assert.NoError(t, err) {
					return
				}
				count("shared: updated host metadata")
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	readers.Wait()

	got := map[string]int{}
	for _, m := range gitLog(t, dir) {
		got[m]++
	}
	delete(got, "initial commit")
	assert.Equal(t, expected, got, "every audit message is in git log, once per change")
	shared, err := d.Get("shared")
	require.NoError(t, err)
	assert.Len(t, shared.FleetMetadata, workers*(ops-1), "no lost update on the shared serial")
	checkRepo(t, dir)
	checkFilesMatch(t, dir, d)
}

// TestDirHandEdits: with Watch, an operator's edits are picked up, served
// and committed; the store's own writes are not mistaken for edits.
func TestDirHandEdits(t *testing.T) {
	dir := t.TempDir()
	logs := &syncBuffer{}
	d, err := gitdir.Open(dir, gitdir.Options{Watch: true, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	require.NoError(t, err)
	defer d.Close()
	changed := make(chan struct{}, 100)
	d.Subscribe(func() { changed <- struct{}{} })

	_, err = d.Create("s1", step("host created", func(h *host.Host) { h.Enabled = true; h.State = host.Configured }))
	require.NoError(t, err)
	_, err = d.Update("s1", step("updated host cabinet", func(h *host.Host) { h.Cabinet = 1 }))
	require.NoError(t, err)
	time.Sleep(400 * time.Millisecond) // past the watcher's quiet period
	assert.Equal(t, []string{"s1: updated host cabinet", "s1: host created", "initial commit"}, gitLog(t, dir),
		"the store's own writes are not hand edits")

	editHost := func(serial string, fn func(h *host.Host)) {
		h, err := host.Unmarshal(readFile(t, dir, serial+"/conf.json"))
		require.NoError(t, err)
		fn(&h)
		b, _ := h.Marshal()
		require.NoError(t, os.WriteFile(filepath.Join(dir, serial, "conf.json"), b, 0o644)) // in place, as an editor
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; log:\n%s", what, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	drainChan(changed)

	t.Run("edit", func(t *testing.T) {
		editHost("s1", func(h *host.Host) { h.ProviderId = "rack-7" })
		eventually("edit picked up", func() bool { h, _ := d.Get("s1"); return h.ProviderId == "rack-7" })
		select {
		case <-changed:
		case <-time.After(10 * time.Second):
			t.Fatal("subscribers not told")
		}
		eventually("edit committed", func() bool { return gitLog(t, dir)[0] == "s1: updated by hand" })
		checkRepo(t, dir)
	})
	t.Run("malformed edit ignored", func(t *testing.T) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "s1", "conf.json"), []byte(`{"Serial": "s1", "State": `), 0o644))
		eventually("malformed edit logged", func() bool { return strings.Contains(logs.String(), "ignoring malformed hand edit") })
		h, err := d.Get("s1")
		require.NoError(t, err)
		assert.Equal(t, "rack-7", h.ProviderId, "the index keeps the last good record")
		assert.Equal(t, "s1: updated by hand", gitLog(t, dir)[0], "nothing committed")
		// The next store write replaces the broken file.
		_, err = d.Update("s1", step("updated host cabinet", func(h *host.Host) { h.Cabinet = 2 }))
		require.NoError(t, err)
		checkRepo(t, dir)
	})
	t.Run("new host directory", func(t *testing.T) {
		require.NoError(t, os.Mkdir(filepath.Join(dir, "byhand"), 0o755))
		b, _ := host.Host{Serial: "byhand", Enabled: true, InternalAddr: net.ParseIP("10.0.0.77").To4()}.Marshal()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "byhand", "conf.json"), b, 0o644))
		eventually("new host picked up", func() bool { _, err := d.ByIP(net.ParseIP("10.0.0.77")); return err == nil })
		eventually("new host committed", func() bool { return gitLog(t, dir)[0] == "byhand: updated by hand" })
		checkRepo(t, dir)
		// And it is watched: a later edit is seen too.
		editHost("byhand", func(h *host.Host) { h.Cabinet = 8 })
		eventually("edit of new host", func() bool { h, _ := d.Get("byhand"); return h.Cabinet == 8 })
	})
	t.Run("editor renames", func(t *testing.T) {
		// vim-style: write a new file and rename it over the record.
		h, err := d.Get("s1")
		require.NoError(t, err)
		h.Name = "renamed-in"
		b, _ := h.Marshal()
		tmp := filepath.Join(dir, "s1", ".conf.json.swp")
		require.NoError(t, os.WriteFile(tmp, b, 0o644))
		require.NoError(t, os.Rename(tmp, filepath.Join(dir, "s1", "conf.json")))
		eventually("renamed edit picked up", func() bool { h, _ := d.Get("s1"); return h.Name == "renamed-in" })
	})
	t.Run("cluster.json", func(t *testing.T) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "cluster.json"), []byte(`{"GitStore": true, "Config": {"DefaultEtcdClusterToken": "byhand"}}`), 0o644))
		eventually("cluster edit", func() bool { return d.Cluster().Config.DefaultEtcdClusterToken == "byhand" })
		eventually("cluster edit committed", func() bool { return gitLog(t, dir)[0] == "cluster.json: updated by hand" })
	})
	t.Run("removed directory", func(t *testing.T) {
		require.NoError(t, os.RemoveAll(filepath.Join(dir, "byhand")))
		eventually("removal picked up", func() bool { _, err := d.Get("byhand"); return errors.Is(err, store.ErrNotFound) })
		eventually("removal committed", func() bool { return gitLog(t, dir)[0] == "byhand: removed by hand" })
		checkRepo(t, dir)
	})
	time.Sleep(300 * time.Millisecond)
	checkRepo(t, dir)
	checkFilesMatch(t, dir, d)
}

// Helpers.

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

// syncBuffer is a log sink safe for the watcher's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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
	var (
		out []byte
		err error
	)
	// A pack merge of a store still open may delete packs while fsck reads
	// them ("index not opened"): git's own repack does the same. Only a
	// report that persists counts.
	for try := 0; try < 5; try++ {
		cmd := exec.Command(needGit(t), "fsck", "--full", "--strict", "--no-dangling")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
		out, err = cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "index not opened") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
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

// TestDirPacks: every batch is one pack, the packs are merged in the
// background, and the merged packs hold root trees as bounded delta chains
// that stock git and go-git read back.
func TestDirPacks(t *testing.T) {
	defer gitdir.SetMergeFanIn(4)()
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	for i := 0; i < 5; i++ {
		_, err := d.Create(fmt.Sprintf("s%d", i), step("host created", func(h *host.Host) { h.Enabled = true }))
		require.NoError(t, err)
	}
	var states []string // conf.json of s1 after each of its updates
	for i := 1; i <= 120; i++ {
		serial := fmt.Sprintf("s%d", i%5)
		h, err := d.Update(serial, step("updated host cabinet", func(h *host.Host) { h.Cabinet = uint(i) }))
		require.NoError(t, err)
		if serial == "s1" {
			b, _ := h.Marshal()
			states = append(states, string(b))
		}
	}
	// 126 batches, merged four by four as they came.
	assert.Less(t, len(d.Packs()), 40, "packs are merged while the store runs")
	require.NoError(t, d.MergeNow())
	assert.Len(t, d.Packs(), 1)
	want := marshalAll(t, d.List())
	require.NoError(t, d.Close())

	counts := git(t, dir, "count-objects", "-v")
	assert.True(t, strings.HasPrefix(counts, "count: 0\n"), "the store writes no loose object:\n%s", counts)
	assert.Contains(t, counts, "\npacks: 1\n", "every merged pack was removed")
	packs, err := filepath.Glob(filepath.Join(dir, ".git", "objects", "pack", "pack-*.idx"))
	require.NoError(t, err)
	maxChain := 0
	for _, p := range packs {
		out := git(t, dir, "verify-pack", "-v", p)
		for _, line := range strings.Split(out, "\n") {
			var n, m int
			if _, err := fmt.Sscanf(line, "chain length = %d: %d object", &n, &m); err == nil && n > maxChain {
				maxChain = n
			}
		}
	}
	assert.Greater(t, maxChain, 0, "root trees are stored as deltas")
	assert.LessOrEqual(t, maxChain, 50, "delta chains are bounded")
	checkRepo(t, dir)
	// Every old state reads back through the deltas.
	commits := strings.Fields(git(t, dir, "log", "--reverse", "--format=%H", "--", "s1/conf.json"))
	require.Len(t, commits, len(states)+1)
	for i, st := range states {
		assert.Equal(t, st, git(t, dir, "show", commits[i+1]+":s1/conf.json"))
	}

	// go-git reads the packed HEAD when the store opens again, and the
	// small packs of the earlier run are merged with the new ones.
	d, err = gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()
	assert.Len(t, d.Packs(), 1, "the earlier run's pack is picked up for merging")
	assert.Equal(t, want, marshalAll(t, d.List()))
	_, err = d.Update("s1", step("updated host cabinet", func(h *host.Host) { h.Cabinet = 1000 }))
	require.NoError(t, err)
	checkRepo(t, dir)
}

// TestDirHandEditsNoGit: with --no-git, hand edits are served, not
// committed.
func TestDirHandEditsNoGit(t *testing.T) {
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{NoGit: true, Watch: true})
	require.NoError(t, err)
	defer d.Close()
	_, err = d.Create("s1", step("host created", func(h *host.Host) { h.Enabled = true }))
	require.NoError(t, err)
	b, _ := host.Host{Serial: "s1", Enabled: true, ProviderId: "byhand"}.Marshal()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "s1", "conf.json"), b, 0o644))
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, err := d.Get("s1")
		require.NoError(t, err)
		if h.ProviderId == "byhand" {
			break
		}
		require.True(t, time.Now().Before(deadline), "hand edit not picked up")
		time.Sleep(20 * time.Millisecond)
	}
	_, err = os.Stat(filepath.Join(dir, ".git"))
	assert.ErrorIs(t, err, fs.ErrNotExist)
	require.NoError(t, d.Close())
	require.NoError(t, d.Close(), "closing twice is harmless")
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

// TestDirSplitIndex: .git/index is a split index that stays small while
// the shared index holds every entry, and stock git reads the two as the
// index of HEAD.
func TestDirSplitIndex(t *testing.T) {
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{NoGit: true})
	require.NoError(t, err)
	for i := 0; i < 300; i++ {
		_, err := d.Create(fmt.Sprintf("h%03d", i), step("host created", func(h *host.Host) { h.Enabled = true }))
		require.NoError(t, err)
	}
	require.NoError(t, d.Close())
	d, err = gitdir.Open(dir, gitdir.Options{}) // one bulk initial commit
	require.NoError(t, err)
	defer d.Close()

	lsMatchesHead := func() {
		t.Helper()
		var head []string
		for _, l := range strings.Split(strings.TrimSpace(git(t, dir, "ls-tree", "-r", "HEAD")), "\n") {
			// "<mode> blob <id>\t<path>" -> "<mode> <id> 0\t<path>", as ls-files -s prints
			f := strings.Fields(l)
			head = append(head, f[0]+" "+f[2]+" 0\t"+f[3])
		}
		assert.Equal(t, head, strings.Split(strings.TrimSpace(git(t, dir, "ls-files", "-s")), "\n"))
	}
	sharedIndexes := func() []string {
		m, _ := filepath.Glob(filepath.Join(dir, ".git", "sharedindex.*"))
		return m
	}
	indexSize := func() int64 {
		fi, err := os.Stat(filepath.Join(dir, ".git", "index"))
		require.NoError(t, err)
		return fi.Size()
	}
	lsMatchesHead()
	require.Len(t, sharedIndexes(), 1)
	first := sharedIndexes()[0]

	// A few changes, an addition, a removal by hand: the index stays small.
	for i := 0; i < 10; i++ {
		_, err := d.Update(fmt.Sprintf("h%03d", i*7), step("updated host cabinet", func(h *host.Host) { h.Cabinet = 3 }))
		require.NoError(t, err)
	}
	_, err = d.Create("new", step("host created", func(h *host.Host) { h.Enabled = true }))
	require.NoError(t, err)
	assert.Less(t, indexSize(), int64(2000), "the split index holds only the changes")
	lsMatchesHead()
	checkRepo(t, dir)

	// Past a sixteenth of the entries changed, a new shared index replaces
	// the old one.
	for i := 0; i < 100; i++ {
		_, err := d.Update(fmt.Sprintf("h%03d", i), step("updated host cabinet", func(h *host.Host) { h.Cabinet = 4 }))
		require.NoError(t, err)
	}
	require.Len(t, sharedIndexes(), 1)
	assert.NotEqual(t, first, sharedIndexes()[0])
	lsMatchesHead()
	checkRepo(t, dir)

	// git itself rewriting the index (here: a refresh) does not confuse
	// the store's next write.
	git(t, dir, "update-index", "--refresh")
	_, err = d.Update("h001", step("updated host cabinet", func(h *host.Host) { h.Cabinet = 5 }))
	require.NoError(t, err)
	lsMatchesHead()
	checkRepo(t, dir)
}

// TestDirRollForward: a crash after the new record was renamed into place
// but before the ref lock was renamed over the ref leaves a stale lock
// naming the new head. OpenDir finishes the ref update, so the history
// keeps the real messages; a lock it cannot trust is dropped as before and
// the record is committed as a recovered change.
func TestDirRollForward(t *testing.T) {
	needGit(t)
	const (
		stepMsgs  = "s1: updated state to installed|s1: updated host cabinet"
		recovered = "s1: recovered uncommitted change"
	)
	for _, tc := range []struct {
		name string
		// lock returns the content of the stale ref lock from the old head,
		// the new head and the initial commit, and may damage the repo.
		lock func(t *testing.T, dir, oldHead, newHead, initial string) string
		// oldRecord puts the previous record back (crash before its rename).
		oldRecord bool
		cluster   bool
		want      string // the newest commits, "|"-separated
	}{
		{name: "complete lock, new record", lock: func(_ *testing.T, _, _, n, _ string) string { return n + "\n" }, want: stepMsgs},
		{name: "complete lock, new cluster.json", cluster: true, lock: func(_ *testing.T, _, _, n, _ string) string { return n + "\n" }, want: "Set default etcd cluster to 'x'"},
		{name: "record not renamed yet", oldRecord: true, lock: func(_ *testing.T, _, _, n, _ string) string { return n + "\n" }, want: "s1: host created"},
		{name: "lock written partly", lock: func(_ *testing.T, _, _, n, _ string) string { return n[:17] }, want: recovered},
		{name: "empty lock", lock: func(*testing.T, string, string, string, string) string { return "" }, want: recovered},
		{name: "lock without newline", lock: func(_ *testing.T, _, _, n, _ string) string { return n }, want: recovered},
		{name: "HEAD not an ancestor", lock: func(_ *testing.T, _, _, _, i string) string { return i + "\n" }, want: recovered},
		{name: "lock names the current head", lock: func(_ *testing.T, _, o, _, _ string) string { return o + "\n" }, want: recovered},
		{name: "new commit missing", lock: func(t *testing.T, dir, _, n, _ string) string {
			removeObject(t, dir, n)
			return n + "\n"
		}, want: recovered},
		{name: "new tree missing", lock: func(t *testing.T, dir, _, n, _ string) string {
			removeObject(t, dir, strings.TrimSpace(git(t, dir, "rev-parse", n+"^{tree}")))
			return n + "\n"
		}, want: recovered},
		{name: "intermediate commit missing", lock: func(t *testing.T, dir, _, n, _ string) string {
			removeObject(t, dir, strings.TrimSpace(git(t, dir, "rev-parse", n+"^")))
			return n + "\n"
		}, want: recovered},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer gitdir.SetStaleLockAge(time.Second)()
			dir := t.TempDir()
			d, err := gitdir.Open(dir, gitdir.Options{})
			require.NoError(t, err)
			_, err = d.Create("s1", step("host created", func(h *host.Host) { h.Enabled = true }))
			require.NoError(t, err)
			// A crash leaves the reflogs without the interrupted update.
			reflogs := map[string][]byte{}
			for _, p := range []string{".git/logs/HEAD", ".git/logs/refs/heads/master"} {
				reflogs[p] = readFile(t, dir, p)
			}
			file := "s1/conf.json"
			if tc.cluster {
				file = "cluster.json"
			}
			oldData := readFile(t, dir, file)
			if tc.cluster {
				_, err = d.UpdateCluster("Set default etcd cluster to 'x'", func(c *store.Cluster) error {
					c.Config.DefaultEtcdClusterToken = "x"
					return nil
				})
			} else {
				_, err = d.Update("s1",
					step("updated host cabinet", func(h *host.Host) { h.Cabinet = 3 }),
					step("updated state to installed", func(h *host.Host) { h.State = host.Installed }))
			}
			require.NoError(t, err)
			require.NoError(t, d.Close())
			oldLog := gitLog(t, dir)
			for p, data := range reflogs {
				require.NoError(t, os.WriteFile(filepath.Join(dir, p), data, 0o644))
			}

			newHead := strings.TrimSpace(git(t, dir, "rev-parse", "HEAD"))
			oldHead := strings.TrimSpace(git(t, dir, "rev-parse", "HEAD~2"))
			if tc.cluster {
				oldHead = strings.TrimSpace(git(t, dir, "rev-parse", "HEAD~1"))
			}
			initial := strings.TrimSpace(git(t, dir, "rev-list", "--max-parents=0", "HEAD"))
			ref := filepath.Join(dir, ".git", "refs", "heads", "master")
			lock := tc.lock(t, dir, oldHead, newHead, initial)
			require.NoError(t, os.WriteFile(ref+".lock", []byte(lock), 0o644))
			stale := time.Now().Add(-time.Minute)
			require.NoError(t, os.Chtimes(ref+".lock", stale, stale))
			require.NoError(t, os.WriteFile(ref, []byte(oldHead+"\n"), 0o644))
			if tc.oldRecord {
				require.NoError(t, os.WriteFile(filepath.Join(dir, file), oldData, 0o644))
			}
			newData := readFile(t, dir, file)

			d, err = gitdir.Open(dir, gitdir.Options{})
			require.NoError(t, err)
			defer d.Close()
			want := strings.Split(tc.want, "|")
			got := gitLog(t, dir)
			require.GreaterOrEqual(t, len(got), len(want))
			assert.Equal(t, want, got[:len(want)])
			if tc.want == stepMsgs || tc.cluster {
				assert.Equal(t, oldLog, got, "the interrupted commits, nothing else")
			}
			assert.Equal(t, string(newData), git(t, dir, "show", "HEAD:"+file), "HEAD holds the record on disk")
			_, err = os.Lstat(ref + ".lock")
			assert.ErrorIs(t, err, fs.ErrNotExist)
			if tc.name == "intermediate commit missing" {
				// fsck rightly reports the dangling commit's missing parent.
				assert.Empty(t, git(t, dir, "status", "--porcelain", "--untracked-files=all"))
			} else {
				checkRepo(t, dir)
			}
			checkFilesMatch(t, dir, d)
		})
	}
}
