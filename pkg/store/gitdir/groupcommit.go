package gitdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/go-git/go-git/v5/plumbing/filemode"

	"mayu/pkg/durable"
	"mayu/pkg/host"
	"mayu/pkg/store"
)

// maxBatch bounds the requests one group commit takes, so a batch's
// latency and open files stay bounded however deep the queue is.
const maxBatch = 128

// writeReq is one Create or Update waiting for the group commit.
type writeReq struct {
	serial string
	create bool
	steps  []store.Step
	lease  *store.Lease // the reservation a create uses, if any

	res host.Host
	err error
	// wake tells a waiting request that it is done (false) or that it
	// leads the next batch (true).
	wake chan bool
}

// mutate serves Create and Update through the group commit. The first
// request to arrive when no batch is being written leads: it takes the
// queue (itself included), applies and persists it as one batch, wakes the
// others with their results and hands the lead to the oldest request that
// queued meanwhile. Nobody sleeps to gather a batch: a batch is whatever
// queued while the previous one was made durable, so a lone request costs
// what it did before, and a storm shares its fsync rounds.
func (d *Dir) mutate(serial string, create bool, steps []store.Step, lease *store.Lease) (host.Host, error) {
	if err := store.CheckSerial(serial); err != nil {
		return host.Host{}, err
	}
	r := &writeReq{serial: serial, create: create, steps: steps, lease: lease, wake: make(chan bool, 1)}
	d.qmu.Lock()
	d.queue = append(d.queue, r)
	lead := !d.leading
	d.leading = true
	d.qmu.Unlock()
	if !lead && !<-r.wake {
		return r.res, r.err
	}
	// The leader is always the head of the queue: a fresh leader found it
	// empty, a handed-over one was its oldest entry.
	d.qmu.Lock()
	n := min(len(d.queue), maxBatch)
	batch := append([]*writeReq(nil), d.queue[:n]...)
	d.queue = append(d.queue[:0:0], d.queue[n:]...)
	d.qmu.Unlock()
	defer d.finishBatch(batch, r)
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.onBatch == nil {
		d.commitBatch(batch)
		return r.res, r.err
	}
	start := time.Now()
	d.commitBatch(batch)
	d.onBatch(len(batch), time.Since(start))
	return r.res, r.err
}

// finishBatch wakes the batch's other requests and hands the lead on. It
// runs deferred, so a panic in the leader still releases everyone.
func (d *Dir) finishBatch(batch []*writeReq, leader *writeReq) {
	if p := recover(); p != nil {
		for _, o := range batch {
			o.res, o.err = host.Host{}, fmt.Errorf("%w: batch failed: %v", store.ErrStorage, p)
		}
		defer panic(p)
	}
	d.qmu.Lock()
	var next *writeReq
	if len(d.queue) > 0 {
		next = d.queue[0]
	} else {
		d.leading = false
	}
	d.qmu.Unlock()
	if next != nil {
		next.wake <- true
	}
	for _, o := range batch {
		if o != leader {
			o.wake <- false
		}
	}
}

// commitBatch applies and persists the batch, and starts it over on the
// record as it now is when a commit made with the git CLI moved HEAD under
// the store, so an operator's change is never overwritten with a stale copy
// (steps must therefore be repeatable).
func (d *Dir) commitBatch(batch []*writeReq) {
	for attempt := 0; ; attempt++ {
		err := d.usable()
		if err == nil {
			err = d.tryBatch(batch)
			if errors.Is(err, errHeadMoved) && attempt < 3 {
				err = d.reloadAfterMove(err)
				if err == nil {
					continue
				}
			}
		}
		if err != nil {
			for _, r := range batch {
				r.res, r.err = host.Host{}, err
			}
		}
		return
	}
}

// pendingHost is a record the batch writes: its state after the batch's
// last request for it.
type pendingHost struct {
	h      host.Host
	data   []byte
	create bool // no record before this batch
}

// tryBatch applies each request's steps in arrival order (a request sees
// the records as the earlier ones of the batch left them), stages one
// commit per changed step, and persists every changed record at once. A
// request whose steps fail, or that finds the wrong existence, fails alone;
// a failure to persist fails every request that wrote. It returns only
// errHeadMoved, with nothing written.
func (d *Dir) tryBatch(batch []*writeReq) error {
	pend := map[string]*pendingHost{}
	var order []string
	var tx *gitTx
	if d.git != nil {
		tx = d.git.begin()
	}
	var writers []*writeReq
	for _, r := range batch {
		r.res, r.err = host.Host{}, nil
		var (
			h  host.Host
			ok bool
		)
		if p := pend[r.serial]; p != nil {
			h, ok = p.h, true
		} else {
			h, ok = d.get(r.serial)
		}
		switch {
		case r.create && ok:
			r.err = fmt.Errorf("%w: %s", store.ErrExists, r.serial)
			continue
		case r.create:
			h = host.Host{Serial: r.serial}
		case !ok:
			r.err = fmt.Errorf("%w: %s", store.ErrNotFound, r.serial)
			continue
		}
		if r.lease != nil {
			if r.err = d.checkLease(r.lease, pend); r.err != nil {
				continue
			}
		}
		snaps, msgs, datas, err := prepare(h, r.create, r.steps)
		if err != nil {
			r.err = err
			continue
		}
		if len(snaps) == 0 {
			r.res = h.Clone()
			continue
		}
		if tx != nil {
			for i, data := range datas {
				tx.stageHost(r.serial, data)
				tx.commit(sanitizeMessage(r.serial + ": " + msgs[i]))
			}
		}
		p := pend[r.serial]
		if p == nil {
			p = &pendingHost{create: r.create}
			pend[r.serial] = p
			order = append(order, r.serial)
		}
		p.h, p.data = snaps[len(snaps)-1], datas[len(datas)-1]
		r.res = p.h.Clone()
		writers = append(writers, r)
	}
	if len(writers) == 0 {
		return nil
	}
	if err := d.persistHosts(pend, order, tx); err != nil {
		if errors.Is(err, errHeadMoved) {
			return err
		}
		for _, r := range writers {
			r.res, r.err = host.Host{}, fmt.Errorf("%w: %s: %w", store.ErrStorage, r.serial, err)
		}
		return nil
	}
	d.mu.Lock()
	for _, s := range order {
		d.hosts.Put(pend[s].h)
	}
	for _, r := range writers {
		if r.lease != nil {
			r.lease.EndLocked(true)
		}
	}
	d.mu.Unlock()
	d.notes.Notify()
	return nil
}

// checkLease fails with store.ErrReservationLost when the lease's address
// is on another record, stored or written earlier in the batch.
func (d *Dir) checkLease(l *store.Lease, pend map[string]*pendingHost) error {
	d.mu.RLock()
	err := l.CheckLocked(d.hosts)
	d.mu.RUnlock()
	if err != nil {
		return err
	}
	addr := l.Allocation().Addr
	for s, p := range pend {
		if s != l.Serial() && p.h.InternalAddr.Equal(addr) {
			return fmt.Errorf("%w: %s is recorded on %s", store.ErrReservationLost, addr, s)
		}
	}
	return nil
}

// prepare runs the steps on a copy of h and encodes every snapshot. A
// create whose steps changed nothing still creates the record. A step that
// panics fails its request, not the batch.
func prepare(h host.Host, create bool, steps []store.Step) (snaps []host.Host, msgs []string, datas [][]byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			snaps, msgs, datas, err = nil, nil, nil, fmt.Errorf("store: a step panicked: %v", p)
		}
	}()
	snaps, msgs, err = store.ApplySteps(h, steps)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(snaps) == 0 && create {
		snaps, msgs = []host.Host{h}, []string{"host created"}
	}
	datas = make([][]byte, len(snaps))
	for i, s := range snaps {
		if datas[i], err = s.Marshal(); err != nil {
			return nil, nil, nil, err
		}
	}
	return snaps, msgs, datas, nil
}

// persistHosts writes the batch's final records and its staged commits as
// one durable batch. It returns errHeadMoved, unwrapped, when a commit made
// with the git CLI moved HEAD meanwhile; nothing is written then, and on
// any failure every record is as it was.
func (d *Dir) persistHosts(pend map[string]*pendingHost, order []string, tx *gitTx) (err error) {
	type target struct {
		serial, confPath string
		old              []byte
		create, newDir   bool
	}
	ts := make([]target, 0, len(order))
	b := durable.NewBatch()
	defer func() {
		if err == nil {
			return
		}
		b.Abort()
		if tx != nil {
			tx.rollback()
		}
		for _, t := range ts {
			d.restore(t.confPath, t.old, t.create, t.newDir, b)
			if t.newDir {
				_ = os.Remove(filepath.Dir(t.confPath))
			}
		}
	}()
	for _, s := range order {
		p := pend[s]
		hostDir := filepath.Join(d.dir, s)
		t := target{serial: s, confPath: filepath.Join(hostDir, confName), create: p.create}
		if p.create {
			if err := os.Mkdir(hostDir, 0o755); err == nil {
				t.newDir = true
				b.SyncDir(d.dir)
			} else if !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("create %s: %w", hostDir, err)
			}
		} else {
			t.old, _ = os.ReadFile(t.confPath)
		}
		ts = append(ts, t)
		if err := b.AddLate(t.confPath, tmpPrefix, p.data, 0o644); err != nil {
			return err
		}
	}
	if tx != nil {
		if err := tx.write(b); err != nil {
			return err
		}
	}
	if err := b.Apply(); err != nil {
		if !b.Landed() {
			return err
		}
		// Everything is in place; only a directory fsync failed.
		d.log.Error("fsync of a directory failed after commit", "hosts", len(order), "err", err)
	}
	for _, t := range ts {
		d.blobs[t.serial] = blobID(pend[t.serial].data)
	}
	if tx != nil {
		tx.done()
		for _, t := range ts {
			d.git.index.Set(t.serial+"/"+confName, filemode.Regular, d.blobs[t.serial], lstat(t.confPath))
		}
		d.writeGitIndex()
		d.maybePack()
	}
	return nil
}

// restore puts the previous conf.json back after a failed batch that may
// already have renamed the new one into place, so the file never holds a
// record the caller was told did not persist.
func (d *Dir) restore(confPath string, oldData []byte, create, newDir bool, b *durable.Batch) {
	if !b.Renamed(confPath) {
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
		if err := durable.WriteFile(confPath, oldData, 0o644, tmpPrefix); err != nil {
			d.log.Error("cannot restore record after failed commit; it is committed at next start", "path", confPath, "err", err)
		}
	}
}
