package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"golang.org/x/sys/unix"

	"mayu/pkg/host"
)

// File names inside the cluster directory.
const (
	clusterName = "cluster.json"
	confName    = "conf.json"
)

// recoverBulk is the number of changed records found at open above which
// they are committed as one commit instead of one per host: after a long
// --no-git period, thousands of commits would only slow the start.
const recoverBulk = 10

// DirOptions configures OpenDir.
type DirOptions struct {
	// NoGit writes the files without commits (mayu --no-git).
	NoGit bool
	// Logger receives warnings (recovered changes, ignored hand edits).
	// Nil discards them.
	Logger *slog.Logger
	// Watch picks up an operator's edits of <serial>/conf.json without a
	// restart (fsnotify), and commits them.
	Watch bool
}

// Dir is the Store over a Mayu cluster directory: cluster.json and
// <serial>/conf.json files, committed to git.
//
// Mutations are group-committed (groupcommit.go): the requests that arrive
// while a batch is being made durable are applied in arrival order and
// written together, sharing one fsync round and one branch update, with
// still one commit per step. Batches are serialised by wmu; the records
// served to readers live in an in-memory index guarded by mu, which a batch
// holds only to swap in the new records. Readers therefore never wait for
// disk or git, and never see a record before it is durable.
type Dir struct {
	dir   string
	noGit bool
	log   *slog.Logger

	wmu   sync.Mutex
	git   *gitRepo                 // nil with NoGit
	blobs map[string]plumbing.Hash // serial -> blob id of its conf.json on disk
	// clusterBlob is the blob id of cluster.json on disk.
	clusterBlob plumbing.Hash
	closed      bool

	mu      sync.RWMutex
	ix      *index
	cluster Cluster

	notes   notifier
	watcher *dirWatcher

	// The group commit's queue (groupcommit.go): requests waiting for
	// the batch in progress, and whether a leader is writing one.
	qmu     sync.Mutex
	queue   []*writeReq
	leading bool

	packing   atomic.Bool // a background pack is being written
	packWG    sync.WaitGroup
	closeOnce sync.Once
}

// OpenDir opens the cluster directory dir, creating and initialising it if
// needed. A directory written by Mayu 0.11 opens as it is: its files are not
// rewritten and its git history is kept, new commits are appended. Changes
// found on disk but not in HEAD (a crash between writing a file and
// committing it, or edits made while mayu was stopped) are committed and
// logged. A .git that cannot be read is an error wrapping ErrDamagedRepo.
func OpenDir(dir string, opts DirOptions) (*Dir, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "store", "dir", dir)
	d := &Dir{dir: dir, noGit: opts.NoGit, log: log}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: create cluster directory: %w", ErrStorage, err)
	}
	if err := d.load(); err != nil {
		return nil, err
	}
	if opts.Watch {
		w, err := newDirWatcher(d)
		if err != nil {
			return nil, fmt.Errorf("%w: watch %s: %w", ErrStorage, dir, err)
		}
		d.watcher = w
	}
	return d, nil
}

// diskHost is a conf.json read from disk.
type diskHost struct {
	h    host.Host
	data []byte
	blob plumbing.Hash
	st   *unix.Stat_t
}

// load reads the directory and HEAD, commits what differs and rebuilds the
// index and .git/index. It runs at open, and again when a commit made with
// the git CLI moved HEAD under the store.
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
	if _, err := removeTemps(d.dir, tmpPrefix); err != nil {
		return fmt.Errorf("%w: read %s: %w", ErrStorage, d.dir, err)
	}
	cluster, clusterData, clusterSt, err := d.readCluster()
	if err != nil {
		return err
	}
	hosts, err := d.readHosts()
	if err != nil {
		return err
	}
	blobs := make(map[string]plumbing.Hash, len(hosts))
	ix := newIndex()
	for s, dh := range hosts {
		ix.put(dh.h)
		blobs[s] = dh.blob
	}

	if !d.noGit {
		if cluster, clusterData, err = d.loadGit(cluster, clusterData, clusterSt, hosts); err != nil {
			return err
		}
	} else if clusterData == nil {
		data, err := marshalCluster(cluster)
		if err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(d.dir, clusterName), data, 0o644); err != nil {
			return fmt.Errorf("%w: write %s: %w", ErrStorage, clusterName, err)
		}
		clusterData = data
	}
	// Only now, all of it read and committed, does the state change: a
	// reload that fails leaves the store as it was.
	d.blobs = blobs
	d.clusterBlob = blobID(clusterData)

	d.mu.Lock()
	d.ix = ix
	d.cluster = cluster
	d.mu.Unlock()
	return nil
}

// readCluster reads cluster.json; a missing one yields the defaults (and
// nil data). A malformed one is an error: it holds the cluster's etcd
// token, which must not be silently replaced.
func (d *Dir) readCluster() (Cluster, []byte, *unix.Stat_t, error) {
	p := filepath.Join(d.dir, clusterName)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Cluster{GitStore: !d.noGit}, nil, nil, nil
	}
	if err != nil {
		return Cluster{}, nil, nil, fmt.Errorf("%w: read %s: %w", ErrStorage, p, err)
	}
	var c Cluster
	if err := json.Unmarshal(data, &c); err != nil {
		return Cluster{}, nil, nil, fmt.Errorf("%w: decode %s: %w", ErrStorage, p, err)
	}
	return c, data, lstat(p), nil
}

// readHosts reads every <serial>/conf.json. A record that does not decode,
// or whose Serial differs from its directory, is logged and left out: the
// daemon still starts, and the file stays for the operator to fix.
func (d *Dir) readHosts() (map[string]*diskHost, error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrStorage, d.dir, err)
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
		if _, err := removeTemps(filepath.Join(d.dir, name), tmpPrefix); err != nil {
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
	h, err := host.Unmarshal(data)
	if err != nil {
		return nil, err
	}
	if h.Serial != serial {
		return nil, fmt.Errorf("record has Serial %q, its directory is %q", truncateString(h.Serial, 60), serial)
	}
	return &diskHost{h: h, data: data, blob: blobID(data), st: lstat(p)}, nil
}

// isHostName tells whether a top-level directory name is a host's: a
// normalized serial. Dot directories (.git, .discovery) never are.
func (d *Dir) isHostName(name string) bool {
	n, err := host.NormalizeSerial(name)
	return err == nil && n == name && name != clusterName
}

// checkSerial defends the path: the API normalizes serials, but a serial
// becomes a directory name here, so it is checked again.
func checkSerial(serial string) error {
	n, err := host.NormalizeSerial(serial)
	if err != nil {
		return err
	}
	if n != serial {
		return fmt.Errorf("%w %q: not normalized (want %q)", host.ErrInvalidSerial, truncateString(serial, 60), n)
	}
	if serial == clusterName {
		return fmt.Errorf("%w %q: reserved name in the cluster directory", host.ErrInvalidSerial, serial)
	}
	return nil
}

// loadGit opens or initialises the repository, commits what differs
// between the directory and HEAD, and rebuilds .git/index.
func (d *Dir) loadGit(cluster Cluster, clusterData []byte, clusterSt *unix.Stat_t, hosts map[string]*diskHost) (Cluster, []byte, error) {
	gitDir := filepath.Join(d.dir, ".git")
	if fi, err := os.Lstat(gitDir); err == nil && !fi.IsDir() {
		return Cluster{}, nil, fmt.Errorf("%w in %s: .git is not a directory", ErrDamagedRepo, d.dir)
	} else if errors.Is(err, fs.ErrNotExist) {
		if err := initGitDir(d.dir); err != nil {
			return Cluster{}, nil, fmt.Errorf("%w: initialise git repository: %w", ErrStorage, err)
		}
		d.log.Info("initialised git repository")
	} else if err != nil {
		return Cluster{}, nil, fmt.Errorf("%w: %w", ErrStorage, err)
	} else if err := ensureExclude(gitDir); err != nil {
		return Cluster{}, nil, fmt.Errorf("%w: %s: %w", ErrStorage, "info/exclude", err)
	}
	hs, err := readHead(d.dir, d.isHostName)
	if err != nil {
		return Cluster{}, nil, err
	}
	g := newGitRepo(d.dir, hs, d.log)
	disk := make(map[string]plumbing.Hash, len(hosts))
	for s, dh := range hosts {
		disk[s] = dh.blob
	}
	var clusterBlob plumbing.Hash
	if clusterData != nil {
		clusterBlob = blobID(clusterData)
	}
	rolled, err := g.rollForwardRef(hs, d.isHostName, disk, clusterBlob)
	if err != nil {
		return Cluster{}, nil, fmt.Errorf("%w: finish interrupted branch update: %w", ErrStorage, err)
	}
	if rolled {
		// The roll-forward may have written records: read everything
		// again, with the branch now at the batch's head.
		return Cluster{}, nil, errReread
	}
	g.cleanStale()

	// The index starts as HEAD; entries whose file matches get stat data.
	for p, e := range hs.files {
		var st *unix.Stat_t
		if p == clusterName && clusterData != nil && blobID(clusterData) == e.hash {
			st = clusterSt
		} else if p != clusterName {
			st = statIfSame(filepath.Join(d.dir, filepath.FromSlash(p)), e.hash)
		}
		g.index.set(p, e.mode, e.hash, st)
	}
	for s, blob := range hs.confBlob {
		var st *unix.Stat_t
		if dh, ok := hosts[s]; ok && dh.blob == blob {
			st = dh.st
		}
		g.index.set(s+"/"+confName, filemode.Regular, blob, st)
	}

	// What differs from HEAD.
	if clusterData == nil && hs.cluster != nil {
		// Deleted by hand: HEAD's holds the cluster's etcd token.
		if err := json.Unmarshal(hs.cluster, &cluster); err != nil {
			return Cluster{}, nil, fmt.Errorf("%w: decode %s of HEAD: %w", ErrStorage, clusterName, err)
		}
		if err := writeFileAtomic(filepath.Join(d.dir, clusterName), hs.cluster, 0o644); err != nil {
			return Cluster{}, nil, fmt.Errorf("%w: write %s: %w", ErrStorage, clusterName, err)
		}
		clusterData, clusterSt = hs.cluster, lstat(filepath.Join(d.dir, clusterName))
		d.log.Warn("cluster.json was missing; restored it from git HEAD")
	}
	if clusterData == nil {
		if clusterData, err = marshalCluster(cluster); err != nil {
			return Cluster{}, nil, err
		}
		if err := writeFileAtomic(filepath.Join(d.dir, clusterName), clusterData, 0o644); err != nil {
			return Cluster{}, nil, fmt.Errorf("%w: write %s: %w", ErrStorage, clusterName, err)
		}
		clusterSt = lstat(filepath.Join(d.dir, clusterName))
	}
	clusterDirty := true
	if e, ok := hs.files[clusterName]; ok && e.hash == blobID(clusterData) {
		clusterDirty = false
	}
	var changed, removed []string
	for s, dh := range hosts {
		if hs.confBlob[s] != dh.blob {
			changed = append(changed, s)
		}
	}
	for s := range hs.confBlob {
		if _, ok := hosts[s]; ok {
			continue
		}
		if _, err := os.Lstat(filepath.Join(d.dir, s, confName)); err == nil {
			// Present but unreadable: keep HEAD's version (git status
			// shows the operator the broken file).
			continue
		}
		removed = append(removed, s)
	}
	sort.Strings(changed)
	sort.Strings(removed)

	tx := g.begin()
	stageHost := func(s string) {
		dh := hosts[s]
		tx.stageHost(s, dh.data)
	}
	switch {
	case hs.head.IsZero():
		tx.stageRootFile(clusterName, clusterData)
		for _, s := range changed {
			stageHost(s)
		}
		tx.commit("initial commit")
	case len(changed)+len(removed) > recoverBulk:
		if clusterDirty {
			tx.stageRootFile(clusterName, clusterData)
		}
		for _, s := range changed {
			stageHost(s)
		}
		for _, s := range removed {
			tx.stageRemove(s)
		}
		all := append(append([]string(nil), changed...), removed...)
		sort.Strings(all)
		tx.commit(fmt.Sprintf("recovered uncommitted changes of %d hosts\n\n%s", len(all), strings.Join(all, "\n")))
		d.log.Warn("committed changes found in the cluster directory but not in git", "hosts", len(all))
	default:
		if clusterDirty {
			tx.stageRootFile(clusterName, clusterData)
			tx.commit(clusterName + ": recovered uncommitted change")
			d.log.Warn("committed uncommitted change", "file", clusterName)
		}
		for _, s := range changed {
			stageHost(s)
			tx.commit(s + ": recovered uncommitted change")
			d.log.Warn("committed uncommitted change", "serial", s)
		}
		for _, s := range removed {
			tx.stageRemove(s)
			tx.commit(s + ": removed by hand")
			d.log.Warn("committed removal of a host directory", "serial", s)
		}
	}
	if tx.head != tx.oldHead {
		b := newWriteBatch()
		if err := tx.write(b); err != nil {
			b.abort()
			return Cluster{}, nil, fmt.Errorf("%w: commit: %w", ErrStorage, err)
		}
		if err := b.apply(); err != nil {
			return Cluster{}, nil, fmt.Errorf("%w: commit: %w", ErrStorage, err)
		}
		tx.done()
	}
	if e, ok := g.root.get(clusterName); ok {
		g.index.set(clusterName, e.mode, e.hash, clusterSt)
	}
	for _, s := range changed {
		dh := hosts[s]
		g.index.set(s+"/"+confName, filemode.Regular, dh.blob, dh.st)
	}
	for _, s := range removed {
		g.index.remove(s + "/" + confName)
		for _, e := range hs.extras[s] {
			for p := range hs.files {
				if strings.HasPrefix(p, s+"/"+e.name) {
					g.index.remove(p)
				}
			}
		}
		delete(g.extras, s)
	}
	if err := g.writeIndex(); err != nil {
		// Only a cache of HEAD for git status: the next successful write
		// rewrites it. Failing here would keep mayu from starting on a
		// full disk, where it should serve reads and answer writes 500.
		d.log.Warn("cannot write .git/index; git status shows stale changes until the next commit", "err", err)
	}
	g.cleanSharedIndexes()
	if d.git != nil {
		// A reload: the packs written so far still want merging.
		g.packs = append(d.git.packs, g.packs...)
	} else {
		// The small packs an earlier run left unmerged join this run's.
		g.packs = smallPacks(g.gitDir, g.packs)
	}
	d.git = g
	d.maybePack()
	return cluster, clusterData, nil
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

func marshalCluster(c Cluster) ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("store: encode %s: %w", clusterName, err)
	}
	return append(b, '\n'), nil
}

// Get implements Store.
func (d *Dir) Get(serial string) (host.Host, error) {
	if err := checkSerial(serial); err != nil {
		return host.Host{}, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	h, ok := d.ix.get(serial)
	if !ok {
		return host.Host{}, fmt.Errorf("%w: %s", ErrNotFound, serial)
	}
	return h.Clone(), nil
}

// ByMAC implements Store.
func (d *Dir) ByMAC(mac string) (host.Host, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	h, ok := d.ix.byMACAddr(mac)
	if !ok {
		return host.Host{}, fmt.Errorf("%w: mac %s", ErrNotFound, mac)
	}
	return h.Clone(), nil
}

// ByIP implements Store.
func (d *Dir) ByIP(ip net.IP) (host.Host, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	h, ok := d.ix.byIPAddr(ip)
	if !ok {
		return host.Host{}, fmt.Errorf("%w: ip %s", ErrNotFound, ip)
	}
	return h.Clone(), nil
}

// List implements Store.
func (d *Dir) List() []host.Host {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.ix.list()
}

// ProfileCount implements Store.
func (d *Dir) ProfileCount(profile string) int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.ix.profiles[profile]
}

// Cluster implements Store.
func (d *Dir) Cluster() Cluster {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cluster
}

// Create implements Store.
func (d *Dir) Create(serial string, steps ...Step) (host.Host, error) {
	return d.mutate(serial, true, steps)
}

// Update implements Store.
func (d *Dir) Update(serial string, steps ...Step) (host.Host, error) {
	return d.mutate(serial, false, steps)
}

// restore puts the previous conf.json back after a failed batch that may
// already have renamed the new one into place, so the file never holds a
// record the caller was told did not persist.
func (d *Dir) restore(confPath string, oldData []byte, create, newDir bool, b *writeBatch) {
	renamed := false
	for _, f := range b.files {
		if f.final == confPath && f.renamed {
			renamed = true
		}
	}
	if !renamed {
		return
	}
	if create {
		_ = os.Remove(confPath)
		if newDir {
			_ = os.Remove(filepath.Dir(confPath))
		}
		return
	}
	if oldData != nil {
		if err := writeFileAtomic(confPath, oldData, 0o644); err != nil {
			d.log.Error("cannot restore record after failed commit; it is committed at next start", "path", confPath, "err", err)
		}
	}
}

// reloadAfterMove re-reads everything after the branch moved under the
// store (an operator committed with the git CLI).
func (d *Dir) reloadAfterMove(cause error) error {
	d.log.Warn("git HEAD changed outside mayu; reloading the cluster directory", "cause", cause)
	if err := d.load(); err != nil {
		return err
	}
	d.notes.notify()
	return nil
}

// UpdateCluster implements Store. message is committed verbatim.
func (d *Dir) UpdateCluster(message string, apply func(c *Cluster) error) (Cluster, error) {
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
		data, err := marshalCluster(c)
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

func (d *Dir) persistCluster(data []byte, message string) error {
	p := filepath.Join(d.dir, clusterName)
	oldData, _ := os.ReadFile(p)
	fail := func(err error) error { return fmt.Errorf("%w: %s: %w", ErrStorage, clusterName, err) }
	b := newWriteBatch()
	var tx *gitTx
	if d.git != nil {
		tx = d.git.begin()
		tx.stageRootFile(clusterName, data)
		tx.commit(sanitizeMessage(message))
	}
	if err := b.addLate(p, tmpPrefix, data, 0o644); err != nil {
		b.abort()
		if tx != nil {
			tx.rollback()
		}
		return fail(err)
	}
	if tx != nil {
		if err := tx.write(b); err != nil {
			b.abort()
			tx.rollback()
			if errors.Is(err, errHeadMoved) {
				return err
			}
			return fail(err)
		}
	}
	if err := b.apply(); err != nil {
		if !b.landed() {
			if tx != nil {
				tx.rollback()
			}
			if oldData != nil && b.files[0].renamed {
				_ = writeFileAtomic(p, oldData, 0o644)
			}
			return fail(err)
		}
		d.log.Error("fsync of a directory failed after commit", "file", clusterName, "err", err)
	}
	d.clusterBlob = blobID(data)
	if tx != nil {
		tx.done()
		d.git.index.set(clusterName, filemode.Regular, blobID(data), lstat(p))
		d.writeGitIndex()
		d.maybePack()
	}
	return nil
}

// Subscribe implements Store.
func (d *Dir) Subscribe(fn func()) { d.notes.subscribe(fn) }

// Close stops the watcher and waits for a background pack to finish.
// Mutations after Close fail with ErrStorage. Closing twice is harmless.
func (d *Dir) Close() error {
	var err error
	d.closeOnce.Do(func() {
		if d.watcher != nil {
			err = d.watcher.close()
		}
		d.wmu.Lock()
		d.closed = true
		d.wmu.Unlock()
		d.packWG.Wait()
		d.notes.close()
	})
	return err
}

// Path returns the cluster directory.
func (d *Dir) Path() string { return d.dir }

var _ Store = (*Dir)(nil)
