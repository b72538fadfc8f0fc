package gitdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"golang.org/x/sys/unix"

	"mayu/pkg/durable"
	"mayu/pkg/host"
	"mayu/pkg/store"
)

// diskHost is a conf.json read from disk.
type diskHost struct {
	h    host.Host
	data []byte
	blob plumbing.Hash
	st   *unix.Stat_t
}

// load reads the directory and HEAD, commits what differs and rebuilds the
// host table and .git/index. It runs at open, and again when a commit made
// with the git CLI moved HEAD under the store.
func (d *Dir) load() error {
	err := d.loadOnce()
	if errors.Is(err, errReread) {
		err = d.loadOnce()
	}
	return err
}

// errReread asks load to read the directory again.
var errReread = errors.New("store: read the cluster directory again")

func (d *Dir) loadOnce() error {
	if _, err := durable.RemoveTemps(d.dir, tmpPrefix); err != nil {
		return fmt.Errorf("%w: read %s: %w", store.ErrStorage, d.dir, err)
	}
	cl, err := d.readCluster()
	if err != nil {
		return err
	}
	hosts, err := d.readHosts()
	if err != nil {
		return err
	}
	blobs := make(map[string]plumbing.Hash, len(hosts))
	table := store.NewTable()
	for s, dh := range hosts {
		table.Put(dh.h)
		blobs[s] = dh.blob
	}

	if !d.noGit {
		err = d.loadGit(&cl, hosts)
	} else {
		err = d.ensureClusterFile(&cl, nil)
	}
	if err != nil {
		return err
	}
	// Only now, all of it read and committed, does the state change: a
	// reload that fails leaves the store as it was.
	d.blobs = blobs
	d.clusterBlob = blobID(cl.data)
	d.gitStore = cl.file.GitStore

	d.mu.Lock()
	d.hosts = table
	d.cluster = store.Cluster{Config: cl.file.Config}
	d.mu.Unlock()
	return nil
}

// readHosts reads every <serial>/conf.json. A record that does not decode,
// or whose Serial differs from its directory, is logged and left out: the
// daemon still starts, and the file stays for the operator to fix.
func (d *Dir) readHosts() (map[string]*diskHost, error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", store.ErrStorage, d.dir, err)
	}
	hosts := map[string]*diskHost{}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || strings.HasPrefix(name, ".") {
			continue
		}
		if !d.isHostName(name) {
			if _, err := os.Lstat(filepath.Join(d.dir, name, confName)); err == nil {
				d.log.Warn("ignoring host directory whose name is not a normalized serial", "dir", name)
			}
			continue
		}
		if _, err := durable.RemoveTemps(filepath.Join(d.dir, name), tmpPrefix); err != nil {
			d.log.Warn("cannot clean temporary files", "serial", name, "err", err)
		}
		dh, err := d.readHost(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			d.log.Error("ignoring host record that cannot be read", "serial", name, "err", err)
			continue
		}
		hosts[name] = dh
	}
	return hosts, nil
}

func (d *Dir) readHost(serial string) (*diskHost, error) {
	p := filepath.Join(d.dir, serial, confName)
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	h, err := decodeHost(serial, data)
	if err != nil {
		return nil, err
	}
	return &diskHost{h: h, data: data, blob: blobID(data), st: lstat(p)}, nil
}

// decodeHost decodes the conf.json of the host directory serial, which
// must hold that serial.
func decodeHost(serial string, data []byte) (host.Host, error) {
	h, err := host.Unmarshal(data)
	if err == nil && h.Serial != serial {
		err = fmt.Errorf("record has Serial %q, its directory is %q", truncateString(h.Serial, 60), serial)
	}
	return h, err
}

// statIfSame returns the file's stat data when its content is the blob,
// else nil (git will then compare the content itself).
func statIfSame(p string, blob plumbing.Hash) *unix.Stat_t {
	st := lstat(p)
	if st == nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size > 1<<20 {
		return nil
	}
	data, err := os.ReadFile(p)
	if err != nil || blobID(data) != blob {
		return nil
	}
	return st
}

func lstat(p string) *unix.Stat_t {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil
	}
	return &st
}
