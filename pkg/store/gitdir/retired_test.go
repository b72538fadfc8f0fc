package gitdir_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store/gitdir"
)

// TestPackMergeConcurrentReaders: stock git commands an operator runs
// while the store merges its packs never fail: the packs a merge
// replaces stay until no reader can still be about to open them. Each
// round leaves packs to merge and restarts the store, which merges them
// at open (as after a crash) while `git fsck --full` runs in a loop;
// `git log` runs throughout, writes included.
//
// fsck is paused while the store commits: it checks the refs and reflogs
// against the objects it listed when it started, so a commit made after
// that (by mayu or by git itself) is reported as "invalid reflog entry".
func TestPackMergeConcurrentReaders(t *testing.T) {
	gitBin := needGit(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		writing  sync.RWMutex // held by the test while it commits
		failures []string
		runs     = map[string]int{}
		stop     = make(chan struct{})
	)
	reader := func(pause bool, args ...string) {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if pause {
				writing.RLock()
			}
			cmd := exec.CommandContext(ctx, gitBin, args...)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if pause {
				writing.RUnlock()
			}
			mu.Lock()
			runs[args[0]]++
			if err != nil && ctx.Err() == nil {
				failures = append(failures, fmt.Sprintf("git %s: %v: %s", args[0], err, stderr.String()))
			} else if msg := strings.TrimSpace(stderr.String()); msg != "" {
				failures = append(failures, fmt.Sprintf("git %s: %s", args[0], msg))
			}
			mu.Unlock()
		}
	}

	writing.Lock()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	for i := 0; i < 8; i++ {
		_, err := d.Create(fmt.Sprintf("s%d", i), step("host created", func(h *host.Host) { h.Enabled = true }))
		require.NoError(t, err)
	}
	require.NoError(t, d.Close())
	writing.Unlock()
	wg.Add(3)
	go reader(true, "fsck", "--full", "--no-progress", "--no-dangling")
	go reader(true, "fsck", "--full", "--no-progress", "--no-dangling")
	go reader(false, "log", "--format=%H %T", "--", "s1/conf.json")

	merged := 0
	for round := 0; round < 8 && ctx.Err() == nil; round++ {
		// Commits, one pack each, not merged yet.
		restore := gitdir.SetMergeFanIn(1000)
		writing.Lock()
		d, err := gitdir.Open(dir, gitdir.Options{})
		require.NoError(t, err)
		for i := 0; i < 24; i++ {
			_, err := d.Update(fmt.Sprintf("s%d", i%8), step("updated host cabinet", func(h *host.Host) { h.Cabinet = uint(round*100 + i) }))
			require.NoError(t, err)
		}
		require.NoError(t, d.Close())
		writing.Unlock()
		restore()

		// A restart merges them while fsck reads.
		restore = gitdir.SetMergeFanIn(2)
		d, err = gitdir.Open(dir, gitdir.Options{})
		require.NoError(t, err)
		d.WaitMerges()
		merged = len(d.Retired())
		time.Sleep(100 * time.Millisecond) // let the readers see the merged-away packs
		require.NoError(t, d.Close())
		restore()
	}
	close(stop)
	wg.Wait()
	t.Logf("git runs: %v; %d packs merged away", runs, merged)
	assert.Greater(t, merged, 8*24, "the packs were merged while git read them")
	assert.Greater(t, runs["fsck"], 8)
	assert.Greater(t, runs["log"], 8)
	assert.Empty(t, failures)
	checkRepo(t, dir)
}

// TestPackMergeGrace: a merged pack is deleted once its grace is over, at
// the next write; the list of retired packs survives a restart, so they
// are neither merged again nor kept for ever.
func TestPackMergeGrace(t *testing.T) {
	defer gitdir.SetMergeFanIn(2)()
	defer gitdir.SetPackGrace(time.Hour)()
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	for i := 0; i < 6; i++ {
		_, err := d.Create(fmt.Sprintf("s%d", i), step("host created", func(h *host.Host) { h.Enabled = true }))
		require.NoError(t, err)
	}
	d.WaitMerges()
	retired := d.Retired()
	require.NotEmpty(t, retired)
	packDir := filepath.Join(dir, ".git", "objects", "pack")
	for _, name := range retired {
		assert.FileExists(t, filepath.Join(packDir, name+".pack"), "kept for readers")
		assert.FileExists(t, filepath.Join(packDir, name+".idx"))
	}
	unmerged := d.Packs()
	want := marshalAll(t, d.List())
	require.NoError(t, d.Close())

	// After a restart: still retired, and not merge candidates (with a
	// fan-in the store's own packs do not reach, they stay as they are).
	restore := gitdir.SetMergeFanIn(100)
	d, err = gitdir.Open(dir, gitdir.Options{})
	restore()
	require.NoError(t, err)
	assert.ElementsMatch(t, retired, d.Retired())
	assert.ElementsMatch(t, unmerged, d.Packs(), "the retired packs are not merged again")
	assert.Equal(t, want, marshalAll(t, d.List()))
	require.NoError(t, d.Close())

	// Past the grace, the next start deletes them, and go-git reads the
	// repository without them.
	gitdir.SetPackGrace(0)
	d, err = gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()
	assert.Empty(t, d.Retired())
	for _, name := range retired {
		assert.NoFileExists(t, filepath.Join(packDir, name+".pack"))
		assert.NoFileExists(t, filepath.Join(packDir, name+".idx"))
	}
	assert.NoFileExists(t, filepath.Join(dir, ".git", "mayu-retired-packs"))
	assert.Equal(t, want, marshalAll(t, d.List()))
	_, err = d.Update("s1", step("updated host cabinet", func(h *host.Host) { h.Cabinet = 9 }))
	require.NoError(t, err)
	d.WaitMerges()
	checkRepo(t, dir)
}
