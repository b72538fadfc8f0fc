package etcdv3

import (
	"context"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"mayu/pkg/store"
)

// watchRetry is how long the watch waits before it starts again after
// etcd ended it (no leader, unreachable, compacted).
const watchRetry = time.Second

// load reads the cluster key and every record at one revision into a new
// table, which replaces the old one, and returns that revision. A record
// that does not decode keeps its previous copy in the table (logged): its
// address key still holds its address, so nothing hands it out.
func (s *Store) load() (int64, error) {
	resp, err := s.txn("load the host records", nil, []clientv3.Op{
		clientv3.OpGet(s.keys.cluster()),
		clientv3.OpGet(s.keys.hosts(), clientv3.WithPrefix()),
	}, nil)
	if err != nil {
		return 0, err
	}
	rev := resp.Header.Revision
	s.mu.Lock()
	old := s.table
	table, revs := store.NewTable(), map[string]int64{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		serial := strings.TrimPrefix(string(kv.Key), s.keys.hosts())
		h, err := decodeRecord(serial, kv.Value)
		if err != nil {
			s.log.Error("host record in etcd cannot be read; serving the copy this instance had, if any", "key", string(kv.Key), "err", err)
			if prev, ok := old.Get(serial); ok {
				table.Put(prev.Clone())
			}
			revs[serial] = kv.ModRevision
			continue
		}
		table.Put(h)
		revs[serial] = kv.ModRevision
	}
	for _, serial := range old.Serials() {
		if _, ok := revs[serial]; !ok {
			revs[serial] = rev // removed meanwhile: a later event may not bring it back
		}
	}
	s.table, s.revs = table, revs
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		s.clusterRev = 0
		s.applyClusterLocked(kvs[0].Value, kvs[0].ModRevision)
	} else {
		s.cluster, s.clusterRev, s.clusterMod = store.Cluster{}, rev, 0
	}
	s.mu.Unlock()
	s.notes.Notify()
	return rev, nil
}

// watch applies the changes of the records and the cluster key after
// revision rev to the table until Close, starting again after a failure:
// from where it was, or with a full load when etcd compacted past it.
func (s *Store) watch(rev int64) {
	defer close(s.done)
	for {
		next, err := s.watchFrom(rev)
		if s.ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.Warn("watch of the host records ended; starting it again", "err", err, "revision", next)
		}
		rev = next
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(watchRetry):
		}
		if next < 0 {
			if rev, err = s.load(); err != nil {
				s.log.Warn("host records not reloaded", "err", err)
				rev = -1
			}
		}
	}
}

// watchFrom watches from rev+1 until the watch ends and returns the last
// revision applied; -1 means everything must be loaded again.
func (s *Store) watchFrom(rev int64) (int64, error) {
	if rev < 0 {
		return -1, nil
	}
	// WithRequireLeader: a member cut off from its cluster ends the watch
	// instead of going quiet, so a reload follows the partition.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
	defer cancel()
	wch := s.cli.Watch(ctx, s.keys.cluster(), clientv3.WithRange(s.keys.watchEnd()), clientv3.WithRev(rev+1))
	for resp := range wch {
		if resp.CompactRevision != 0 {
			return -1, resp.Err()
		}
		if err := resp.Err(); err != nil {
			return rev, err
		}
		changed := false
		s.mu.Lock()
		for _, ev := range resp.Events {
			if s.applyEventLocked(ev) {
				changed = true
			}
			if ev.Kv.ModRevision > rev {
				rev = ev.Kv.ModRevision
			}
		}
		s.mu.Unlock()
		if changed {
			s.notes.Notify()
		}
	}
	return rev, ctx.Err()
}

// applyEventLocked applies one watch event to the table or the cluster
// settings and tells whether anything changed.
func (s *Store) applyEventLocked(ev *clientv3.Event) bool {
	key := string(ev.Kv.Key)
	deleted := ev.Type == mvccpb.DELETE
	if key == s.keys.cluster() {
		var v []byte
		if !deleted {
			v = ev.Kv.Value
		}
		return s.applyClusterLocked(v, ev.Kv.ModRevision)
	}
	serial, ok := strings.CutPrefix(key, s.keys.hosts())
	if !ok {
		return false
	}
	if deleted {
		return s.applyLocked(serial, nil, ev.Kv.ModRevision)
	}
	h, err := decodeRecord(serial, ev.Kv.Value)
	if err != nil {
		s.log.Error("host record in etcd cannot be read; serving the copy this instance had, if any", "key", key, "err", err)
		return false
	}
	return s.applyLocked(serial, &h, ev.Kv.ModRevision)
}
