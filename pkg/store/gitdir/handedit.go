package gitdir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-git/go-git/v5/plumbing/filemode"

	"mayu/pkg/durable"
	"mayu/pkg/store"
)

// watchQuiet is how long a file must stay unchanged before it is read: an
// editor that truncates and rewrites in place, or renames the old copy
// away first, produces several events and intermediate states that are
// not the operator's edit.
const watchQuiet = 100 * time.Millisecond

// dirWatcher picks up hand edits. inotify is not recursive, so it watches
// the cluster directory (new and removed host directories, cluster.json)
// and every host directory (its conf.json). The store's own writes produce
// events too; they are recognised by content: a file whose blob id is the
// one the store last wrote is not an edit.
type dirWatcher struct {
	d      *Dir
	w      *fsnotify.Watcher
	done   chan struct{}
	exited chan struct{}

	// pending maps a key (a serial, or cluster.json) to its last event.
	pending   map[string]time.Time
	timer     *time.Timer
	armed     bool
	limitOnce sync.Once
}

func newDirWatcher(d *Dir) (*dirWatcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	w := &dirWatcher{
		d:       d,
		w:       fw,
		done:    make(chan struct{}),
		exited:  make(chan struct{}),
		pending: map[string]time.Time{},
		timer:   time.NewTimer(time.Hour),
	}
	w.timer.Stop()
	if err := fw.Add(d.dir); err != nil {
		fw.Close()
		return nil, err
	}
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		fw.Close()
		return nil, err
	}
	for _, e := range entries {
		if e.IsDir() && d.isHostName(e.Name()) {
			w.add(e.Name())
		}
	}
	go w.loop()
	return w, nil
}

// add watches a host directory. Past the inotify watch limit, edits in
// the remaining directories are not seen: said once, loudly.
func (w *dirWatcher) add(serial string) {
	if err := w.w.Add(filepath.Join(w.d.dir, serial)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return
		}
		w.limitOnce.Do(func() {
			w.d.log.Error("cannot watch host directories; hand edits in some of them are not picked up until restart (raise fs.inotify.max_user_watches)", "serial", serial, "err", err)
		})
	}
}

func (w *dirWatcher) close() error {
	close(w.done)
	err := w.w.Close()
	<-w.exited
	return err
}

func (w *dirWatcher) loop() {
	defer close(w.exited)
	for {
		select {
		case <-w.done:
			return
		case ev, ok := <-w.w.Events:
			if !ok {
				return
			}
			w.event(ev)
		case err, ok := <-w.w.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				w.d.log.Warn("file watcher overflowed; re-reading every host record")
				w.rescan()
				continue
			}
			w.d.log.Warn("file watcher error", "err", err)
		case <-w.timer.C:
			w.armed = false
			w.flush()
		}
	}
}

// event maps a file event to the key it concerns.
func (w *dirWatcher) event(ev fsnotify.Event) {
	rel, err := filepath.Rel(w.d.dir, ev.Name)
	if err != nil {
		return
	}
	parts := strings.Split(filepath.ToSlash(rel), "/")
	switch {
	case len(parts) == 1 && parts[0] == clusterName:
		w.schedule(clusterName)
	case len(parts) == 1 && w.d.isHostName(parts[0]):
		if ev.Has(fsnotify.Create) {
			if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
				w.add(parts[0])
			}
		}
		w.schedule(parts[0])
	case len(parts) == 2 && parts[1] == confName && w.d.isHostName(parts[0]):
		w.schedule(parts[0])
	}
}

func (w *dirWatcher) schedule(key string) {
	w.pending[key] = time.Now()
	if !w.armed {
		w.timer.Reset(watchQuiet)
		w.armed = true
	}
}

// flush handles the keys that have been quiet long enough and re-arms the
// timer for the others.
func (w *dirWatcher) flush() {
	now := time.Now()
	var next time.Duration
	for key, t := range w.pending {
		if age := now.Sub(t); age < watchQuiet {
			if rem := watchQuiet - age; next == 0 || rem < next {
				next = rem
			}
			continue
		}
		delete(w.pending, key)
		if key == clusterName {
			w.d.handEditCluster()
		} else {
			w.d.handEditHost(key)
		}
	}
	if len(w.pending) > 0 {
		if next == 0 {
			next = time.Millisecond
		}
		w.timer.Reset(next)
		w.armed = true
	}
}

func (w *dirWatcher) rescan() {
	entries, err := os.ReadDir(w.d.dir)
	if err != nil {
		w.d.log.Warn("cannot re-read cluster directory", "err", err)
		return
	}
	for _, e := range entries {
		if e.IsDir() && w.d.isHostName(e.Name()) {
			w.add(e.Name())
			w.schedule(e.Name())
		}
	}
	w.d.mu.RLock()
	gone := w.d.hosts.Serials()
	w.d.mu.RUnlock()
	for _, s := range gone {
		w.schedule(s) // a removed directory is found by handEditHost
	}
	w.schedule(clusterName)
}

// handEditHost re-reads one host's conf.json after an event. A file the
// store wrote itself is recognised by its blob id and ignored; a record
// that does not decode is logged and ignored (the host table keeps the last
// good one); a valid edit updates the table and .git/index and is committed.
func (d *Dir) handEditHost(serial string) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.closed {
		return
	}
	p := filepath.Join(d.dir, serial, confName)
	data, err := os.ReadFile(p)
	_, known := d.get(serial)
	if errors.Is(err, fs.ErrNotExist) {
		if known {
			d.handRemoveHost(serial)
		}
		return
	}
	if err != nil {
		d.log.Warn("cannot read edited host record", "serial", serial, "err", err)
		return
	}
	blob := blobID(data)
	if known && d.blobs[serial] == blob {
		return
	}
	h, err := decodeHost(serial, data)
	if err != nil {
		// Never drop the record: its address, MACs and profile stay
		// served, as at the next start (salvage).
		d.log.Warn("ignoring malformed hand edit; keeping the last good record", "serial", serial, "file", p, "err", err,
			"fix", fmt.Sprintf("fix the file, or take the committed copy back with: git -C %s checkout -- %s/%s "+
				"(until then the last good record is served, and the next change of this host rewrites the file)", d.dir, serial, confName))
		return
	}
	msg := serial + ": updated by hand"
	if d.git != nil {
		err := d.commitGit(func(tx *gitTx) {
			tx.stageHost(serial, data)
			tx.commit(msg)
		})
		if errors.Is(err, errHeadMoved) {
			// load commits the edit as a recovered change.
			if err := d.reloadAfterMove(err); err != nil {
				d.log.Error("cannot reload cluster directory", "err", err)
			}
			return
		}
		if err != nil {
			d.log.Error("cannot commit hand edit", "serial", serial, "err", err)
			return
		}
		d.git.index.Set(serial+"/"+confName, filemode.Regular, blob, lstat(p))
		d.writeGitIndex()
	}
	d.blobs[serial] = blob
	d.mu.Lock()
	d.hosts.Put(h)
	d.mu.Unlock()
	d.log.Info("picked up hand edit", "serial", serial)
	d.notes.Notify()
}

func (d *Dir) handRemoveHost(serial string) {
	if d.git != nil {
		err := d.commitGit(func(tx *gitTx) {
			tx.stageRemove(serial)
			tx.commit(serial + ": removed by hand")
		})
		if err != nil {
			d.log.Error("cannot commit removal of host directory", "serial", serial, "err", err)
			return
		}
		d.git.index.Remove(serial + "/" + confName)
		delete(d.git.extras, serial)
		d.writeGitIndex()
	}
	delete(d.blobs, serial)
	d.mu.Lock()
	d.hosts.Remove(serial)
	d.mu.Unlock()
	d.log.Info("host directory removed by hand", "serial", serial)
	d.notes.Notify()
}

// handEditCluster picks up an edit of cluster.json.
func (d *Dir) handEditCluster() {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.closed {
		return
	}
	p := filepath.Join(d.dir, clusterName)
	data, err := os.ReadFile(p)
	if err != nil {
		d.log.Warn("cannot read edited cluster.json", "err", err)
		return
	}
	blob := blobID(data)
	if blob == d.clusterBlob {
		return
	}
	var c clusterFile
	if err := json.Unmarshal(data, &c); err != nil {
		d.log.Warn("ignoring malformed hand edit of cluster.json", "err", err)
		return
	}
	if d.git != nil {
		err := d.commitGit(func(tx *gitTx) {
			tx.stageRootFile(clusterName, data)
			tx.commit(clusterName + ": updated by hand")
		})
		if err != nil {
			d.log.Error("cannot commit hand edit of cluster.json", "err", err)
			return
		}
		d.git.index.Set(clusterName, filemode.Regular, blob, lstat(p))
		d.writeGitIndex()
	}
	d.clusterBlob = blob
	d.gitStore = c.GitStore
	d.mu.Lock()
	d.cluster = store.Cluster{Config: c.Config}
	d.mu.Unlock()
	d.log.Info("picked up hand edit of cluster.json")
}

// commitGit makes commits whose files are already on disk (hand edits).
func (d *Dir) commitGit(stage func(tx *gitTx)) error {
	tx := d.git.begin()
	stage(tx)
	b := durable.NewBatch()
	if err := tx.write(b); err != nil {
		b.Abort()
		tx.rollback()
		return err
	}
	if err := b.Apply(); err != nil && !b.Landed() {
		tx.rollback()
		return err
	}
	tx.done()
	return nil
}

func (d *Dir) writeGitIndex() {
	if err := d.git.writeIndex(); err != nil {
		d.log.Warn("cannot write .git/index; git status shows stale changes until the next commit", "err", err)
	}
}
