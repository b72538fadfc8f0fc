//go:build linux

package etcdv3_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"mayu/pkg/host"
	"mayu/pkg/store"
	"mayu/pkg/store/etcdv3"
	"mayu/pkg/store/storetest"
)

// An instance killed while it holds a reservation (SIGKILL: no Release,
// no revoke) gives its address and profile slot back when its lease's TTL
// runs out, not before.
func TestKilledInstanceFreesReservationsWithItsLease(t *testing.T) {
	if os.Getenv("MAYU_ETCD_RESERVE_HELPER") != "" {
		t.Skip("helper process")
	}
	ep := startEtcd(t)
	b := open(t, ep, "/fleet/")
	cmd := exec.Command(os.Args[0], "-test.run=^TestReserveHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "MAYU_ETCD_RESERVE_HELPER="+ep)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	held := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "RESERVED "); ok {
				held <- a
			}
		}
	}()
	select {
	case a := <-held:
		assert.Equal(t, "10.0.0.1 core", a)
	case <-time.After(30 * time.Second):
		t.Fatal("the helper reserved nothing")
	}
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	killed := time.Now()

	r, err := b.Reserve("after-kill", storetest.AllocRequest(9))
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.3", r.Allocation().Addr.String(), "the dead instance's lease still holds 10.0.0.1")
	r.Release()
	require.Eventually(t, func() bool {
		r, err := b.Reserve("after-ttl", storetest.AllocRequest(9))
		if err != nil {
			return false
		}
		defer r.Release()
		return r.Allocation().Addr.String() == "10.0.0.1" && r.Allocation().Profile == "core"
	}, 30*time.Second, 250*time.Millisecond, "freed with the lease")
	t.Logf("freed %s after the kill (TTL 5 s)", time.Since(killed).Round(100*time.Millisecond))
}

// TestReserveHelper is the instance TestKilledInstanceFreesReservationsWithItsLease kills.
func TestReserveHelper(t *testing.T) {
	ep := os.Getenv("MAYU_ETCD_RESERVE_HELPER")
	if ep == "" {
		t.Skip("run by TestKilledInstanceFreesReservationsWithItsLease")
	}
	s, err := etcdv3.Open(etcdv3.Options{Endpoints: []string{ep}, Prefix: "/fleet/", SessionTTL: 5 * time.Second})
	require.NoError(t, err)
	r, err := s.Reserve("doomed", storetest.AllocRequest(9))
	require.NoError(t, err)
	fmt.Printf("RESERVED %s %s\n", r.Allocation().Addr, r.Allocation().Profile)
	time.Sleep(time.Minute)
}

// A record someone wrote into etcd by hand that does not decode is not
// served (the copy this instance had is kept), and its address stays
// taken; a record deleted in etcd leaves every instance.
func TestHandWrittenRecords(t *testing.T) {
	ep := startEtcd(t)
	s := open(t, ep, "/fleet/")
	_, err := storetest.Register(s, "kept", storetest.AllocRequest(9))
	require.NoError(t, err)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = cli.Put(ctx, "/fleet/hosts/kept", "{not json")
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/fleet/hosts/other", `{"Serial":"someone-else"}`)
	require.NoError(t, err)
	// A record written after them: once the watch brought it, it brought
	// both before it.
	_, err = cli.Put(ctx, "/fleet/hosts/marker", `{"Serial":"marker"}`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, err := s.Get("marker"); return err == nil }, 10*time.Second, 20*time.Millisecond)
	h, err := s.Get("kept")
	require.NoError(t, err, "the last good copy is served")
	assert.Equal(t, "10.0.0.1", h.InternalAddr.String())
	_, err = s.Get("other")
	assert.ErrorIs(t, err, store.ErrNotFound, "a record naming another serial is not taken")
	_, err = s.Update("kept", store.Step{Message: "x", Apply: func(h *host.Host) error { h.Cabinet = 2; return nil }})
	require.ErrorIs(t, err, store.ErrStorage, "a change is not made on a copy etcd no longer holds")
	assert.Contains(t, err.Error(), "/fleet/hosts/kept")
	fresh := open(t, ep, "/fleet/")
	r, err := fresh.Reserve("next", storetest.AllocRequest(9))
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.3", r.Allocation().Addr.String(), "an instance that never read the record: its address key still holds 10.0.0.1")
	r.Release()

	_, err = s.Create("gone", store.Step{Message: "host created", Apply: func(h *host.Host) error {
		h.InternalAddr = net.ParseIP("10.0.0.8").To4()
		return nil
	}})
	require.NoError(t, err)
	_, err = cli.Delete(ctx, "/fleet/hosts/gone")
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, err := s.Get("gone"); return err != nil }, 10*time.Second, 20*time.Millisecond)
	_, err = s.Update("gone", store.Step{Message: "x", Apply: func(h *host.Host) error { h.Cabinet = 1; return nil }})
	assert.ErrorIs(t, err, store.ErrNotFound)
}
