package etcdv3

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"mayu/pkg/store"
)

// AuditRecord is one audited change as the etcd store keeps it under
// audit/: what the git-backed store makes one commit of. Records are
// ordered by Revision (the etcd revision of the change), then Step (the
// steps of one change in their order).
type AuditRecord struct {
	// Revision and Step are the record's place in the order; they come
	// from etcd and its key, not from the stored JSON.
	Revision int64 `json:"-"`
	Step     int   `json:"-"`
	Time     time.Time
	// Serial is the host the change is about, "" for the cluster
	// settings.
	Serial string `json:",omitempty"`
	// Message is the audit message without the "<serial>: " prefix (with
	// the principal's trailers, as the git commit message carries them).
	Message string
	// Record is the host record as the step left it: the exact bytes of
	// its conf.json.
	Record string `json:",omitempty"`
	// Cluster is cluster.json's settings after the change (Serial "").
	Cluster string `json:",omitempty"`
}

// Subject is the first line of the commit the git-backed store makes of
// the record: "<serial>: <message>" ("<message>" for the cluster
// settings), without the trailers.
func (a AuditRecord) Subject() string {
	msg, _, _ := strings.Cut(a.Message, "\n")
	if a.Serial == "" {
		return msg
	}
	return a.Serial + ": " + msg
}

// Audit returns the audit records written at revisions after after, in
// order (see AuditRecord).
func (s *Store) Audit(after int64) ([]AuditRecord, error) {
	resp, err := s.txn("read the audit records", nil, []clientv3.Op{
		clientv3.OpGet(s.keys.audits(), clientv3.WithPrefix(), clientv3.WithMinModRev(after+1)),
	}, nil)
	if err != nil {
		return nil, err
	}
	var out []AuditRecord
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		var a AuditRecord
		if err := json.Unmarshal(kv.Value, &a); err != nil {
			return nil, fmt.Errorf("etcdv3: audit record %s: %w", kv.Key, err)
		}
		a.Revision = kv.ModRevision
		step := string(kv.Key[strings.LastIndexByte(string(kv.Key), '/')+1:])
		if a.Step, err = strconv.Atoi(step); err != nil {
			return nil, fmt.Errorf("etcdv3: audit record %s: step %q: %w", kv.Key, step, err)
		}
		out = append(out, a)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Revision != out[j].Revision {
			return out[i].Revision < out[j].Revision
		}
		return out[i].Step < out[j].Step
	})
	return out, nil
}

// WaitAudit blocks until an audit record is written at a revision after
// after, or ctx ends (its error). When etcd compacted past after it
// returns at once, so that the caller reads the records again.
func (s *Store) WaitAudit(ctx context.Context, after int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, s.keys.audits(), clientv3.WithPrefix(), clientv3.WithRev(after+1), clientv3.WithFilterDelete())
	for resp := range wch {
		if resp.CompactRevision != 0 {
			return nil
		}
		if err := resp.Err(); err != nil {
			return s.failure("watch the audit records", err)
		}
		if len(resp.Events) > 0 {
			return nil
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w: etcd %s: the watch of the audit records ended", store.ErrUnavailable, s.endpoints)
}

// Leadership is the auditor's office won through etcd's election API.
type Leadership struct {
	// Lost is closed when the office is lost (the lease expired: this
	// instance was cut off from etcd for its TTL).
	Lost <-chan struct{}
	// Resign gives the office up.
	Resign func()
}

// Campaign blocks until this instance, as name, holds the auditor's
// office among every instance on the prefix (etcd's election API, under
// a lease of its own), or ctx ends.
func (s *Store) Campaign(ctx context.Context, name string) (Leadership, error) {
	gctx, cancel := context.WithTimeout(ctx, s.timeout)
	g, err := s.cli.Grant(gctx, s.ttl)
	cancel()
	if err != nil {
		return Leadership{}, s.failure("grant the auditor election's lease", err)
	}
	// The session lives until Resign or Close (s.ctx), not until ctx
	// ends, so that Resign can still revoke its lease at shutdown.
	sess, err := concurrency.NewSession(s.cli, concurrency.WithLease(g.ID), concurrency.WithTTL(int(s.ttl)), concurrency.WithContext(s.ctx))
	if err != nil {
		return Leadership{}, s.failure("open the auditor election's session", err)
	}
	e := concurrency.NewElection(sess, s.keys.prefix+"auditor/")
	// Election.Campaign, when ctx ends, resigns under the client's own
	// context, with no deadline: an etcd out of reach would hold a
	// stopping mayu up for ever. So ctx's end is watched here; the
	// campaign's goroutine ends when the lease is revoked or, at the
	// latest, when Close closes the client.
	won := make(chan error, 1)
	go func() { won <- e.Campaign(ctx, name) }()
	select {
	case err = <-won:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		s.endSession(sess)
		if ctx.Err() != nil {
			return Leadership{}, ctx.Err()
		}
		return Leadership{}, s.failure("campaign for the auditor's office", err)
	}
	// Revoking the lease deletes the candidate's key, which resigns: one
	// call, bounded by the timeout, even when etcd is out of reach.
	return Leadership{Lost: sess.Done(), Resign: func() { s.endSession(sess) }}, nil
}
