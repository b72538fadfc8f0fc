//go:build linux

package etcdv3_test

// These tests run against a real etcd (Debian's etcd-server, started by
// proctest.StartEtcd on loopback ports): they skip loudly without it and
// fail instead under MAYU_E2E=required (CI).

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/pkg/store"
	"mayu/pkg/store/etcdv3"
	"mayu/pkg/store/storetest"
)

// startEtcd runs a single-member etcd for the test and returns its client
// address.
func startEtcd(t *testing.T) string {
	t.Helper()
	e := proctest.StartEtcd(t, "store", "--initial-cluster", "store={peer}")
	return strings.TrimPrefix(e.ClientURL, "http://")
}

var prefixes atomic.Int64

// open opens a store on endpoint under prefix (a fresh one when ""),
// waiting up to 30 s for etcd to serve, and closes it at the end of the
// test.
func open(t *testing.T, endpoint, prefix string) *etcdv3.Store {
	t.Helper()
	s := dial(t, endpoint, prefix)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

// dial is open without the Close at the end of the test.
func dial(t *testing.T, endpoint, prefix string) *etcdv3.Store {
	t.Helper()
	if prefix == "" {
		prefix = fmt.Sprintf("/t%d/", prefixes.Add(1))
	}
	var s *etcdv3.Store
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err = etcdv3.Open(etcdv3.Options{Endpoints: []string{endpoint}, Prefix: prefix, Timeout: 3 * time.Second})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.NoError(t, err)
	return s
}

func TestConformance(t *testing.T) {
	ep := startEtcd(t)
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, ep, "") })
}

func set(msg string, fn func(h *host.Host)) store.Step {
	return store.Step{Message: msg, Apply: func(h *host.Host) error { fn(h); return nil }}
}

// Two instances on one etcd registering machines at once never hand out
// one address twice and fill the profile quantities exactly; each sees
// every record, and an address range filled by both ends in ErrRangeFull
// for the rest, never in a shared address.
func TestTwoInstancesAllocate(t *testing.T) {
	ep := startEtcd(t)
	a := open(t, ep, "/fleet/")
	b := open(t, ep, "/fleet/")
	const machines, last = 80, 62 // 61 addresses for 80 machines
	got := storetest.RegisterAtOnce(t, []store.Store{a, b}, storetest.Serials("m", machines), storetest.AllocRequest(last))
	assert.Equal(t, storetest.Outcome{OK: last - 1, RangeFull: machines - (last - 1)}, got)

	for _, s := range []*etcdv3.Store{a, b} {
		var hosts []host.Host
		require.Eventually(t, func() bool { hosts = s.List(); return len(hosts) == last-1 }, 10*time.Second, 20*time.Millisecond,
			"each instance sees every record")
		storetest.CheckFleet(t, hosts, map[string]int{"core": 2, "storage": 1, "worker": last - 4})
		assert.Equal(t, 2, s.ProfileCount("core"))
	}
}

// Updates of one record from two instances at once are compare-and-swaps:
// none is lost, and both instances end with the same record.
func TestTwoInstancesUpdate(t *testing.T) {
	ep := startEtcd(t)
	a := open(t, ep, "/fleet/")
	b := open(t, ep, "/fleet/")
	_, err := a.Create("shared", set("host created", func(h *host.Host) { h.State = host.Configured }))
	require.NoError(t, err)
	const each = 15
	var wg sync.WaitGroup
	for _, s := range []store.Store{a, b} {
		for i := 0; i < each; i++ {
			wg.Add(1)
			go func(s store.Store) {
				defer wg.Done()
				_, err := s.Update("shared", set("updated host cabinet", func(h *host.Host) { h.Cabinet++ }))
				assert.NoError(t, err)
			}(s)
		}
	}
	wg.Wait()
	for _, s := range []*etcdv3.Store{a, b} {
		require.Eventually(t, func() bool { h, err := s.Get("shared"); return err == nil && h.Cabinet == 2*each },
			10*time.Second, 20*time.Millisecond, "no update is lost and both instances see the last")
	}
}

// An instance's watch brings another's changes: lookups, profile counts,
// the cluster settings and Subscribe all follow.
func TestWatchFollowsOtherInstance(t *testing.T) {
	ep := startEtcd(t)
	a := open(t, ep, "/fleet/")
	b := open(t, ep, "/fleet/")
	calls := make(chan struct{}, 16)
	b.Subscribe(func() { calls <- struct{}{} })
	drain(calls)

	_, err := a.Create("w1", set("host created", func(h *host.Host) {
		h.MacAddresses = []string{"00:11:22:33:44:55"}
		h.InternalAddr = net.ParseIP("10.0.0.7").To4()
		h.Profile = "core"
	}))
	require.NoError(t, err)
	select {
	case <-calls:
	case <-time.After(10 * time.Second):
		t.Fatal("the other instance's subscriber was not called")
	}
	h, err := b.ByMAC("00:11:22:33:44:55")
	require.NoError(t, err)
	assert.Equal(t, "w1", h.Serial)
	_, err = b.ByIP(net.ParseIP("10.0.0.7"))
	require.NoError(t, err)
	assert.Equal(t, 1, b.ProfileCount("core"))

	// b updates it although a made it; a sees that in turn.
	_, err = b.Update("w1", set("updated host state to installing", func(h *host.Host) { h.State = host.Installing }))
	require.NoError(t, err)
	require.Eventually(t, func() bool { h, err := a.Get("w1"); return err == nil && h.State == host.Installing },
		10*time.Second, 20*time.Millisecond)

	_, err = a.UpdateCluster("Set default etcd cluster to 'tok'", func(c *store.Cluster) error {
		c.Config.DefaultEtcdClusterToken = "tok"
		return nil
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return b.Cluster().Config.DefaultEtcdClusterToken == "tok" }, 10*time.Second, 20*time.Millisecond)
	// b's compare-and-swap goes on from the settings a wrote.
	c, err := b.UpdateCluster("no change", func(c *store.Cluster) error { return nil })
	require.NoError(t, err)
	assert.Equal(t, "tok", c.Config.DefaultEtcdClusterToken)
}

// An update through an instance that has not seen the record yet (its
// watch is behind) reads it from etcd instead of answering not found.
func TestUpdateReadsThroughToEtcd(t *testing.T) {
	ep := startEtcd(t)
	a := open(t, ep, "/fleet/")
	b := open(t, ep, "/fleet/")
	for i := 0; i < 20; i++ {
		serial := fmt.Sprintf("rt%d", i)
		_, err := a.Create(serial, set("host created", func(h *host.Host) { h.State = host.Configured }))
		require.NoError(t, err)
		_, err = b.Update(serial, set("updated host cabinet", func(h *host.Host) { h.Cabinet = 3 }))
		require.NoError(t, err, serial)
		_, err = b.Create(serial, set("host created", func(*host.Host) {}))
		require.ErrorIs(t, err, store.ErrExists, serial)
	}
}

// Every step that changed a record is one audit record, in revision
// order, holding the record as the step left it.
func TestAuditRecords(t *testing.T) {
	ep := startEtcd(t)
	s := open(t, ep, "")
	_, err := s.Create("a1",
		set("host created", func(h *host.Host) { h.State = host.Configured }),
		set("updated host state", func(h *host.Host) {}), // no change: no record
		set("updated host cabinet", func(h *host.Host) { h.Cabinet = 4 }))
	require.NoError(t, err)
	_, err = s.Update("a1", set("updated host state to installing\n\nPrincipal: admin:ops", func(h *host.Host) { h.State = host.Installing }))
	require.NoError(t, err)
	_, err = s.UpdateCluster("Set default etcd cluster to 'x'", func(c *store.Cluster) error {
		c.Config.DefaultEtcdClusterToken = "x"
		return nil
	})
	require.NoError(t, err)

	recs, err := s.Audit(0)
	require.NoError(t, err)
	var subjects []string
	for _, r := range recs {
		subjects = append(subjects, r.Subject())
	}
	assert.Equal(t, []string{"a1: host created", "a1: updated host cabinet", "a1: updated host state to installing", "Set default etcd cluster to 'x'"}, subjects)
	assert.Equal(t, recs[0].Revision, recs[1].Revision, "the steps of one create are one revision")
	assert.Equal(t, []int{0, 1}, []int{recs[0].Step, recs[1].Step})
	assert.Less(t, recs[1].Revision, recs[2].Revision)
	assert.Less(t, recs[2].Revision, recs[3].Revision)
	first, err := host.Unmarshal([]byte(recs[0].Record))
	require.NoError(t, err)
	assert.Equal(t, uint(0), first.Cabinet, "the record as the first step left it")
	third, err := host.Unmarshal([]byte(recs[2].Record))
	require.NoError(t, err)
	assert.Equal(t, host.Installing, third.State)
	assert.Equal(t, uint(4), third.Cabinet)
	want, err := third.Marshal()
	require.NoError(t, err)
	assert.Equal(t, string(want), recs[2].Record, "conf.json's bytes")
	assert.Contains(t, recs[2].Message, "Principal: admin:ops")
	assert.Contains(t, recs[3].Cluster, `"DefaultEtcdClusterToken": "x"`)

	later, err := s.Audit(recs[1].Revision)
	require.NoError(t, err)
	assert.Len(t, later, 2, "Audit(after) starts past a revision")
}

// A reservation of an instance that goes away without using it is freed
// with its lease: its address and slot go to the next registration.
func TestClosedInstanceFreesReservations(t *testing.T) {
	ep := startEtcd(t)
	b := open(t, ep, "/fleet/")
	a := dial(t, ep, "/fleet/")
	r, err := a.Reserve("gone", storetest.AllocRequest(9))
	require.NoError(t, err)
	assert.Equal(t, store.Allocation{Profile: "core", Addr: net.ParseIP("10.0.0.1").To4()}, r.Allocation())
	held, err := b.Reserve("other", storetest.AllocRequest(9))
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.3", held.Allocation().Addr.String(), "a's reservation holds 10.0.0.1 against b (10.0.0.2 is not allocatable)")
	held.Release()
	require.NoError(t, a.Close()) // revokes a's lease
	h, err := storetest.Register(b, "next", storetest.AllocRequest(9))
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.1", h.InternalAddr.String())
	assert.Equal(t, "core", h.Profile)
}

// Without etcd, Open fails at once with ErrUnavailable naming the
// endpoint; an instance whose etcd stops answers writes with
// ErrUnavailable within its timeout and keeps serving reads.
func TestUnreachable(t *testing.T) {
	dead := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	start := time.Now()
	_, err := etcdv3.Open(etcdv3.Options{Endpoints: []string{dead}, Timeout: time.Second})
	require.ErrorIs(t, err, store.ErrUnavailable)
	assert.Contains(t, err.Error(), dead)
	assert.Less(t, time.Since(start), 10*time.Second)

	e := proctest.StartEtcd(t, "down", "--initial-cluster", "down={peer}")
	ep := strings.TrimPrefix(e.ClientURL, "http://")
	s := open(t, ep, "")
	_, err = s.Create("kept", set("host created", func(h *host.Host) { h.State = host.Configured }))
	require.NoError(t, err)
	require.NoError(t, e.Kill(10*time.Second))

	for name, write := range map[string]func() error{
		"update":  func() error { _, err := s.Update("kept", set("x", func(h *host.Host) { h.Cabinet = 9 })); return err },
		"create":  func() error { _, err := s.Create("new", set("host created", func(*host.Host) {})); return err },
		"reserve": func() error { _, err := s.Reserve("new", storetest.AllocRequest(9)); return err },
		"cluster": func() error {
			_, err := s.UpdateCluster("x", func(c *store.Cluster) error { c.Config.DefaultEtcdClusterToken = "y"; return nil })
			return err
		},
	} {
		start := time.Now()
		err := write()
		require.ErrorIs(t, err, store.ErrUnavailable, name)
		assert.Contains(t, err.Error(), ep, name)
		assert.Less(t, time.Since(start), 15*time.Second, name)
	}
	h, err := s.Get("kept")
	require.NoError(t, err, "reads are served from memory")
	assert.Equal(t, uint(0), h.Cabinet)
}

func TestTLSFiles(t *testing.T) {
	_, err := etcdv3.TLSFiles{CertFile: "c.pem"}.Config()
	assert.ErrorContains(t, err, "needs its key")
	_, err = etcdv3.TLSFiles{CAFile: "/nonexistent/ca.pem"}.Config()
	assert.ErrorContains(t, err, "/nonexistent/ca.pem")
	c, err := etcdv3.TLSFiles{}.Config()
	require.NoError(t, err)
	assert.Nil(t, c.RootCAs, "the system's CAs")
}

func drain(c chan struct{}) {
	time.Sleep(100 * time.Millisecond)
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

// An instance with a name stamps it on every record it writes, and in the
// audit record of every step; a write that changes nothing leaves the
// previous writer's name; a store without a name leaves the field alone.
func TestInstanceStamp(t *testing.T) {
	ep := startEtcd(t)
	prefix := fmt.Sprintf("/t%d/", prefixes.Add(1))
	named := func(name string) *etcdv3.Store {
		s, err := etcdv3.Open(etcdv3.Options{Endpoints: []string{ep}, Prefix: prefix, Timeout: 3 * time.Second, Instance: name})
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, s.Close()) })
		return s
	}
	a, b := named("site-a:4080"), named("site-b:4080")
	h, err := a.Create("m1", set("host created", func(h *host.Host) { h.Profile = "core" }))
	require.NoError(t, err)
	assert.Equal(t, "site-a:4080", h.Instance)
	require.Eventually(t, func() bool { _, err := b.Get("m1"); return err == nil }, 10*time.Second, 20*time.Millisecond)

	h, err = b.Update("m1", set("nothing", func(h *host.Host) {}))
	require.NoError(t, err)
	assert.Equal(t, "site-a:4080", h.Instance, "a write without changes writes nothing")
	h, err = b.Update("m1", set("updated state", func(h *host.Host) { h.State = host.Running }))
	require.NoError(t, err)
	assert.Equal(t, "site-b:4080", h.Instance)
	require.Eventually(t, func() bool { g, _ := a.Get("m1"); return g.Instance == "site-b:4080" }, 10*time.Second, 20*time.Millisecond)

	recs, err := a.Audit(0)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	for i, want := range []string{"site-a:4080", "site-b:4080"} {
		var rec host.Host
		require.NoError(t, json.Unmarshal([]byte(recs[i].Record), &rec))
		assert.Equal(t, want, rec.Instance, recs[i].Subject())
	}

	anon := open(t, ep, prefix)
	h, err = anon.Update("m1", set("updated profile", func(h *host.Host) { h.Profile = "worker" }))
	require.NoError(t, err)
	assert.Equal(t, "site-b:4080", h.Instance, "an unnamed store (mayu migrate) copies the field as it is")
}
