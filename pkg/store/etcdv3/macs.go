package etcdv3

import (
	"fmt"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"mayu/pkg/host"
	"mayu/pkg/store"
)

// The MAC keys (macs/<mac> -> serial) make a MAC address belong to one
// record across every instance: a write that gives a record a MAC it did
// not have compares the MAC's key in the transaction that writes the
// record, so that of two instances recording one MAC for two serials at
// once exactly one commits; the other reads the key, finds its owner's
// record holding the MAC and fails with store.ErrMACTaken. A key whose
// owner's record no longer holds the MAC (the record was deleted or
// edited by hand in etcd) is stale: a write takes it over, comparing both
// the key and that record, so a record that regains the MAC meanwhile
// still wins. A write that drops a MAC deletes its key if it is the
// record's; one that keeps a MAC creates its key if there is none (data
// written before the keys existed; Open also creates the missing keys of
// every record it loads).

// maxMACs bounds the MAC addresses of one record: a write compares and
// puts a key per MAC in one transaction, and etcd refuses a transaction
// of more than --max-txn-ops (128 by default) operations or comparisons.
// Machines report a few.
const maxMACs = 32

// checkMACs refuses a record holding more than maxMACs MACs with
// store.ErrLimit.
func checkMACs(h host.Host) error {
	if n := len(macsOf(&h)); n > maxMACs {
		return fmt.Errorf("%w: the record of %s would hold %d MAC addresses; the etcd store keeps at most %d per record",
			store.ErrLimit, h.Serial, n, maxMACs)
	}
	return nil
}

// macBatch bounds the operations of one transaction that creates missing
// MAC keys at start (etcd refuses transactions of more than
// --max-txn-ops, 128 by default).
const macBatch = 64

func (k keys) macs() string          { return k.prefix + "macs/" }
func (k keys) mac(mac string) string { return k.macs() + mac }

// macOf returns the form of a record's MAC its key uses: normalized, or
// lower-cased when it does not parse (a hand-written record).
func macOf(m string) string {
	if n, err := host.NormalizeMAC(m); err == nil {
		return n
	}
	return strings.ToLower(strings.TrimSpace(m))
}

// macsOf returns the MACs of h (none for nil) in key form, each once, in
// their order.
func macsOf(h *host.Host) []string {
	if h == nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, m := range h.MacAddresses {
		if n := macOf(m); n != "" && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// macDiff splits the MACs of a record going from old (nil: a new record)
// to now into those it gains, keeps and drops.
func macDiff(old *host.Host, now host.Host) (gained, kept, dropped []string) {
	was := map[string]bool{}
	for _, m := range macsOf(old) {
		was[m] = true
	}
	is := map[string]bool{}
	for _, m := range macsOf(&now) {
		is[m] = true
		if was[m] {
			kept = append(kept, m)
		} else {
			gained = append(gained, m)
		}
	}
	for _, m := range macsOf(old) {
		if !is[m] {
			dropped = append(dropped, m)
		}
	}
	return gained, kept, dropped
}

// macIndexOps are the operations that need no comparison of the outer
// transaction: a dropped MAC's key is deleted if it is serial's, a kept
// MAC's key is created if there is none.
func (s *Store) macIndexOps(serial string, kept, dropped []string) []clientv3.Op {
	var ops []clientv3.Op
	for _, m := range dropped {
		k := s.keys.mac(m)
		ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", serial)},
			[]clientv3.Op{clientv3.OpDelete(k)}, nil))
	}
	for _, m := range kept {
		k := s.keys.mac(m)
		ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(k, serial)}, nil))
	}
	return ops
}

// macClaims is what one write of serial knows, over its tries, of the
// keys of the MACs the record gains. The first try expects each key
// absent; a try that fails reads them (reads, observe) and the next one
// compares against what it read.
type macClaims struct {
	s      *Store
	serial string
	known  map[string]macKey
}

// macKey is a MAC key as a failed try read it.
type macKey struct {
	mod   int64  // its mod revision; 0: there was none
	owner string // its value: the serial holding it
	// Whether owner's record was read and found not to hold the MAC (a
	// stale key), and that record's mod revision then (0: no record).
	checked  bool
	ownerRev int64
}

func (s *Store) claims(serial string) *macClaims {
	return &macClaims{s: s, serial: serial, known: map[string]macKey{}}
}

// plan returns the comparisons and operations that give serial the MACs
// gained, or the *store.MACTakenError of one another record holds.
func (c *macClaims) plan(gained []string) ([]clientv3.Cmp, []clientv3.Op, error) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, m := range gained {
		k := c.s.keys.mac(m)
		kk := c.known[m]
		switch {
		case kk.mod == 0:
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
			ops = append(ops, clientv3.OpPut(k, c.serial))
		case kk.owner == c.serial:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", kk.mod))
		default:
			if !kk.checked {
				if err := c.checkOwner(m, &kk); err != nil {
					return nil, nil, err
				}
				c.known[m] = kk
			}
			// Stale: take it over unless the key or its owner's record
			// changed since they were read.
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", kk.mod),
				clientv3.Compare(clientv3.ModRevision(c.s.keys.host(kk.owner)), "=", kk.ownerRev))
			ops = append(ops, clientv3.OpPut(k, c.serial))
		}
	}
	return cmps, ops, nil
}

// checkOwner reads the record of the serial holding the key of mac: if it
// holds mac, the MAC is taken; else the key is stale and kk notes the
// record's mod revision.
func (c *macClaims) checkOwner(mac string, kk *macKey) error {
	hk := c.s.keys.host(kk.owner)
	resp, err := c.s.txn("read "+kk.owner+", which holds MAC "+mac, nil, []clientv3.Op{clientv3.OpGet(hk)}, nil)
	if err != nil {
		return err
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		kk.checked, kk.ownerRev = true, 0
		return nil
	}
	h, err := decodeRecord(kk.owner, kvs[0].Value)
	if err != nil {
		// A record that cannot be read may hold the MAC: it keeps it.
		return &store.MACTakenError{MAC: mac, Owner: host.Host{Serial: kk.owner}}
	}
	for _, m := range macsOf(&h) {
		if m == mac {
			return &store.MACTakenError{MAC: mac, Owner: h}
		}
	}
	kk.checked, kk.ownerRev = true, kvs[0].ModRevision
	return nil
}

// reads are the else-branch reads of the keys of gained, in order.
func (c *macClaims) reads(gained []string) []clientv3.Op {
	ops := make([]clientv3.Op, 0, len(gained))
	for _, m := range gained {
		ops = append(ops, clientv3.OpGet(c.s.keys.mac(m)))
	}
	return ops
}

// observe takes the keys of gained as reads read them (resps, in order)
// and tells whether any differed from what the try compared against: if
// none did, the try failed for another reason.
func (c *macClaims) observe(gained []string, resps []*pb.ResponseOp) bool {
	differed := false
	for i, m := range gained {
		if i >= len(resps) {
			break
		}
		var now macKey
		if kvs := resps[i].GetResponseRange().Kvs; len(kvs) > 0 {
			now = macKey{mod: kvs[0].ModRevision, owner: string(kvs[0].Value)}
		}
		was := c.known[m]
		if now.mod != was.mod || now.owner != was.owner {
			differed = true
			c.known[m] = now
		} else if was.checked && was.owner != c.serial {
			// The key is as read, so the stale owner's record changed:
			// read it again.
			differed = true
			c.known[m] = now
		}
	}
	return differed
}

// claimLoaded creates the missing MAC keys of the records the table holds
// (data written before the keys existed), each only if no key exists, so
// that several instances starting at once agree; of two records holding
// one MAC the first in serial order gets the key, and the other is logged.
func (s *Store) claimLoaded() error {
	resp, err := s.txn("read the MAC keys", nil, []clientv3.Op{
		clientv3.OpGet(s.keys.macs(), clientv3.WithPrefix()),
	}, nil)
	if err != nil {
		return err
	}
	owner := map[string]string{}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		owner[strings.TrimPrefix(string(kv.Key), s.keys.macs())] = string(kv.Value)
	}
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := s.txn(fmt.Sprintf("create %d missing MAC keys", len(ops)), nil, ops, nil)
		ops = nil
		return err
	}
	for _, h := range s.List() {
		for _, m := range macsOf(&h) {
			if o, ok := owner[m]; ok {
				if o != h.Serial {
					s.log.Warn("MAC recorded on two hosts; the other one holds its key", "mac", m, "serial", h.Serial, "key_owner", o)
				}
				continue
			}
			owner[m] = h.Serial
			k := s.keys.mac(m)
			ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
				[]clientv3.Op{clientv3.OpPut(k, h.Serial)}, nil))
			if len(ops) == macBatch {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}
