package gitdir_test

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/store/gitdir"
	"mayu/pkg/store/gitdir/internal/gitenc"
)

// TestScanPackOfGit: the merge's pack reader applies deltas itself from the
// objects it read last and asks go-git for bases further back. A pack made
// by `git repack` (deltas against any earlier object, long chains) must
// come out object for object: every payload hashes to the id the index
// gives it.
func TestScanPackOfGit(t *testing.T) {
	dir := t.TempDir()
	git(t, dir, "init", "-q")
	var text strings.Builder
	for i := 0; i < 400; i++ {
		fmt.Fprintf(&text, "line %d of a file that changes a little at every commit\n", i)
	}
	base := text.String()
	for c := 0; c < 60; c++ {
		body := strings.Replace(base, fmt.Sprintf("line %d ", c*5), fmt.Sprintf("LINE %d changed in commit %d ", c*5, c), 1)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "big.txt"), []byte(body), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d.txt", c%7)), []byte(body[:2000+c]), 0o644))
		git(t, dir, "add", "-A")
		git(t, dir, "commit", "-q", "-m", fmt.Sprintf("commit %d", c))
	}
	git(t, dir, "repack", "-a", "-d", "-f", "-q", "--depth=50", "--window=50")
	packDir := filepath.Join(dir, ".git", "objects", "pack")
	packs, err := filepath.Glob(filepath.Join(packDir, "pack-*.pack"))
	require.NoError(t, err)
	require.Len(t, packs, 1)
	name := strings.TrimSuffix(filepath.Base(packs[0]), ".pack")

	// Once with every object inflated, once with the whole blobs and
	// commits raw, as a merge copies them: a raw entry must inflate to its
	// object too.
	for _, inflateAll := range []bool{true, false} {
		n, raws := 0, 0
		want := func(_ plumbing.Hash, kind plumbing.ObjectType) bool { return inflateAll || kind == plumbing.TreeObject }
		err = gitdir.ScanPack(packDir, name, want, func(h plumbing.Hash, kind plumbing.ObjectType, payload, raw []byte) error {
			n++
			if raw != nil {
				raws++
				hd, err := gitenc.ParseEntryHeader(raw)
				if err != nil {
					return err
				}
				zr, err := zlib.NewReader(bytes.NewReader(raw[hd.Len:]))
				if err != nil {
					return err
				}
				if payload, err = io.ReadAll(zr); err != nil {
					return err
				}
			}
			if got := gitenc.HashObject(kind, payload); got != h {
				return fmt.Errorf("object %s (%s) read as %s", h, kind, got)
			}
			return nil
		})
		require.NoError(t, err)
		assert.Equal(t, inflateAll, raws == 0, "raw entries only when asked")
		assert.Contains(t, git(t, dir, "count-objects", "-v"), fmt.Sprintf("\nin-pack: %d\n", n), "every object of the pack read once")
	}
	deltas := git(t, dir, "verify-pack", "-v", packs[0])
	assert.Contains(t, deltas, "chain length = 2", "the pack has delta chains to read")
}
