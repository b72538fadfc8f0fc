package etcdv3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"mayu/pkg/host"
	"mayu/pkg/store"
)

// Defaults of Options.
const (
	DefaultPrefix     = "/mayu/"
	DefaultTimeout    = 5 * time.Second
	DefaultSessionTTL = 20 * time.Second
)

// maxCAS bounds how often a change is tried again because another
// instance changed the record (or cluster.json) between the read and the
// compare-and-swap; maxReserve bounds the reads of a reservation that
// keeps losing its address or slot to other instances.
const (
	maxCAS     = 16
	maxReserve = 64
)

// Options configure Open.
type Options struct {
	// Endpoints are the etcd members' client addresses, "host:port" or
	// URLs ("https://host:port"); at least one.
	Endpoints []string
	// TLS, when set, is the client's TLS (see TLSConfig); nil is plain.
	TLS *TLSFiles
	// Prefix is where mayu's keys live ("/mayu/" when empty); a missing
	// trailing "/" is added, so "/site-a" and "/site-a/" are one prefix.
	Prefix string
	// Timeout bounds every etcd call (DefaultTimeout when 0).
	Timeout time.Duration
	// SessionTTL is the TTL of this instance's lease, which holds its
	// reservations: they vanish that long after the instance dies
	// (DefaultSessionTTL when 0; whole seconds, at least 5).
	SessionTTL time.Duration
	// Instance, when set, names this instance in every record it writes
	// (host.Host.Instance), so that any instance shows which one served a
	// machine last. Empty leaves the field as the steps leave it (mayu
	// migrate copies records unchanged).
	Instance string
	Logger   *slog.Logger
}

// Store is the etcd v3 store.Store. It is safe for concurrent use, by any
// number of instances on one etcd cluster and prefix.
type Store struct {
	cli       *clientv3.Client
	keys      keys
	timeout   time.Duration
	ttl       int64
	endpoints string
	instance  string
	log       *slog.Logger

	ctx  context.Context // canceled by Close
	stop context.CancelFunc
	done chan struct{} // closed when the watch has ended

	mu         sync.RWMutex
	table      *store.Table
	revs       map[string]int64 // serial -> mod revision of the record in table, or of its deletion
	cluster    store.Cluster
	clusterRev int64 // revision of the cluster key as known (its mod revision, or of its deletion)
	clusterMod int64 // its mod revision, 0 when there is no key
	notes      store.Notifier

	locks     [64]sync.Mutex // by serial: this instance's writes of one record, in turn
	clusterMu sync.Mutex
	allocMu   sync.Mutex          // guards held and resSeq
	held      map[netip.Addr]bool // addresses of this instance's reservations under way or held

	sessMu   sync.Mutex
	sess     *concurrency.Session
	resSeq   uint64         // numbers this instance's reservations (their slot keys)
	unfreed  []*reservation // releases that failed, tried again at the next Reserve
	closeErr error
	closed   sync.Once
}

// Open connects to etcd, loads every record and starts the watch that
// keeps them current. etcd unreachable within the timeout is an error
// wrapping store.ErrUnavailable.
func Open(o Options) (*Store, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("etcdv3: no endpoint")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	ttl := int64(o.SessionTTL / time.Second)
	if ttl < 5 {
		ttl = 5
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := clientv3.Config{
		Endpoints:   o.Endpoints,
		DialTimeout: o.Timeout,
		// The client's own logger would write JSON lines of its own to
		// stderr; what matters reaches mayu's log as an error of a call.
		Logger: zap.NewNop(),
	}
	if o.TLS != nil {
		t, err := o.TLS.Config()
		if err != nil {
			return nil, err
		}
		cfg.TLS = t
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: etcd %s: %w", store.ErrUnavailable, strings.Join(o.Endpoints, ","), err)
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Store{
		cli: cli, keys: keys{o.Prefix}, timeout: o.Timeout, ttl: ttl, instance: o.Instance,
		endpoints: strings.Join(o.Endpoints, ","), log: log.With("component", "store", "etcd", strings.Join(o.Endpoints, ","), "prefix", o.Prefix),
		ctx: ctx, stop: stop, done: make(chan struct{}),
		table: store.NewTable(), revs: map[string]int64{}, held: map[netip.Addr]bool{},
	}
	rev, err := s.load()
	if err != nil {
		stop()
		_ = cli.Close()
		return nil, err
	}
	if err := s.claimLoaded(); err != nil {
		// Each record's next write creates its missing keys too.
		s.log.Warn("missing MAC keys not created at start", "err", err)
	}
	go s.watch(rev)
	return s, nil
}

// Prefix returns the key prefix, ending in "/".
func (s *Store) Prefix() string { return s.keys.prefix }

// keys names mayu's keys under the prefix (see the package doc).
type keys struct{ prefix string }

func (k keys) hosts() string             { return k.prefix + "hosts/" }
func (k keys) host(serial string) string { return k.hosts() + serial }
func (k keys) cluster() string           { return k.prefix + "cluster" }
func (k keys) addrs() string             { return k.prefix + "alloc/addr/" }
func (k keys) addr(a netip.Addr) string  { return k.addrs() + a.String() }
func (k keys) profile(name string) string {
	return k.prefix + "alloc/profile/" + url.PathEscape(name) + "/"
}
func (k keys) audits() string                 { return k.prefix + "audit/" }
func (k keys) audit(txn string, i int) string { return fmt.Sprintf("%s%s/%03d", k.audits(), txn, i) }

// watchEnd ends the key range the watch covers, [cluster, watchEnd):
// "cluster" and every "hosts/..." key, none of "alloc/" and "audit/"
// (which sort before "cluster") nor of "macs/" (after "hosts0").
func (k keys) watchEnd() string { return k.prefix + "hosts0" }

// Get implements store.Store.
func (s *Store) Get(serial string) (host.Host, error) {
	if err := store.CheckSerial(serial); err != nil {
		return host.Host{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	h, ok := s.table.Get(serial)
	if !ok {
		return host.Host{}, fmt.Errorf("%w: %s", store.ErrNotFound, serial)
	}
	return h.Clone(), nil
}

// ByMAC implements store.Store.
func (s *Store) ByMAC(mac string) (host.Host, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h, ok := s.table.ByMAC(mac)
	if !ok {
		return host.Host{}, fmt.Errorf("%w: mac %s", store.ErrNotFound, mac)
	}
	return h.Clone(), nil
}

// ByIP implements store.Store.
func (s *Store) ByIP(ip net.IP) (host.Host, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h, ok := s.table.ByIP(ip)
	if !ok {
		return host.Host{}, fmt.Errorf("%w: ip %s", store.ErrNotFound, ip)
	}
	return h.Clone(), nil
}

// List implements store.Store.
func (s *Store) List() []host.Host {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.table.List()
}

// ProfileCount implements store.Store.
func (s *Store) ProfileCount(profile string) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.table.ProfileCount(profile)
}

// Create implements store.Store: one transaction puts the record if the
// serial has none in etcd, with its address and profile keys and the
// audit records of its steps.
func (s *Store) Create(serial string, steps ...store.Step) (host.Host, error) {
	if err := store.CheckSerial(serial); err != nil {
		return host.Host{}, err
	}
	return s.create(serial, steps, nil)
}

func (s *Store) create(serial string, steps []store.Step, r *reservation) (host.Host, error) {
	lock := s.lockFor(serial)
	lock.Lock()
	defer lock.Unlock()
	if _, err := s.Get(serial); err == nil {
		return host.Host{}, fmt.Errorf("%w: %s", store.ErrExists, serial)
	}
	bare := host.Host{Serial: serial}
	snaps, msgs, err := store.ApplySteps(bare, steps)
	if err != nil {
		return host.Host{}, err
	}
	if len(snaps) == 0 {
		// A create whose steps changed nothing still creates the record,
		// audited as the git-backed store commits it.
		snaps, msgs = []host.Host{bare}, []string{"host created"}
	}
	s.stamp(snaps)
	final := snaps[len(snaps)-1]
	if err := checkMACs(final); err != nil {
		return host.Host{}, err
	}
	ops, err := s.writeOps(nil, final, snaps, msgs, r)
	if err != nil {
		return host.Host{}, err
	}
	hk := s.keys.host(serial)
	gained, _, _ := macDiff(nil, final)
	claims := s.claims(serial)
	for attempt := 1; ; attempt++ {
		macCmps, macOps, err := claims.plan(gained)
		if err != nil {
			return host.Host{}, err
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(hk), "=", 0)}
		if r != nil {
			cmps = append(cmps, r.held()...)
		}
		cmps = append(cmps, macCmps...)
		els := append([]clientv3.Op{clientv3.OpGet(hk)}, claims.reads(gained)...)
		resp, err := s.txn("create "+serial, cmps, append(ops[:len(ops):len(ops)], macOps...), els)
		if err != nil {
			return host.Host{}, err
		}
		if resp.Succeeded {
			if r != nil {
				r.markUsed()
			}
			s.applyLocal(serial, &final, resp.Header.Revision)
			return final.Clone(), nil
		}
		if _, _, err := s.refresh(serial, resp.Responses[0], resp.Header.Revision); !errors.Is(err, store.ErrNotFound) {
			return host.Host{}, fmt.Errorf("%w: %s", store.ErrExists, serial)
		}
		if claims.observe(gained, resp.Responses[1:]) {
			// A MAC's key was not as expected: look again.
			if attempt == maxCAS {
				return host.Host{}, fmt.Errorf("%w: the MAC keys of %s changed in etcd %d times while it was created", store.ErrConflict, serial, maxCAS)
			}
			continue
		}
		if r != nil {
			return host.Host{}, fmt.Errorf("%w: %s of %s is no longer reserved for it in etcd (its lease expired or it was released)",
				store.ErrReservationLost, r.alloc.Addr, serial)
		}
		return host.Host{}, fmt.Errorf("%w: %s", store.ErrExists, serial)
	}
}

// Update implements store.Store: a compare-and-swap on the record's mod
// revision, tried again on the record as it now is when another instance
// changed it (store.ErrConflict after maxCAS tries).
func (s *Store) Update(serial string, steps ...store.Step) (host.Host, error) {
	if err := store.CheckSerial(serial); err != nil {
		return host.Host{}, err
	}
	lock := s.lockFor(serial)
	lock.Lock()
	defer lock.Unlock()
	hk := s.keys.host(serial)
	cur, rev, ok := s.current(serial)
	if !ok {
		// This instance may not have seen another's create yet.
		resp, err := s.txn("read "+serial, nil, []clientv3.Op{clientv3.OpGet(hk)}, nil)
		if err != nil {
			return host.Host{}, err
		}
		if cur, rev, err = s.refresh(serial, resp.Responses[0], resp.Header.Revision); err != nil {
			return host.Host{}, err
		}
	}
	claims := s.claims(serial)
	for attempt := 1; ; attempt++ {
		snaps, msgs, err := store.ApplySteps(cur, steps)
		if err != nil {
			return host.Host{}, err
		}
		final := cur
		var ops []clientv3.Op
		var gained []string
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(hk), "=", rev)}
		if len(snaps) > 0 {
			s.stamp(snaps)
			final = snaps[len(snaps)-1]
			if err := checkMACs(final); err != nil {
				return host.Host{}, err
			}
			if ops, err = s.writeOps(&cur, final, snaps, msgs, nil); err != nil {
				return host.Host{}, err
			}
			gained, _, _ = macDiff(&cur, final)
			macCmps, macOps, err := claims.plan(gained)
			if err != nil {
				return host.Host{}, err
			}
			cmps, ops = append(cmps, macCmps...), append(ops, macOps...)
		}
		// Without changes the transaction only confirms that the record
		// is the one the steps saw (a read, no write).
		resp, err := s.txn("update "+serial, cmps, ops, append([]clientv3.Op{clientv3.OpGet(hk)}, claims.reads(gained)...))
		if err != nil {
			return host.Host{}, err
		}
		if resp.Succeeded {
			if len(snaps) > 0 {
				s.applyLocal(serial, &final, resp.Header.Revision)
			}
			return final.Clone(), nil
		}
		claims.observe(gained, resp.Responses[1:])
		if cur, rev, err = s.refresh(serial, resp.Responses[0], resp.Header.Revision); err != nil {
			return host.Host{}, err
		}
		if attempt == maxCAS {
			return host.Host{}, fmt.Errorf("%w: %s changed in etcd %d times while this change was tried", store.ErrConflict, serial, maxCAS)
		}
	}
}

// stamp names this instance in the records the steps left (snaps, in
// place), when it has a name.
func (s *Store) stamp(snaps []host.Host) {
	if s.instance == "" {
		return
	}
	for i := range snaps {
		snaps[i].Instance = s.instance
	}
}

// writeOps are the operations that store final as the record (old is the
// record it replaces, nil for a new one; r the reservation it uses, if
// any): the record, its allocation keys, and one audit record per step.
func (s *Store) writeOps(old *host.Host, final host.Host, snaps []host.Host, msgs []string, r *reservation) ([]clientv3.Op, error) {
	b, err := final.Marshal()
	if err != nil {
		return nil, err
	}
	serial := final.Serial
	ops := []clientv3.Op{clientv3.OpPut(s.keys.host(serial), string(b))}
	ops = append(ops, s.indexOps(old, final, r)...)
	txn, err := newTxnID()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	for i, snap := range snaps {
		rec, err := snap.Marshal()
		if err != nil {
			return nil, err
		}
		a, err := json.Marshal(AuditRecord{Time: now, Serial: serial, Message: msgs[i], Record: string(rec)})
		if err != nil {
			return nil, fmt.Errorf("etcdv3: encode audit record: %w", err)
		}
		ops = append(ops, clientv3.OpPut(s.keys.audit(txn, i), string(a)))
	}
	return ops, nil
}

// indexOps keep the allocation keys and the MAC keys of the MACs kept
// and dropped in step with a record going from old (nil: none) to now (the
// keys of MACs gained need comparisons: macClaims). A reservation's address key is re-put without its
// lease and its slot key traded for the record's; otherwise an address
// the record leaves is freed if it is the record's, and one it takes is
// claimed if no one holds it (an operator may give two records one
// address: the second is not indexed, and allocation still skips it, as
// it skips every address in the table).
func (s *Store) indexOps(old *host.Host, now host.Host, r *reservation) []clientv3.Op {
	var ops []clientv3.Op
	serial := now.Serial
	was, is := addrOf(old), addrOf(&now)
	switch {
	case r != nil:
		ops = append(ops, clientv3.OpPut(r.addrKey, serial))
		if r.slotKey != "" {
			ops = append(ops, clientv3.OpDelete(r.slotKey))
		}
	case was != is:
		if was.IsValid() {
			k := s.keys.addr(was)
			ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", serial)},
				[]clientv3.Op{clientv3.OpDelete(k)}, nil))
		}
		if is.IsValid() {
			k := s.keys.addr(is)
			ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
				[]clientv3.Op{clientv3.OpPut(k, serial)}, nil))
		}
	}
	_, kept, dropped := macDiff(old, now)
	ops = append(ops, s.macIndexOps(serial, kept, dropped)...)
	oldProfile := ""
	if old != nil {
		oldProfile = old.Profile
	}
	if old == nil || oldProfile != now.Profile {
		if oldProfile != "" {
			ops = append(ops, clientv3.OpDelete(s.keys.profile(oldProfile)+"h:"+serial))
		}
		if now.Profile != "" {
			ops = append(ops, clientv3.OpPut(s.keys.profile(now.Profile)+"h:"+serial, serial))
		}
	}
	return ops
}

// addrOf returns the record's InternalAddr, invalid when it has none.
func addrOf(h *host.Host) netip.Addr {
	if h == nil || h.InternalAddr == nil {
		return netip.Addr{}
	}
	a, ok := netip.AddrFromSlice(h.InternalAddr)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// Cluster implements store.Store.
func (s *Store) Cluster() store.Cluster {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cluster
}

// UpdateCluster implements store.Store: a compare-and-swap on the cluster
// key, with its audit record, tried again on what another instance wrote.
func (s *Store) UpdateCluster(message string, apply func(c *store.Cluster) error) (store.Cluster, error) {
	s.clusterMu.Lock()
	defer s.clusterMu.Unlock()
	ck := s.keys.cluster()
	s.mu.RLock()
	cur, rev := s.cluster, s.clusterMod
	s.mu.RUnlock()
	for attempt := 1; ; attempt++ {
		c := cur
		if err := apply(&c); err != nil {
			return cur, err
		}
		var ops []clientv3.Op
		if c != cur {
			b, err := marshalCluster(c)
			if err != nil {
				return cur, err
			}
			txn, err := newTxnID()
			if err != nil {
				return cur, err
			}
			a, err := json.Marshal(AuditRecord{Time: time.Now().UTC(), Message: message, Cluster: string(b)})
			if err != nil {
				return cur, fmt.Errorf("etcdv3: encode audit record: %w", err)
			}
			ops = []clientv3.Op{clientv3.OpPut(ck, string(b)), clientv3.OpPut(s.keys.audit(txn, 0), string(a))}
		}
		resp, err := s.txn("update cluster settings", []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(ck), "=", rev)},
			ops, []clientv3.Op{clientv3.OpGet(ck)})
		if err != nil {
			return cur, err
		}
		if resp.Succeeded {
			if len(ops) > 0 {
				s.mu.Lock()
				if resp.Header.Revision > s.clusterRev {
					s.cluster, s.clusterRev, s.clusterMod = c, resp.Header.Revision, resp.Header.Revision
				}
				s.mu.Unlock()
			}
			return c, nil
		}
		// Another instance wrote (or removed) it: go on from what etcd
		// holds now.
		kvs := resp.Responses[0].GetResponseRange().Kvs
		cur, rev = store.Cluster{}, 0
		if len(kvs) > 0 {
			if err := json.Unmarshal(kvs[0].Value, &cur); err != nil {
				return s.Cluster(), fmt.Errorf("%w: cluster settings in etcd (%s) cannot be read: %v", store.ErrStorage, ck, err)
			}
			rev = kvs[0].ModRevision
			s.mu.Lock()
			s.applyClusterLocked(kvs[0].Value, rev)
			s.mu.Unlock()
		}
		if attempt == maxCAS {
			return cur, fmt.Errorf("%w: the cluster settings changed in etcd %d times while this change was tried", store.ErrConflict, maxCAS)
		}
	}
}

func marshalCluster(c store.Cluster) ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("etcdv3: encode cluster settings: %w", err)
	}
	return append(b, '\n'), nil
}

// Subscribe implements store.Store: fn runs after this instance's changes
// and after every change the watch brings from other instances.
func (s *Store) Subscribe(fn func()) { s.notes.Subscribe(fn) }

// Close revokes this instance's lease (its reservations in flight end),
// stops the watch and closes the client.
func (s *Store) Close() error {
	s.closed.Do(func() {
		s.sessMu.Lock()
		if s.sess != nil {
			s.endSession(s.sess)
			s.sess = nil
		}
		s.sessMu.Unlock()
		s.stop()
		<-s.done
		s.closeErr = s.cli.Close()
		if errors.Is(s.closeErr, context.Canceled) {
			s.closeErr = nil
		}
		s.notes.Close()
	})
	return s.closeErr
}

// endSession stops a session's keep-alive and revokes its lease, waiting
// no longer than the call timeout (Session.Close would wait a whole TTL
// for an etcd out of reach); a lease not revoked ends with its TTL.
func (s *Store) endSession(sess *concurrency.Session) {
	sess.Orphan()
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	if _, err := s.cli.Revoke(ctx, sess.Lease()); err != nil {
		s.log.Warn("lease not revoked; what it holds ends with its TTL", "lease", fmt.Sprintf("%x", int64(sess.Lease())), "err", err)
	}
}

// current returns the record of serial in the table with its revision.
func (s *Store) current(serial string) (host.Host, int64, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h, ok := s.table.Get(serial)
	if !ok {
		return host.Host{}, 0, false
	}
	return h.Clone(), s.revs[serial], true
}

// refresh takes the record of serial from the answer of an OpGet of its
// key, read at revision at, into the table and returns it with its mod
// revision: store.ErrNotFound when etcd has none (the table drops it too),
// store.ErrStorage when it does not decode (the table keeps its copy).
func (s *Store) refresh(serial string, r *pb.ResponseOp, at int64) (host.Host, int64, error) {
	kvs := r.GetResponseRange().Kvs
	if len(kvs) == 0 {
		s.applyLocal(serial, nil, at)
		return host.Host{}, 0, fmt.Errorf("%w: %s", store.ErrNotFound, serial)
	}
	h, err := decodeRecord(serial, kvs[0].Value)
	if err != nil {
		s.log.Error("host record in etcd cannot be read", "serial", serial, "err", err)
		return host.Host{}, 0, fmt.Errorf("%w: the record of %s in etcd (%s) cannot be read: %v", store.ErrStorage, serial, kvs[0].Key, err)
	}
	s.applyLocal(serial, &h, kvs[0].ModRevision)
	return h.Clone(), kvs[0].ModRevision, nil
}

// applyLocal puts (h) or removes (nil) the record of serial at revision
// rev into the table, unless the table already holds a later state, and
// notifies the subscribers of a change.
func (s *Store) applyLocal(serial string, h *host.Host, rev int64) {
	s.mu.Lock()
	changed := s.applyLocked(serial, h, rev)
	s.mu.Unlock()
	if changed {
		s.notes.Notify()
	}
}

func (s *Store) applyLocked(serial string, h *host.Host, rev int64) bool {
	if rev <= s.revs[serial] {
		return false
	}
	s.revs[serial] = rev
	if h == nil {
		if _, ok := s.table.Get(serial); !ok {
			return false
		}
		s.table.Remove(serial)
		return true
	}
	s.table.Put(h.Clone())
	return true
}

// applyClusterLocked takes the cluster key's value at rev (nil: the key
// was deleted).
func (s *Store) applyClusterLocked(value []byte, rev int64) bool {
	if rev <= s.clusterRev {
		return false
	}
	var c store.Cluster
	mod := int64(0)
	if value != nil {
		if err := json.Unmarshal(value, &c); err != nil {
			s.log.Error("cluster settings in etcd cannot be read; keeping the previous ones", "key", s.keys.cluster(), "err", err)
			return false
		}
		mod = rev
	}
	s.cluster, s.clusterRev, s.clusterMod = c, rev, mod
	return true
}

// decodeRecord reads a record stored under serial's key.
func decodeRecord(serial string, value []byte) (host.Host, error) {
	h, err := host.Unmarshal(value)
	if err != nil {
		return host.Host{}, err
	}
	if h.Serial != serial {
		return host.Host{}, fmt.Errorf("the record under %q names serial %q", serial, h.Serial)
	}
	return h, nil
}

// lockFor returns the lock that orders this instance's writes of serial.
func (s *Store) lockFor(serial string) *sync.Mutex {
	f := fnv.New32a()
	_, _ = f.Write([]byte(serial))
	return &s.locks[f.Sum32()%uint32(len(s.locks))]
}

// txn runs one transaction under the call timeout.
func (s *Store) txn(what string, cmps []clientv3.Cmp, then, els []clientv3.Op) (*clientv3.TxnResponse, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
	if err != nil {
		return nil, s.failure(what, err)
	}
	return resp, nil
}

// failure wraps an etcd call's error: store.ErrUnavailable when etcd
// could not be reached in time or has no leader, else store.ErrStorage.
func (s *Store) failure(what string, err error) error {
	kind := store.ErrStorage
	if unavailable(err) {
		kind = store.ErrUnavailable
	}
	return fmt.Errorf("%w: etcd %s: %s: %v", kind, s.endpoints, what, err)
}

func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	code := status.Code(err)
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}

// newTxnID names the audit records of one transaction.
func newTxnID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("etcdv3: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

var _ store.Store = (*Store)(nil)
