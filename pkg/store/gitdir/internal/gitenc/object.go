package gitenc

import (
	"bytes"
	"crypto/sha1"
	"fmt"
	"strconv"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
)

// HashObject returns the object id of a payload. crypto/sha1 gives the same
// ids as git's collision-detecting SHA-1 for every real input and is several
// times faster.
func HashObject(kind plumbing.ObjectType, payload []byte) plumbing.Hash {
	h := sha1.New()
	h.Write(objectHeader(kind, len(payload)))
	h.Write(payload)
	var id plumbing.Hash
	h.Sum(id[:0])
	return id
}

func objectHeader(kind plumbing.ObjectType, n int) []byte {
	b := make([]byte, 0, 16)
	b = append(b, kind.String()...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, 0)
}

// BlobID is the object id of file content.
func BlobID(data []byte) plumbing.Hash { return HashObject(plumbing.BlobObject, data) }

// FormatWhen formats t as a commit header does: Unix seconds and the
// zone offset, "1700000000 +0100".
func FormatWhen(t time.Time) string {
	_, off := t.Zone()
	sign := '+'
	if off < 0 {
		sign = '-'
		off = -off
	}
	return fmt.Sprintf("%d %c%02d%02d", t.Unix(), sign, off/3600, (off%3600)/60)
}

// CommitTree returns the tree a commit payload names.
func CommitTree(payload []byte) (plumbing.Hash, bool) {
	line, _, _ := bytes.Cut(payload, []byte{'\n'})
	hex, ok := bytes.CutPrefix(line, []byte("tree "))
	if !ok || !plumbing.IsHash(string(hex)) {
		return plumbing.ZeroHash, false
	}
	return plumbing.NewHash(string(hex)), true
}
