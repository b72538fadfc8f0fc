package gitdir_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store"
	"mayu/pkg/store/gitdir"
)

// TestDirGroupCommit: requests arriving together share batches, yet each
// succeeds or fails on its own: a failing or panicking step, a create of
// an existing serial and an update of an unknown one fail their request
// only, and leave no commit; everything else lands once, in git log.
func TestDirGroupCommit(t *testing.T) {
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()
	const hosts, rounds = 16, 6
	for i := 0; i < hosts; i++ {
		_, err := d.Create(fmt.Sprintf("s%02d", i), step("host created", func(h *host.Host) { h.Enabled = true }))
		require.NoError(t, err)
	}
	errBad := errors.New("bad value")
	var (
		wg       sync.WaitGroup
		start    = make(chan struct{})
		mu       sync.Mutex
		expected = map[string]int{}
	)
	for i := 0; i < hosts; i++ {
		for r := 0; r < rounds; r++ {
			wg.Add(1)
			go func(i, r int) {
				defer wg.Done()
				serial := fmt.Sprintf("s%02d", i)
				<-start
				var err error
				switch (i + r) % 6 {
				case 0: // a failing step after a good one: nothing of it lands
					_, err = d.Update(serial,
						step("updated host cabinet", func(h *host.Host) { h.Cabinet += 100 }),
						store.Step{Message: "updated host state", Apply: func(*host.Host) error { return errBad }})
					assert.ErrorIs(t, err, errBad)
				case 1:
					_, err = d.Update(serial, store.Step{Message: "updated host state", Apply: func(*host.Host) error { panic("boom") }})
					assert.ErrorContains(t, err, "panicked")
				case 2:
					_, err = d.Create(serial, step("host created", func(*host.Host) {}))
					assert.ErrorIs(t, err, store.ErrExists)
				case 3:
					_, err = d.Update(serial+"-unknown", step("updated host cabinet", func(h *host.Host) { h.Cabinet++ }))
					assert.ErrorIs(t, err, store.ErrNotFound)
				default:
					_, err = d.Update(serial, step(fmt.Sprintf("updated host metadata %d", r), func(h *host.Host) {
						h.MachineOnCabinet++
					}))
					if assert.NoError(t, err) {
						mu.Lock()
						expected[fmt.Sprintf("%s: updated host metadata %d", serial, r)]++
						mu.Unlock()
					}
				}
			}(i, r)
		}
	}
	close(start)
	wg.Wait()

	got := map[string]int{}
	for _, m := range gitLog(t, dir) {
		got[m]++
	}
	for i := 0; i < hosts; i++ {
		delete(got, fmt.Sprintf("s%02d: host created", i))
	}
	delete(got, "initial commit")
	assert.Equal(t, expected, got, "the successful updates, once each, and nothing of the failed ones")
	for _, h := range d.List() {
		assert.Less(t, h.Cabinet, uint(100), "%s: a failed request left a change", h.Serial)
	}
	// The store still takes writes after a panicking step.
	_, err = d.Update("s00", step("updated host cabinet", func(h *host.Host) { h.Cabinet = 7 }))
	require.NoError(t, err)
	checkRepo(t, dir)
	checkFilesMatch(t, dir, d)
}

// TestDirRollForwardPartialBatch: a crash among the record renames of a
// batch (some records new, the others old, the ref lock naming the batch's
// head) is finished at open: the ref moves, the old records are written
// from the new commit, and every audit message of the batch is kept.
func TestDirRollForwardPartialBatch(t *testing.T) {
	needGit(t)
	defer gitdir.SetStaleLockAge(time.Second)()
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	for _, s := range []string{"s1", "s2"} {
		_, err = d.Create(s, step("host created", func(h *host.Host) { h.Enabled = true }))
		require.NoError(t, err)
	}
	oldS2 := readFile(t, dir, "s2/conf.json")
	oldHead := strings.TrimSpace(git(t, dir, "rev-parse", "HEAD"))
	for _, s := range []string{"s1", "s2", "s3"} {
		create := s == "s3"
		st := step("updated state to installed", func(h *host.Host) { h.State = host.Installed })
		if create {
			_, err = d.Create(s, st)
		} else {
			_, err = d.Update(s, st)
		}
		require.NoError(t, err)
	}
	require.NoError(t, d.Close())
	newHead := strings.TrimSpace(git(t, dir, "rev-parse", "HEAD"))
	wantLog := gitLog(t, dir)
	newS2 := readFile(t, dir, "s2/conf.json")

	// The crash: s1's record renamed, s2's and s3's not, the ref not moved.
	ref := filepath.Join(dir, ".git", "refs", "heads", "master")
	require.NoError(t, os.WriteFile(ref+".lock", []byte(newHead+"\n"), 0o644))
	stale := time.Now().Add(-time.Minute)
	require.NoError(t, os.Chtimes(ref+".lock", stale, stale))
	require.NoError(t, os.WriteFile(ref, []byte(oldHead+"\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "s2", "conf.json"), oldS2, 0o644))
	require.NoError(t, os.Remove(filepath.Join(dir, "s3", "conf.json")))

	d, err = gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, wantLog, gitLog(t, dir), "the batch's commits, no recovered change")
	assert.Equal(t, string(newS2), string(readFile(t, dir, "s2/conf.json")))
	for _, s := range []string{"s1", "s2", "s3"} {
		h, err := d.Get(s)
		require.NoError(t, err)
		assert.Equal(t, host.Installed, h.State, s)
	}
	checkRepo(t, dir)
	checkFilesMatch(t, dir, d)
}

// TestDirGitGCWhileRunning: an operator's `git gc` repacks and removes the
// store's packs under it; the store keeps committing, and its later merges
// skip the packs that are gone.
func TestDirGitGCWhileRunning(t *testing.T) {
	needGit(t)
	defer gitdir.SetMergeFanIn(4)()
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()
	_, err = d.Create("s1", step("host created", func(h *host.Host) { h.Enabled = true }))
	require.NoError(t, err)
	update := func(n int) {
		for i := 0; i < n; i++ {
			_, err := d.Update("s1", step("updated host cabinet", func(h *host.Host) { h.Cabinet++ }))
			require.NoError(t, err)
		}
	}
	update(10)
	git(t, dir, "gc", "--quiet", "--prune=now")
	update(20)
	require.NoError(t, d.MergeNow())
	checkRepo(t, dir)
	h, err := d.Get("s1")
	require.NoError(t, err)
	assert.Equal(t, uint(30), h.Cabinet)
	assert.Len(t, gitLog(t, dir), 1+1+30, "initial commit, host created, 30 updates")
	require.NoError(t, d.Close())

	// A pack the operator marked .keep is never merged away by mayu.
	git(t, dir, "gc", "--quiet", "--prune=now")
	packs, err := filepath.Glob(filepath.Join(dir, ".git", "objects", "pack", "pack-*.pack"))
	require.NoError(t, err)
	require.Len(t, packs, 1)
	require.NoError(t, os.WriteFile(strings.TrimSuffix(packs[0], ".pack")+".keep", nil, 0o644))
	d2, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d2.Close()
	assert.Empty(t, d2.Packs(), "a kept pack is not a merge candidate")
	h, err = d2.Get("s1")
	require.NoError(t, err)
	assert.Equal(t, uint(30), h.Cabinet)
}
