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

// diskHost is a conf.json read from disk, or, when the file does not
// read, the last readable copy of it in git (salvage).
type diskHost struct {
	h    host.Host
	data []byte
	blob plumbing.Hash
	st   *unix.Stat_t // nil when unknown or not the file's
	// from is the commit the record was taken from, when the file on
	// disk does not read.
	from plumbing.Hash
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
	hosts, unreadable, err := d.readHosts()
	if err != nil {
		return err
	}
	if !d.noGit {
		err = d.loadGit(&cl, hosts, unreadable)
	} else if s := firstKey(unreadable); s != "" {
		err = d.unreadableError(s, unreadable[s], "with --no-git there is no commit to take it from: fix the file, or restore it from a backup")
	} else {
		err = d.ensureClusterFile(&cl, nil)
	}
	if err != nil {
		return err
	}
	blobs := make(map[string]plumbing.Hash, len(hosts))
	table := store.NewTable()
	for s, dh := range hosts {
		table.Put(dh.h)
		blobs[s] = dh.blob
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

// readHosts reads every <serial>/conf.json. A record that cannot be read
// or decoded, or whose Serial is not its directory's, is returned in
// unreadable (serial -> why) instead: it is taken from git (salvage) or
// the store does not open, and its address, serial and profile slot are
// never handed to another machine.
func (d *Dir) readHosts() (hosts map[string]*diskHost, unreadable map[string]error, err error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: read %s: %w", store.ErrStorage, d.dir, err)
	}
	hosts, unreadable = map[string]*diskHost{}, map[string]error{}
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
			unreadable[name] = err
			continue
		}
		hosts[name] = dh
	}
	return hosts, unreadable, nil
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
// must hold that serial. Mayu 0.11 found a record by its directory, so a
// Serial that differs from the directory's name only in case (0.11 kept
// the case a machine reported) is that record: it is served under the
// directory's name, and written so at its next change.
func decodeHost(serial string, data []byte) (host.Host, error) {
	h, err := host.Unmarshal(data)
	if err != nil {
		return host.Host{}, err
	}
	if h.Serial != serial {
		if !strings.EqualFold(h.Serial, serial) {
			return host.Host{}, fmt.Errorf("record has Serial %q, its directory is %q", truncateString(h.Serial, 60), serial)
		}
		h.Serial = serial
	}
	return h, nil
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
