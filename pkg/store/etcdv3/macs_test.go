//go:build linux

package etcdv3_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"mayu/pkg/host"
	"mayu/pkg/store"
	"mayu/pkg/store/storetest"
)

// etcdKeys reads the keys under prefix+dir as key (without prefix+dir) ->
// value.
func etcdKeys(t *testing.T, cli *clientv3.Client, prefix string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	require.NoError(t, err)
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)[len(prefix):]] = string(kv.Value)
	}
	return out
}

func client(t *testing.T, ep string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func withMACs(msg string, macs ...string) store.Step {
	return set(msg, func(h *host.Host) { h.MacAddresses = macs })
}

// race runs the writes at once and returns their errors.
func race(writes ...func() error) []error {
	errs := make([]error, len(writes))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, w := range writes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = w()
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// checkOneWins asserts that of two writes claiming mac exactly one
// succeeded and the other failed with ErrMACTaken naming the winner, and
// that the MAC's key is the winner's; it returns the winner's index.
func checkOneWins(t *testing.T, errs []error, serials []string, mac string, keys map[string]string) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		if err == nil {
			require.Equal(t, -1, winner, "both %v recorded MAC %s", serials, mac)
			winner = i
		}
	}
	require.NotEqual(t, -1, winner, "neither of %v recorded MAC %s: %v", serials, mac, errs)
	loser := errs[1-winner]
	var taken *store.MACTakenError
	require.True(t, errors.As(loser, &taken), "the loser's error is a MACTakenError: %v", loser)
	assert.ErrorIs(t, loser, store.ErrMACTaken)
	assert.Equal(t, mac, taken.MAC)
	assert.Equal(t, serials[winner], taken.Owner.Serial)
	assert.Equal(t, serials[winner], keys["macs/"+mac])
	return winner
}

// Two instances on one etcd recording one MAC for two serials at once,
// as new records and as changes of existing ones: exactly one records it
// each time, the other gets ErrMACTaken naming the winner, and the
// loser's record is left as it was.
func TestTwoInstancesOneMAC(t *testing.T) {
	ep := startEtcd(t)
	a := open(t, ep, "/fleet/")
	b := open(t, ep, "/fleet/")
	cli := client(t, ep)
	const rounds = 12
	wins := [2]int{}
	for i := 0; i < rounds; i++ {
		mac := fmt.Sprintf("02:00:00:00:01:%02x", i)
		serials := []string{fmt.Sprintf("new-a%d", i), fmt.Sprintf("new-b%d", i)}
		errs := race(
			func() error { _, err := a.Create(serials[0], withMACs("host created", mac)); return err },
			func() error { _, err := b.Create(serials[1], withMACs("host created", mac)); return err })
		w := checkOneWins(t, errs, serials, mac, etcdKeys(t, cli, "/fleet/"))
		wins[w]++
		_, err := []store.Store{a, b}[1-w].Get(serials[1-w])
		assert.ErrorIs(t, err, store.ErrNotFound, "the refused record was not created")
	}
	for i := 0; i < rounds; i++ {
		mac := fmt.Sprintf("02:00:00:00:02:%02x", i)
		serials := []string{fmt.Sprintf("old-a%d", i), fmt.Sprintf("old-b%d", i)}
		_, err := a.Create(serials[0], withMACs("host created", fmt.Sprintf("02:00:00:00:03:%02x", i)))
		require.NoError(t, err)
		_, err = b.Create(serials[1], set("host created", func(*host.Host) {}))
		require.NoError(t, err)
		errs := race(
			func() error {
				_, err := a.Update(serials[0], set("collected host mac addresses", func(h *host.Host) {
					h.MacAddresses = append(h.MacAddresses, mac)
				}))
				return err
			},
			func() error {
				_, err := b.Update(serials[1], withMACs("collected host mac addresses", mac))
				return err
			})
		w := checkOneWins(t, errs, serials, mac, etcdKeys(t, cli, "/fleet/"))
		wins[w]++
		h, err := []store.Store{a, b}[1-w].Get(serials[1-w])
		require.NoError(t, err)
		assert.NotContains(t, h.MacAddresses, mac, "the refused change was not made")
	}
	t.Logf("wins of instance a, b: %v", wins)
}

// A record that changes its MACs frees the ones it drops; a record
// removed from etcd (by hand: mayu removes none) or edited by hand to drop
// a MAC leaves a stale key, which the next record to claim the MAC takes
// over; a MAC a record still holds stays refused.
func TestMACKeysFollowTheRecords(t *testing.T) {
	ep := startEtcd(t)
	s := open(t, ep, "/fleet/")
	cli := client(t, ep)
	const m1, m2, m3 = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"
	_, err := s.Create("x", withMACs("host created", m1, "02:00:00:00:00:02"))
	require.NoError(t, err)
	assert.Equal(t, map[string]string{m1: "x", m2: "x"}, etcdKeys(t, cli, "/fleet/macs/"))

	_, err = s.Create("y", withMACs("host created", m2))
	require.ErrorIs(t, err, store.ErrMACTaken)

	_, err = s.Update("x", withMACs("updated host mac addresses", m1, m3))
	require.NoError(t, err)
	assert.Equal(t, map[string]string{m1: "x", m3: "x"}, etcdKeys(t, cli, "/fleet/macs/"), "m2 freed, m3 taken")
	_, err = s.Create("y", withMACs("host created", m2))
	require.NoError(t, err, "a MAC a record dropped is free")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = cli.Delete(ctx, "/fleet/hosts/y")
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/fleet/hosts/x", `{"Serial":"x","MacAddresses":["`+m1+`"]}`)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		h, err := s.Get("x")
		_, gone := s.Get("y")
		return err == nil && len(h.MacAddresses) == 1 && gone != nil
	}, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, map[string]string{m1: "x", m2: "y", m3: "x"}, etcdKeys(t, cli, "/fleet/macs/"), "stale keys until a claim")

	_, err = s.Create("z", withMACs("host created", m2, m3))
	require.NoError(t, err, "the keys of a removed record and of a MAC its record no longer holds are taken over")
	_, err = s.Create("w", withMACs("host created", m1))
	var taken *store.MACTakenError
	require.True(t, errors.As(err, &taken), "%v", err)
	assert.Equal(t, "x", taken.Owner.Serial)
	assert.Equal(t, map[string]string{m1: "x", m2: "z", m3: "z"}, etcdKeys(t, cli, "/fleet/macs/"))

	// A MAC a record keeps gets its key back if it went missing.
	_, err = cli.Delete(ctx, "/fleet/macs/"+m1)
	require.NoError(t, err)
	_, err = s.Update("x", set("updated host state to installing", func(h *host.Host) { h.State = host.Installing }))
	require.NoError(t, err)
	assert.Equal(t, "x", etcdKeys(t, cli, "/fleet/macs/")[m1])
}

// A record may hold up to 32 MACs, all claimed in one transaction; more
// are refused with ErrLimit before etcd would refuse the transaction.
func TestMACLimit(t *testing.T) {
	ep := startEtcd(t)
	s := open(t, ep, "")
	macs := func(first, n int) []string {
		var out []string
		for i := first; i < first+n; i++ {
			out = append(out, fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, byte(i)))
		}
		return out
	}
	_, err := s.Create("many", withMACs("host created", macs(0, 32)...))
	require.NoError(t, err)
	_, err = s.Update("many", withMACs("updated host mac addresses", macs(32, 32)...))
	require.NoError(t, err, "32 dropped and 32 gained in one transaction")
	_, err = s.Update("many", withMACs("updated host mac addresses", macs(0, 33)...))
	assert.ErrorIs(t, err, store.ErrLimit)
	_, err = s.Create("more", withMACs("host created", macs(100, 33)...))
	assert.ErrorIs(t, err, store.ErrLimit)
	h, err := s.Get("many")
	require.NoError(t, err)
	assert.Equal(t, macs(32, 32), h.MacAddresses)
}

// Records written before the MAC keys existed get them when an instance
// opens the prefix; a MAC two of them hold goes to the first serial.
func TestMACKeysCreatedAtStart(t *testing.T) {
	ep := startEtcd(t)
	cli := client(t, ep)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for serial, macs := range map[string]string{"p": `"02:00:00:00:00:01","02:00:00:00:00:02"`, "q": `"02:00:00:00:00:02","02:00:00:00:00:03"`} {
		_, err := cli.Put(ctx, "/old/hosts/"+serial, `{"Serial":"`+serial+`","MacAddresses":[`+macs+`]}`)
		require.NoError(t, err)
	}
	s := open(t, ep, "/old/")
	require.Len(t, s.List(), 2)
	assert.Equal(t, map[string]string{"02:00:00:00:00:01": "p", "02:00:00:00:00:02": "p", "02:00:00:00:00:03": "q"},
		etcdKeys(t, cli, "/old/macs/"))
	_, err := s.Create("r", withMACs("host created", "02:00:00:00:00:03"))
	assert.ErrorIs(t, err, store.ErrMACTaken)
}

// mayu migrate (store.Copy) into etcd gives the copied records their MAC
// keys.
func TestCopyCreatesMACKeys(t *testing.T) {
	ep := startEtcd(t)
	src := store.NewMemory()
	t.Cleanup(func() { _ = src.Close() })
	for i := 1; i <= 3; i++ {
		_, err := src.Create(fmt.Sprintf("s%d", i), withMACs("host created", fmt.Sprintf("02:00:00:00:00:%02x", i), fmt.Sprintf("02:00:00:00:01:%02x", i)))
		require.NoError(t, err)
	}
	dst := open(t, ep, "/migrated/")
	res, err := store.Copy(dst, src, store.CopyOptions{RecordMessage: "host copied", ClusterMessage: func(string) string { return "x" }})
	require.NoError(t, err)
	assert.Equal(t, 3, res.Created)
	want := map[string]string{}
	for i := 1; i <= 3; i++ {
		want[fmt.Sprintf("02:00:00:00:00:%02x", i)] = fmt.Sprintf("s%d", i)
		want[fmt.Sprintf("02:00:00:00:01:%02x", i)] = fmt.Sprintf("s%d", i)
	}
	assert.Equal(t, want, etcdKeys(t, client(t, ep), "/migrated/macs/"))
	_, err = storetest.Register(dst, "s4", storetest.AllocRequest(9))
	require.NoError(t, err)
	_, err = dst.Update("s4", withMACs("collected host mac addresses", "02:00:00:00:01:02"))
	assert.ErrorIs(t, err, store.ErrMACTaken)

	// A source in which two records hold one MAC (hand edits of a cluster
	// directory) is refused at the second, naming both.
	dup := store.NewMemory()
	t.Cleanup(func() { _ = dup.Close() })
	for _, serial := range []string{"d1", "d2"} {
		_, err := dup.Create(serial, withMACs("host created", "02:00:00:00:09:09"))
		require.NoError(t, err)
	}
	_, err = store.Copy(open(t, ep, "/dup/"), dup, store.CopyOptions{RecordMessage: "host copied", ClusterMessage: func(string) string { return "x" }})
	require.ErrorIs(t, err, store.ErrMACTaken)
	assert.Contains(t, err.Error(), "copy d2: ")
	assert.Contains(t, err.Error(), "is recorded on host d1")
}
