package gitdir

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"mayu/pkg/host"
	"mayu/pkg/store"
)

// File names inside the cluster directory.
const (
	clusterName = "cluster.json"
	confName    = "conf.json"
)

// tmpPrefix starts the name of every temporary file the store creates in
// the working tree. It is listed in .git/info/exclude, so a temp file left
// by a crash never shows in `git status`, and Open removes leftovers.
const tmpPrefix = ".mayu-tmp-"

// Options configures Open.
type Options struct {
	// NoGit writes the files without commits (mayu --no-git).
	NoGit bool
	// Logger receives warnings (recovered changes, ignored hand edits).
	// Nil discards them.
	Logger *slog.Logger
	// Watch picks up an operator's edits of <serial>/conf.json without a
	// restart (fsnotify), and commits them.
	Watch bool
	// OnBatch, if set, is called after each group commit (see Dir) with
	// the number of write requests it took (1 to maxBatch) and how long
	// applying and persisting them took (fsyncs and the branch update
	// included). It runs on the writing goroutine: keep it cheap.
	OnBatch func(requests int, took time.Duration)
}

// Dir is the store.Store over a Mayu cluster directory: cluster.json and
// <serial>/conf.json files, committed to git.
//
// Mutations are group-committed (groupcommit.go): the requests that arrive
// while a batch is being made durable are applied in arrival order and
// written together, sharing one fsync round and one branch update, with
// still one commit per step. Batches are serialised by wmu; the records
// served to readers live in an in-memory table guarded by mu, which a
// batch holds only to swap in the new records. Readers therefore never
// wait for disk or git, and never see a record before it is durable.
type Dir struct {
	dir     string
	noGit   bool
	log     *slog.Logger
	onBatch func(requests int, took time.Duration)

	wmu   sync.Mutex
	git   *gitRepo                 // nil with NoGit
	blobs map[string]plumbing.Hash // serial -> blob id of its conf.json on disk
	// clusterBlob is the blob id of cluster.json on disk.
	clusterBlob plumbing.Hash
	// gitStore is cluster.json's GitStore field as read, written back
	// unchanged (see clusterFile).
	gitStore bool
	closed   bool

	mu      sync.RWMutex
	hosts   *store.Table
	cluster store.Cluster
	// leases are the reservations of new records (Reserve), guarded by
	// mu like the table they are counted against.
	leases *store.Leases

	notes   store.Notifier
	watcher *dirWatcher

	// The group commit's queue (groupcommit.go): requests waiting for
	// the batch in progress, and whether a leader is writing one.
	qmu     sync.Mutex
	queue   []*writeReq
	leading bool

	// retired lists the packs merged into another and not deleted yet
	// (retired.go), under wmu.
	retired   []retiredPack
	packing   atomic.Bool // a background pack merge is running
	packWG    sync.WaitGroup
	closeOnce sync.Once
}

// Open opens the cluster directory dir, creating and initialising it if
// needed. A directory written by Mayu 0.11 opens as it is: its files are not
// rewritten and its git history is kept, new commits are appended. Changes
// found on disk but not in HEAD (a crash between writing a file and
// committing it, or edits made while mayu was stopped) are committed and
// logged. A .git that cannot be read is an error wrapping ErrDamagedRepo;
// other failures wrap store.ErrStorage.
func Open(dir string, opts Options) (*Dir, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "store", "dir", dir)
	d := &Dir{dir: dir, noGit: opts.NoGit, log: log, onBatch: opts.OnBatch}
	d.leases = store.NewLeases(&d.mu, func(l *store.Lease, steps []store.Step) (host.Host, error) {
		return d.mutate(l.Serial(), true, steps, l)
	})
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: create cluster directory: %w", store.ErrStorage, err)
	}
	if err := d.load(); err != nil {
		return nil, err
	}
	if opts.Watch {
		w, err := newDirWatcher(d)
		if err != nil {
			return nil, fmt.Errorf("%w: watch %s: %w", store.ErrStorage, dir, err)
		}
		d.watcher = w
	}
	return d, nil
}

// Get implements store.Store.
func (d *Dir) Get(serial string) (host.Host, error) {
	if err := store.CheckSerial(serial); err != nil {
		return host.Host{}, err
	}
	h, ok := d.get(serial)
	if !ok {
		return host.Host{}, fmt.Errorf("%w: %s", store.ErrNotFound, serial)
	}
	return h.Clone(), nil
}

// ByMAC implements store.Store.
func (d *Dir) ByMAC(mac string) (host.Host, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	h, ok := d.hosts.ByMAC(mac)
	if !ok {
		return host.Host{}, fmt.Errorf("%w: mac %s", store.ErrNotFound, mac)
	}
	return h.Clone(), nil
}

// ByIP implements store.Store.
func (d *Dir) ByIP(ip net.IP) (host.Host, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	h, ok := d.hosts.ByIP(ip)
	if !ok {
		return host.Host{}, fmt.Errorf("%w: ip %s", store.ErrNotFound, ip)
	}
	return h.Clone(), nil
}

// List implements store.Store.
func (d *Dir) List() []host.Host {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.hosts.List()
}

// ProfileCount implements store.Store.
func (d *Dir) ProfileCount(profile string) int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.hosts.ProfileCount(profile)
}

// Cluster implements store.Store.
func (d *Dir) Cluster() store.Cluster {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cluster
}

// Create implements store.Store.
func (d *Dir) Create(serial string, steps ...store.Step) (host.Host, error) {
	return d.mutate(serial, true, steps, nil)
}

// Reserve implements store.Store. A reservation's record is written by
// the group commit like any other; its lease ends when the batch swaps
// the records into the table.
func (d *Dir) Reserve(serial string, req store.AllocRequest) (store.Reservation, error) {
	return d.leases.Reserve(func() *store.Table { return d.hosts }, serial, req)
}

// Update implements store.Store.
func (d *Dir) Update(serial string, steps ...store.Step) (host.Host, error) {
	return d.mutate(serial, false, steps, nil)
}

// Subscribe implements store.Store.
func (d *Dir) Subscribe(fn func()) { d.notes.Subscribe(fn) }

// Close stops the watcher and waits for a background pack merge to finish.
// Mutations after Close fail with store.ErrStorage. Closing twice is
// harmless.
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
		d.notes.Close()
	})
	return err
}

// Path returns the cluster directory.
func (d *Dir) Path() string { return d.dir }

func (d *Dir) usable() error {
	if d.closed {
		return fmt.Errorf("%w: store closed", store.ErrStorage)
	}
	return nil
}

func (d *Dir) get(serial string) (host.Host, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.hosts.Get(serial)
}

// isHostName tells whether a top-level directory name is a host's: a
// normalized serial. Dot directories (.git, .discovery) never are.
func (d *Dir) isHostName(name string) bool {
	n, err := host.NormalizeSerial(name)
	return err == nil && n == name && name != clusterName
}

// reloadAfterMove re-reads everything after the branch moved under the
// store (an operator committed with the git CLI).
func (d *Dir) reloadAfterMove(cause error) error {
	d.log.Warn("git HEAD changed outside mayu; reloading the cluster directory", "cause", cause)
	if err := d.load(); err != nil {
		return err
	}
	d.notes.Notify()
	return nil
}

var _ store.Store = (*Dir)(nil)
