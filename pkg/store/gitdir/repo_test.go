package gitdir

import (
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSanitize(t *testing.T) {
	assert.Equal(t, "supportgiantswarm.io", sanitizeIdent("support<>giantswarm.io"))
	assert.Equal(t, "a@b", sanitizeIdent(" a@b\n"))
	assert.Equal(t, "s1: updated host overrides: ab", sanitizeMessage("s1: updated host overrides: a\x00b"))
}

// TestEncodeCommit pins the commit encoding: the ids of the commits the
// store makes depend on every byte (git's own layout, as Mayu 0.11's git
// CLI wrote it).
func TestEncodeCommit(t *testing.T) {
	tree := plumbing.NewHash("4b825dc642cb6eb9a060e54bf8d69288fbee4904")
	parent := plumbing.NewHash("0123456789abcdef0123456789abcdef01234567")
	when := time.Unix(1470757742, 0).In(time.FixedZone("CEST", 2*3600))
	got, err := encodeCommit(tree, parent, "mayu@localhost", when, "s1: updated host state to installing")
	require.NoError(t, err)
	assert.Equal(t, "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n"+
		"parent 0123456789abcdef0123456789abcdef01234567\n"+
		"author mayu commiter <mayu@localhost> 1470757742 +0200\n"+
		"committer mayu commiter <mayu@localhost> 1470757742 +0200\n"+
		"\n"+
		"s1: updated host state to installing\n", string(got))

	got, err = encodeCommit(tree, plumbing.ZeroHash, "a@b", time.Unix(0, 0).UTC(), "initial commit\n")
	require.NoError(t, err)
	assert.Equal(t, "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n"+
		"author mayu commiter <a@b> 0 +0000\n"+
		"committer mayu commiter <a@b> 0 +0000\n"+
		"\n"+
		"initial commit\n", string(got), "no parent line for a root commit; a final newline is not doubled")
}
