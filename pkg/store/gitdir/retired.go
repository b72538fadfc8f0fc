package gitdir

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// A pack merged into another is not deleted at once: it is retired, and
// deleted packGrace later. A stock git command lists the packs when it
// starts and opens each one when it first needs it: `git fsck` verifies
// them one after the other, so a pack deleted between the listing and the
// opening fails it ("packfile ... index not opened"), although every
// object is in the new pack. git itself keeps what it replaced for a
// while (gc.pruneExpire) for the same reason. Once opened, a pack stays
// readable to that process after its deletion.
//
// The retired packs are listed, with the time they were retired, in
// .git/mayu-retired-packs, so that the next start neither merges them
// again nor deletes them before their time. A crash before the list is
// written leaves them to be merged again at the next start: their objects
// are then in two packs, which git and go-git accept.

// packGrace is how long a retired pack stays: longer than any git command
// an operator runs against a cluster directory takes between listing the
// packs and opening them (a `git fsck --full` of a 10,000-host
// directory's packs takes seconds).
var packGrace = 2 * time.Minute

// retiredName is the list of retired packs in .git.
const retiredName = "mayu-retired-packs"

// retiredPack is a pack merged into another, not deleted yet.
type retiredPack struct {
	name string
	at   time.Time // when it was merged away
}

// retirePacks retires the packs called names; under wmu. The list is
// appended to, not rewritten, and not fsynced: it only saves work (a pack
// it misses after a crash is merged again).
func (d *Dir) retirePacks(gitDir string, names []string) {
	now := time.Now()
	var b strings.Builder
	for _, n := range names {
		d.retired = append(d.retired, retiredPack{name: n, at: now})
		fmt.Fprintf(&b, "%s %d\n", n, now.UnixNano())
	}
	if err := appendFile(filepath.Join(gitDir, retiredName), b.String()); err != nil {
		d.log.Warn("cannot write the list of merged packs", "err", err)
	}
	d.sweepPacks(gitDir)
}

// sweepPacks deletes the retired packs past their grace, and rewrites the
// list without them; under wmu. It runs once the oldest is a quarter of
// the grace past it, so that a storm's merges rewrite the list at most
// four times per grace period.
func (d *Dir) sweepPacks(gitDir string) {
	if len(d.retired) == 0 || time.Since(d.retired[0].at) < packGrace+packGrace/4 {
		return
	}
	packDir := filepath.Join(gitDir, "objects", "pack")
	keep := d.retired[:0:0]
	for _, r := range d.retired {
		if time.Since(r.at) < packGrace {
			keep = append(keep, r)
			continue
		}
		// The pack first: an index without its pack is ignored by git
		// and go-git (and removed at the next start), a pack without its
		// index makes go-git fail.
		for _, ext := range []string{".pack", ".idx", ".rev", ".bitmap"} {
			if err := os.Remove(filepath.Join(packDir, r.name+ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				d.log.Warn("cannot delete a merged pack", "pack", r.name+ext, "err", err)
			}
		}
	}
	d.retired = keep
	if err := writeRetired(gitDir, keep); err != nil {
		d.log.Warn("cannot write the list of merged packs", "err", err)
	}
}

// writeRetired replaces the list, oldest first, one "<pack name> <unix
// nanoseconds>" per line.
func writeRetired(gitDir string, retired []retiredPack) error {
	p := filepath.Join(gitDir, retiredName)
	if len(retired) == 0 {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	var b bytes.Buffer
	for _, r := range retired {
		fmt.Fprintf(&b, "%s %d\n", r.name, r.at.UnixNano())
	}
	if err := os.WriteFile(p+".new", b.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(p+".new", p)
}

// readRetired reads the list an earlier run left, keeping the packs that
// are still there. A malformed line is skipped (its pack is merged again).
func readRetired(gitDir string) []retiredPack {
	data, err := os.ReadFile(filepath.Join(gitDir, retiredName))
	if err != nil {
		return nil
	}
	var out []retiredPack
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, at, ok := strings.Cut(sc.Text(), " ")
		ns, err := strconv.ParseInt(at, 10, 64)
		if !ok || err != nil || !strings.HasPrefix(name, "pack-") || strings.ContainsAny(name, `/\`) {
			continue
		}
		if !exists(filepath.Join(gitDir, "objects", "pack", name+".pack")) {
			continue
		}
		out = append(out, retiredPack{name: name, at: time.Unix(0, ns)})
	}
	return out
}
