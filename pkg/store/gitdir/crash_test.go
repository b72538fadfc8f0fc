package gitdir_test

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
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

	logs := &proctest.Output{}
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

// TestDirRollForward: a crash after the new record was renamed into place
// but before the ref lock was renamed over the ref leaves a stale lock
// naming the new head. Open finishes the ref update, so the history
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
