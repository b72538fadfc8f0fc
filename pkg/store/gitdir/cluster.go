package gitdir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"golang.org/x/sys/unix"

	"mayu/pkg/durable"
	"mayu/pkg/store"
)

// clusterFile is cluster.json as Mayu 0.11 writes it. GitStore says
// whether the directory is a git repository; it belongs to this backend,
// not to store.Cluster, and is written back as it was read, so a directory
// Mayu 0.11 made keeps its bytes.
type clusterFile struct {
	GitStore bool
	Config   store.ClusterConfig
}

// clusterOnDisk is cluster.json as read: its decoded content, its bytes
// (nil when there is no file) and its stat data (nil if unknown).
type clusterOnDisk struct {
	file clusterFile
	data []byte
	st   *unix.Stat_t
}

func marshalCluster(c clusterFile) ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("store: encode %s: %w", clusterName, err)
	}
	return append(b, '\n'), nil
}

// readCluster reads cluster.json; a missing one yields the defaults (and
// nil data). A malformed one is an error: it holds the cluster's etcd
// token, which must not be silently replaced.
func (d *Dir) readCluster() (clusterOnDisk, error) {
	p := filepath.Join(d.dir, clusterName)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return clusterOnDisk{file: clusterFile{GitStore: !d.noGit}}, nil
	}
	if err != nil {
		return clusterOnDisk{}, fmt.Errorf("%w: read %s: %w", store.ErrStorage, p, err)
	}
	var c clusterFile
	if err := json.Unmarshal(data, &c); err != nil {
		return clusterOnDisk{}, fmt.Errorf("%w: decode %s: %w", store.ErrStorage, p, err)
	}
	return clusterOnDisk{file: c, data: data, st: lstat(p)}, nil
}

// ensureClusterFile makes sure cluster.json exists: a missing one is
// restored from HEAD's copy (headData, nil if none), which holds the
// cluster's etcd token, else written with the defaults.
func (d *Dir) ensureClusterFile(cl *clusterOnDisk, headData []byte) error {
	if cl.data != nil {
		return nil
	}
	p := filepath.Join(d.dir, clusterName)
	data := headData
	if data != nil {
		if err := json.Unmarshal(data, &cl.file); err != nil {
			return fmt.Errorf("%w: decode %s of HEAD: %w", store.ErrStorage, clusterName, err)
		}
	} else {
		var err error
		if data, err = marshalCluster(cl.file); err != nil {
			return err
		}
	}
	if err := durable.WriteFile(p, data, 0o644, tmpPrefix); err != nil {
		return fmt.Errorf("%w: write %s: %w", store.ErrStorage, clusterName, err)
	}
	if headData != nil {
		d.log.Warn("cluster.json was missing; restored it from git HEAD")
	}
	cl.data, cl.st = data, lstat(p)
	return nil
}

// UpdateCluster implements store.Store. message is committed verbatim.
func (d *Dir) UpdateCluster(message string, apply func(c *store.Cluster) error) (store.Cluster, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	for attempt := 0; ; attempt++ {
		d.mu.RLock()
		cur := d.cluster
		d.mu.RUnlock()
		if err := d.usable(); err != nil {
			return cur, err
		}
		c := cur
		if err := apply(&c); err != nil {
			return cur, err
		}
		if c == cur {
			return c, nil
		}
		data, err := marshalCluster(clusterFile{GitStore: d.gitStore, Config: c.Config})
		if err != nil {
			return cur, err
		}
		err = d.persistCluster(data, message)
		if errors.Is(err, errHeadMoved) && attempt < 3 {
			if err := d.reloadAfterMove(err); err != nil {
				return cur, err
			}
			continue
		}
		if err != nil {
			return cur, err
		}
		d.mu.Lock()
		d.cluster = c
		d.mu.Unlock()
		return c, nil
	}
}

// persistCluster writes cluster.json and its commit as one batch. It
// returns errHeadMoved, unwrapped, when a commit made with the git CLI
// moved HEAD meanwhile; on any failure the file is as it was.
func (d *Dir) persistCluster(data []byte, message string) error {
	p := filepath.Join(d.dir, clusterName)
	oldData, _ := os.ReadFile(p)
	fail := func(err error) error { return fmt.Errorf("%w: %s: %w", store.ErrStorage, clusterName, err) }
	b := durable.NewBatch()
	var tx *gitTx
	if d.git != nil {
		tx = d.git.begin()
		tx.stageRootFile(clusterName, data)
		tx.commit(sanitizeMessage(message))
	}
	if err := b.AddLate(p, tmpPrefix, data, 0o644); err != nil {
		b.Abort()
		if tx != nil {
			tx.rollback()
		}
		return fail(err)
	}
	if tx != nil {
		if err := tx.write(b); err != nil {
			b.Abort()
			tx.rollback()
			if errors.Is(err, errHeadMoved) {
				return err
			}
			return fail(err)
		}
	}
	if err := b.Apply(); err != nil {
		if !b.Landed() {
			if tx != nil {
				tx.rollback()
			}
			if oldData != nil && b.Renamed(p) {
				_ = durable.WriteFile(p, oldData, 0o644, tmpPrefix)
			}
			return fail(err)
		}
		d.log.Error("fsync of a directory failed after commit", "file", clusterName, "err", err)
	}
	d.clusterBlob = blobID(data)
	if tx != nil {
		tx.done()
		d.git.index.Set(clusterName, filemode.Regular, blobID(data), lstat(p))
		d.writeGitIndex()
		d.maybePack()
	}
	return nil
}
