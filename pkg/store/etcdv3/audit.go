package etcdv3

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
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
