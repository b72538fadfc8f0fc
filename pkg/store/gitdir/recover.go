package gitdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"golang.org/x/sys/unix"

	"mayu/pkg/durable"
	"mayu/pkg/store"
)

// recoverBulk is the number of changed records found at open above which
// they are committed as one commit instead of one per host: after a long
// --no-git period, thousands of commits would only slow the start.
const recoverBulk = 10

// loadGit opens or initialises the repository, finishes a branch update a
// crash interrupted, commits what differs between the directory and HEAD,
// and rebuilds .git/index. It may complete cl (a missing cluster.json is
// restored) and returns errReread when the directory must be read again.
func (d *Dir) loadGit(cl *clusterOnDisk, hosts map[string]*diskHost, unreadable map[string]error) error {
	hs, err := d.openRepo()
	if err != nil {
		return err
	}
	g := newGitRepo(d.dir, hs, d.log)
	var clusterBlob plumbing.Hash
	if cl.data != nil {
		clusterBlob = blobID(cl.data)
	}
	rolled, err := g.rollForwardRef(hs, d.isHostName, diskBlobs(hosts), clusterBlob)
	if err != nil {
		return fmt.Errorf("%w: finish interrupted branch update: %w", store.ErrStorage, err)
	}
	if rolled {
		// The roll-forward may have written records: read everything
		// again, with the branch now at the batch's head.
		return errReread
	}
	if err := d.salvage(hs, hosts, unreadable); err != nil {
		return err
	}
	g.cleanStale()
	seedIndex(g, hs, d.dir, *cl, hosts)
	if err := d.ensureClusterFile(cl, hs.cluster); err != nil {
		return err
	}
	diff := diffHead(hs, hosts, cl.data)
	if err := d.commitRecovered(g, hs.head.IsZero(), diff, cl.data, hosts); err != nil {
		return err
	}
	indexRecovered(g, hs, diff, cl.st, hosts)
	if err := g.writeIndex(); err != nil {
		// Only a cache of HEAD for git status: the next successful write
		// rewrites it. Failing here would keep mayu from starting on a
		// full disk, where it should serve reads and answer writes 500.
		d.log.Warn("cannot write .git/index; git status shows stale changes until the next commit", "err", err)
	}
	g.cleanSharedIndexes()
	d.adoptRepo(g)
	return nil
}

// openRepo initialises .git when there is none, adds the store's patterns
// to the exclude file of an existing one, and reads HEAD.
func (d *Dir) openRepo() (*headState, error) {
	gitDir := filepath.Join(d.dir, ".git")
	if fi, err := os.Lstat(gitDir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("%w in %s: .git is not a directory", ErrDamagedRepo, d.dir)
	} else if errors.Is(err, fs.ErrNotExist) {
		if err := initGitDir(d.dir); err != nil {
			return nil, fmt.Errorf("%w: initialise git repository: %w", store.ErrStorage, err)
		}
		d.log.Info("initialised git repository")
	} else if err != nil {
		return nil, fmt.Errorf("%w: %w", store.ErrStorage, err)
	} else if err := ensureExclude(gitDir); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", store.ErrStorage, "info/exclude", err)
	}
	return readHead(d.dir, d.isHostName)
}

func diskBlobs(hosts map[string]*diskHost) map[string]plumbing.Hash {
	disk := make(map[string]plumbing.Hash, len(hosts))
	for s, dh := range hosts {
		disk[s] = dh.blob
	}
	return disk
}

// seedIndex fills .git/index with HEAD's entries; those whose file on disk
// matches get its stat data, so git status need not read them.
func seedIndex(g *gitRepo, hs *headState, dir string, cl clusterOnDisk, hosts map[string]*diskHost) {
	for p, e := range hs.files {
		var st *unix.Stat_t
		if p == clusterName && cl.data != nil && blobID(cl.data) == e.Hash {
			st = cl.st
		} else if p != clusterName {
			st = statIfSame(filepath.Join(dir, filepath.FromSlash(p)), e.Hash)
		}
		g.index.Set(p, e.Mode, e.Hash, st)
	}
	for s, blob := range hs.confBlob {
		var st *unix.Stat_t
		if dh, ok := hosts[s]; ok && dh.blob == blob {
			st = dh.st
		}
		g.index.Set(s+"/"+confName, filemode.Regular, blob, st)
	}
}

// headDiff is what the working tree changed against HEAD.
type headDiff struct {
	changed, removed []string // serials, sorted
	clusterDirty     bool
}

func diffHead(hs *headState, hosts map[string]*diskHost, clusterData []byte) headDiff {
	var diff headDiff
	e, ok := hs.files[clusterName]
	diff.clusterDirty = !ok || e.Hash != blobID(clusterData)
	for s, dh := range hosts {
		if hs.confBlob[s] != dh.blob {
			diff.changed = append(diff.changed, s)
		}
	}
	for s := range hs.confBlob {
		if _, ok := hosts[s]; ok {
			continue
		}
		diff.removed = append(diff.removed, s)
	}
	sort.Strings(diff.changed)
	sort.Strings(diff.removed)
	return diff
}

// commitRecovered commits the differences: everything as the initial
// commit of an empty branch, one commit for all past recoverBulk hosts,
// else one commit per file.
func (d *Dir) commitRecovered(g *gitRepo, initial bool, diff headDiff, clusterData []byte, hosts map[string]*diskHost) error {
	tx := g.begin()
	switch {
	case initial:
		tx.stageRootFile(clusterName, clusterData)
		for _, s := range diff.changed {
			tx.stageHost(s, hosts[s].data)
		}
		tx.commit("initial commit")
	case len(diff.changed)+len(diff.removed) > recoverBulk:
		if diff.clusterDirty {
			tx.stageRootFile(clusterName, clusterData)
		}
		for _, s := range diff.changed {
			tx.stageHost(s, hosts[s].data)
		}
		for _, s := range diff.removed {
			tx.stageRemove(s)
		}
		all := append(append([]string(nil), diff.changed...), diff.removed...)
		sort.Strings(all)
		tx.commit(fmt.Sprintf("recovered uncommitted changes of %d hosts\n\n%s", len(all), strings.Join(all, "\n")))
		d.log.Warn("committed changes found in the cluster directory but not in git", "hosts", len(all))
	default:
		if diff.clusterDirty {
			tx.stageRootFile(clusterName, clusterData)
			tx.commit(clusterName + ": recovered uncommitted change")
			d.log.Warn("committed uncommitted change", "file", clusterName)
		}
		for _, s := range diff.changed {
			tx.stageHost(s, hosts[s].data)
			if from := hosts[s].from; !from.IsZero() {
				tx.commit(fmt.Sprintf("%s: restored from %s (%s on disk does not read)", s, from, confName))
				continue
			}
			tx.commit(s + ": recovered uncommitted change")
			d.log.Warn("committed uncommitted change", "serial", s)
		}
		for _, s := range diff.removed {
			tx.stageRemove(s)
			tx.commit(s + ": removed by hand")
			d.log.Warn("committed removal of a host directory", "serial", s)
		}
	}
	if tx.head == tx.oldHead {
		return nil
	}
	b := durable.NewBatch()
	if err := tx.write(b); err != nil {
		b.Abort()
		return fmt.Errorf("%w: commit: %w", store.ErrStorage, err)
	}
	if err := b.Apply(); err != nil {
		return fmt.Errorf("%w: commit: %w", store.ErrStorage, err)
	}
	tx.done()
	return nil
}

// indexRecovered brings .git/index to the recovered commits.
func indexRecovered(g *gitRepo, hs *headState, diff headDiff, clusterSt *unix.Stat_t, hosts map[string]*diskHost) {
	if e, ok := g.root.Get(clusterName); ok {
		g.index.Set(clusterName, e.Mode, e.Hash, clusterSt)
	}
	for _, s := range diff.changed {
		dh := hosts[s]
		g.index.Set(s+"/"+confName, filemode.Regular, dh.blob, dh.st)
	}
	for _, s := range diff.removed {
		g.index.Remove(s + "/" + confName)
		for _, e := range hs.extras[s] {
			for p := range hs.files {
				if strings.HasPrefix(p, s+"/"+e.Name) {
					g.index.Remove(p)
				}
			}
		}
		delete(g.extras, s)
	}
}

// adoptRepo makes g the store's repository, keeping the packs still to
// merge, and starts a merge if enough accumulated.
func (d *Dir) adoptRepo(g *gitRepo) {
	if d.git != nil {
		// A reload: the packs written so far still want merging.
		g.packs = append(d.git.packs, g.packs...)
	} else {
		// The packs an earlier run merged away wait out their grace; the
		// small packs it left unmerged join this run's.
		d.retired = readRetired(g.gitDir)
		g.packs = smallPacks(g.gitDir, g.packs, d.retired)
	}
	d.git = g
	d.maybePack()
}
