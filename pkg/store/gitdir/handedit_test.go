package gitdir_test

import (
	"errors"
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

// TestDirHandEdits: with Watch, an operator's edits are picked up, served
// and committed; the store's own writes are not mistaken for edits.
func TestDirHandEdits(t *testing.T) {
	dir := t.TempDir()
	logs := &proctest.Output{}
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
