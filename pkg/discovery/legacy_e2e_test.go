//go:build linux

package discovery

// An upgrade from Mayu 0.11, against a real etcd (Debian's etcd-server 3.4
// with --enable-v2) standing in for the one 0.11 kept its registries in.
// The helpers (needEtcd, startMember, startDiscovery, ...) are those of
// etcd_e2e_test.go.

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/proctest"
)

// v2Get answers a GET the way a member's discovery client sees it: the
// node and the X-Etcd-Index. A missing key gives a nil node.
func v2Get(t *testing.T, u string) (*Node, string) {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, resp.Header.Get("X-Etcd-Index")
	}
	require.Equal(t, http.StatusOK, resp.StatusCode, u)
	var r Response
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	return r.Node, resp.Header.Get("X-Etcd-Index")
}

// startLegacyEtcd runs a single-member etcd serving the v2 API and waits
// until it answers there.
func startLegacyEtcd(t *testing.T, bins etcdBins) *member {
	t.Helper()
	m := startMember(t, bins, "legacy", "--enable-v2", "--initial-cluster", "legacy={peer}")
	waitFor(t, time.Minute, "legacy etcd serves the v2 API", func() (bool, string) {
		if m.hasExited() {
			t.Fatalf("legacy etcd exited: %v\n%s", m.waitErr, tail(m.log(), 40))
		}
		resp, err := http.Get(m.clientURL + "/v2/keys/")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return m
}

// TestUpgradeFromLegacyEtcd: a Mayu 0.11 (proxy mode, the way 0.11 worked)
// keeps its registries in etcd; one member of a three-member cluster has
// registered and waits for its peers when Mayu is upgraded in place (same
// address, a new registry directory). The new Mayu imports every token
// exactly, the waiting member's cluster completes through it, and a later
// start never imports again.
func TestUpgradeFromLegacyEtcd(t *testing.T) {
	bins := needEtcd(t)
	old := startLegacyEtcd(t, bins)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	mayu011, err := NewProxy(ProxyConfig{Endpoint: strings.TrimPrefix(old.clientURL, "http://"), BaseURL: "http://" + addr, DefaultSize: 3})
	require.NoError(t, err)
	ds := startDiscovery(t, ln, mayu011)

	// Token a: a real cluster, half-formed at the upgrade.
	a, err := mayu011.NewToken(context.Background(), 3)
	require.NoError(t, err)
	durlA := mayu011.URL(a)
	m1 := startMember(t, bins, "m1", "--discovery="+durlA, "--discovery-fallback=exit")
	waitFor(t, time.Minute, "m1 registered and waiting for peers", func() (bool, string) {
		if m1.hasExited() {
			t.Fatalf("m1 exited: %v\n%s", m1.waitErr, tail(m1.log(), 40))
		}
		return strings.Contains(m1.log(), "waiting for more"), tail(m1.log(), 1)
	})

	// Tokens written directly: b with two of five members, c with none; and
	// two that cannot be imported (a name outside the token alphabet, a
	// directory without _config/size).
	const b, c = "0f5e1c0ee7b14d3f8a3a6f0fbbd2c4a1", "6c1b3f5d2a9e4e7c8d0b1a2f3e4d5c6b"
	proctest.EtcdV2Create(t, old.clientURL, RegistryPrefix+"/"+b+"/_config/size", "5")
	proctest.EtcdV2Create(t, old.clientURL, RegistryPrefix+"/"+b+"/8e9e05c52164694d", "n1=http://10.0.0.1:2380")
	proctest.EtcdV2Create(t, old.clientURL, RegistryPrefix+"/"+b+"/91bc3c398fb3c146", "n2=http://10.0.0.2:2380")
	proctest.EtcdV2Create(t, old.clientURL, RegistryPrefix+"/"+c+"/_config/size", "1")
	proctest.EtcdV2Create(t, old.clientURL, RegistryPrefix+"/not.a.token/_config/size", "3")
	proctest.EtcdV2Create(t, old.clientURL, RegistryPrefix+"/7d2a0c1e9b8f4a6d5c3e2f1a0b9c8d7e/0123456789abcdef", "x=http://10.0.0.9:2380")

	// What the members of each token see in the old etcd.
	want := map[string][2]*Node{}
	for _, tok := range []string{a, b, c} {
		// sorted: etcd lists in map order otherwise, and members sort
		// by createdIndex themselves.
		list, _ := v2Get(t, old.clientURL+"/v2/keys"+RegistryPrefix+"/"+tok+"?sorted=true")
		size, _ := v2Get(t, old.clientURL+"/v2/keys"+RegistryPrefix+"/"+tok+"/_config/size")
		require.NotNil(t, list)
		require.NotNil(t, size)
		want[tok] = [2]*Node{list, size}
	}
	require.Len(t, want[a][0].Nodes, 1)
	require.Len(t, want[b][0].Nodes, 2)
	_, oldIndex := v2Get(t, old.clientURL+"/v2/keys"+RegistryPrefix)

	// The upgrade: the 0.11 daemon stops, the new one starts on its address.
	ds.stop()
	dir := t.TempDir()
	cfg := InternalConfig{Dir: dir, BaseURL: "http://" + addr, DefaultSize: 3, LegacyEtcd: old.clientURL}
	svc, err := NewInternal(cfg)
	require.NoError(t, err)
	ds = startDiscovery(t, listenAgain(t, addr), svc)
	assert.Equal(t, []string{importDoneFile}, markers(t, dir))

	for tok, w := range want {
		list, index := v2Get(t, svc.URL(tok)+"?sorted=true")
		assert.Equal(t, w[0], list, "members of %s as the old etcd answered them", tok)
		size, _ := v2Get(t, svc.URL(tok)+"/_config/size")
		assert.Equal(t, w[1], size, "_config/size of %s", tok)
		ours, err := strconv.ParseUint(index, 10, 64)
		require.NoError(t, err)
		theirs, err := strconv.ParseUint(oldIndex, 10, 64)
		require.NoError(t, err)
		assert.GreaterOrEqual(t, ours, theirs, "the etcd index carries on from the old etcd's")
	}
	for _, tok := range []string{"7d2a0c1e9b8f4a6d5c3e2f1a0b9c8d7e"} {
		list, _ := v2Get(t, svc.URL(tok))
		assert.Nil(t, list, "a directory without _config/size is not imported")
	}
	var rec importRecord
	body, err := os.ReadFile(filepath.Join(dir, importDoneFile))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(body, &rec))
	assert.ElementsMatch(t, []string{a, b, c}, rec.Imported)
	assert.Contains(t, rec.Skipped, "not.a.token")
	assert.Contains(t, rec.Skipped, "7d2a0c1e9b8f4a6d5c3e2f1a0b9c8d7e")
	assert.Equal(t, old.clientURL, rec.From)

	// The half-formed cluster completes through the new Mayu: m1 waited
	// from the old etcd's index, m2 and m3 register with us.
	m2 := startMember(t, bins, "m2", "--discovery="+durlA, "--discovery-fallback=exit")
	m3 := startMember(t, bins, "m3", "--discovery="+durlA, "--discovery-fallback=exit")
	checkCluster(t, bins, m1, m2, m3)
	assert.Equal(t, "m1="+m1.peerURL, registered(t, durlA)[0], "m1 stays first")
	oldList, _ := v2Get(t, old.clientURL+"/v2/keys"+RegistryPrefix+"/"+a)
	assert.Len(t, oldList.Nodes, 1, "the new registrations went to mayu, not to the old etcd")

	// Later starts never import again: not with registries of their own,
	// and not after an operator removed every registry file either.
	ds.stop()
	const d = "4b3a29180f1e2d3c4b5a69788796a5b4"
	proctest.EtcdV2Create(t, old.clientURL, RegistryPrefix+"/"+d+"/_config/size", "3")
	again, err := NewInternal(cfg)
	require.NoError(t, err)
	assert.Len(t, again.regs, 3)
	assert.NotContains(t, again.regs, d)
	assert.Len(t, registeredIn(t, again, a), 3, "the registrations made after the import are kept")
	files, err := filepath.Glob(filepath.Join(dir, "*"+fileSuffix))
	require.NoError(t, err)
	require.Len(t, files, 3)
	for _, f := range files {
		require.NoError(t, os.Remove(f))
	}
	emptied, err := NewInternal(cfg)
	require.NoError(t, err)
	assert.Empty(t, emptied.regs)
}

// registeredIn lists token's members as svc holds them.
func registeredIn(t *testing.T, svc *Internal, token string) []*Node {
	t.Helper()
	r, ok := svc.regs[token]
	require.True(t, ok, token)
	return r.dirNode("", true, false).Nodes
}

// TestInterruptedLegacyImport: a start that died in the middle of an
// import (the started marker is there, some registries are written)
// redoes the whole import; if the old etcd is gone by then, start fails
// with a message saying so instead of serving half of it.
func TestInterruptedLegacyImport(t *testing.T) {
	bins := needEtcd(t)
	old := startLegacyEtcd(t, bins)
	const a, b = "11111111111111111111111111111111", "22222222222222222222222222222222"
	proctest.EtcdV2Create(t, old.clientURL, RegistryPrefix+"/"+a+"/_config/size", "3")
	proctest.EtcdV2Create(t, old.clientURL, RegistryPrefix+"/"+a+"/8e9e05c52164694d", "n1=http://10.0.0.1:2380")
	proctest.EtcdV2Create(t, old.clientURL, RegistryPrefix+"/"+b+"/_config/size", "3")
	proctest.EtcdV2Create(t, old.clientURL, RegistryPrefix+"/"+b+"/91bc3c398fb3c146", "n2=http://10.0.0.2:2380")

	// The interrupted start: a imported, b not yet.
	dir := t.TempDir()
	first, err := NewInternal(InternalConfig{Dir: dir, BaseURL: "http://mayu.test", LegacyEtcd: old.clientURL})
	require.NoError(t, err)
	require.NoError(t, os.Remove(filepath.Join(dir, b+fileSuffix)))
	require.NoError(t, os.Rename(filepath.Join(dir, importDoneFile), filepath.Join(dir, importStartedFile)))

	gone := freeAddr(t) // nothing listens there
	_, err = NewInternal(InternalConfig{Dir: dir, BaseURL: "http://mayu.test", LegacyEtcd: gone})
	require.ErrorIs(t, err, ErrUnavailable)
	assert.Contains(t, err.Error(), "interrupted")
	assert.Contains(t, err.Error(), importStartedFile)

	resumed, err := NewInternal(InternalConfig{Dir: dir, BaseURL: "http://mayu.test", LegacyEtcd: old.clientURL})
	require.NoError(t, err)
	assert.Equal(t, []string{importDoneFile}, markers(t, dir))
	require.Len(t, resumed.regs, 2)
	for _, tok := range []string{a, b} {
		assert.Equal(t, first.regs[tok], resumed.regs[tok], "token %s", tok)
	}
}
