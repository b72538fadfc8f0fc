package gitdir_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store/gitdir"
)

// TestDirPacks: every batch is one pack, the packs are merged in the
// background, and the merged packs hold root trees as bounded delta chains
// that stock git and go-git read back.
func TestDirPacks(t *testing.T) {
	defer gitdir.SetMergeFanIn(4)()
	// What a merge leaves is checked here; how long the packs it merged
	// stay for concurrent git readers, in TestPackMergeConcurrentReaders.
	defer gitdir.SetPackGrace(0)()
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
	d.WaitMerges()
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
	d.WaitMerges()
	checkRepo(t, dir)

	// git itself rewriting the index (here: a refresh) does not confuse
	// the store's next write.
	git(t, dir, "update-index", "--refresh")
	_, err = d.Update("h001", step("updated host cabinet", func(h *host.Host) { h.Cabinet = 5 }))
	require.NoError(t, err)
	lsMatchesHead()
	d.WaitMerges()
	checkRepo(t, dir)
}
