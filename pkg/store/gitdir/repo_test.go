package gitdir

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSanitize(t *testing.T) {
	assert.Equal(t, "supportgiantswarm.io", sanitizeIdent("support<>giantswarm.io"))
	assert.Equal(t, "a@b", sanitizeIdent(" a@b\n"))
	assert.Equal(t, "s1: updated host overrides: ab", sanitizeMessage("s1: updated host overrides: a\x00b"))
}
