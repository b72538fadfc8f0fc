package gitdir

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// ErrUnreadableRecord is returned by Open when a <serial>/conf.json cannot
// be read or decoded and git has no readable copy of it (or the store
// runs with NoGit). The store does not open rather than forget the
// record: its address, serial and profile slot would go to another
// machine, and an installed machine, its MACs no longer ignored by DHCP,
// would PXE-boot and be installed again.
var ErrUnreadableRecord = errors.New("store: unreadable host record")

// maxSalvageCommits bounds the history walked for a readable copy of a
// record whose copy in HEAD does not read either (an operator committed
// the broken file).
const maxSalvageCommits = 10000

// salvage puts into hosts, for every record on disk that does not read,
// its last readable copy in git, HEAD's first, and logs it. The file on
// disk is left as it is, for the operator (git diff shows what was
// changed); the store's next write of the host replaces it with the
// record served. A record git has no readable copy of is
// ErrUnreadableRecord.
func (d *Dir) salvage(hs *headState, hosts map[string]*diskHost, unreadable map[string]error) error {
	var repo *git.Repository
	for _, serial := range sortedKeys(unreadable) {
		cause := unreadable[serial]
		if hs.confBlob[serial].IsZero() {
			return d.unreadableError(serial, cause, "no commit holds it: fix the file")
		}
		if repo == nil {
			var err error
			if repo, err = git.PlainOpen(d.dir); err != nil {
				return fmt.Errorf("%w in %s: %v", ErrDamagedRepo, d.dir, err)
			}
		}
		data, from, err := lastReadable(repo, hs.head, serial)
		if err != nil {
			return d.unreadableError(serial, cause, fmt.Sprintf("no readable copy in the last %d commits (%v): fix the file", maxSalvageCommits, err))
		}
		h, _ := decodeHost(serial, data) // it decoded in lastReadable
		hosts[serial] = &diskHost{h: h, data: data, blob: blobID(data), from: from}
		d.log.Warn("host record on disk cannot be read; serving its last committed copy instead",
			"serial", serial, "file", filepath.Join(d.dir, serial, confName), "err", cause, "commit", from.String(),
			"fix", fmt.Sprintf("fix the file, or take the committed copy back with: git -C %s checkout %s -- %s/%s "+
				"(until then the committed copy is served, and the next change of this host rewrites the file)",
				d.dir, from, serial, confName))
	}
	return nil
}

// lastReadable walks the first-parent history from head for the newest
// conf.json of serial that decodes, and returns it with its commit.
func lastReadable(repo *git.Repository, head plumbing.Hash, serial string) ([]byte, plumbing.Hash, error) {
	path := serial + "/" + confName
	tried := map[plumbing.Hash]bool{}
	c, err := repo.CommitObject(head)
	for i := 0; err == nil && i < maxSalvageCommits; i++ {
		f, ferr := c.File(path)
		if errors.Is(ferr, object.ErrFileNotFound) {
			// Older commits are from before the record existed.
			return nil, plumbing.ZeroHash, fmt.Errorf("%s is not in commit %s", path, c.Hash)
		}
		if ferr != nil {
			return nil, plumbing.ZeroHash, ferr
		}
		if !tried[f.Hash] {
			tried[f.Hash] = true
			if data, err := blobBytes(f); err == nil {
				if _, err := decodeHost(serial, data); err == nil {
					return data, c.Hash, nil
				}
			}
		}
		if c.NumParents() == 0 {
			return nil, plumbing.ZeroHash, fmt.Errorf("no commit before %s", c.Hash)
		}
		c, err = c.Parent(0)
	}
	if err == nil {
		err = errors.New("history walk stopped")
	}
	return nil, plumbing.ZeroHash, err
}

func blobBytes(f *object.File) ([]byte, error) {
	r, err := f.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(io.LimitReader(r, 1<<20))
}

// unreadableError names the file that keeps the store from opening, why,
// and the fix.
func (d *Dir) unreadableError(serial string, cause error, fix string) error {
	return fmt.Errorf("%w %s: %v; mayu does not start without it, so that its address, serial and profile are not given to another machine; %s "+
		"(a JSON host record whose Serial is %q), then start mayu again",
		ErrUnreadableRecord, filepath.Join(d.dir, serial, confName), cause, fix, serial)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// firstKey returns the smallest key of m, "" when m is empty.
func firstKey[V any](m map[string]V) string {
	if keys := sortedKeys(m); len(keys) > 0 {
		return keys[0]
	}
	return ""
}
