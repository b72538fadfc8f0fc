//go:build linux

package main

// Upgrading in place from Mayu 0.11, whose etcd discovery tokens lived in
// the etcd at 127.0.0.1:2379: the real mayu binary, pointed at a real etcd
// (Debian's etcd-server with --enable-v2) on a free loopback port through
// the hidden --legacy-etcd-endpoint, imports them on its first start.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/discovery"
	"mayu/pkg/proctest"
)

// oldEtcd runs a single-member etcd serving the v2 keys API, killed by PID
// when the test ends. It skips (fails under MAYU_E2E=required) without the
// etcd binary.
func oldEtcd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("MAYU_E2E") == "required" {
			t.Fatal("MAYU_E2E=required and etcd is not in PATH (Debian package etcd-server)")
		}
		t.Skip("SKIPPING the upgrade-from-0.11 test: etcd is not in PATH (Debian package etcd-server)")
	}
	dir := t.TempDir()
	client := fmt.Sprintf("http://127.0.0.1:%d", proctest.FreePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", proctest.FreePort(t))
	cmd := exec.Command(bin, "--name", "old", "--data-dir", filepath.Join(dir, "data"), "--enable-v2",
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "old="+peer)
	out := &proctest.Output{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(client + "/v2/keys/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return client
			}
		}
		select {
		case <-exited:
			t.Fatalf("etcd exited:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd does not serve the v2 API after 1m (%v):\n%s", err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// members GETs a token directory: the node a member's discovery client
// reads (nil if the token is unknown), sorted by key (etcd lists in map
// order otherwise; members sort by createdIndex themselves).
func members(t *testing.T, u string) *discovery.Node {
	t.Helper()
	resp, err := http.Get(u + "?sorted=true")
	require.NoError(t, err)
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	require.Equal(t, http.StatusOK, resp.StatusCode, u)
	var r discovery.Response
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	return r.Node
}

func TestProcessUpgradeImportsLegacyEtcd(t *testing.T) {
	etcd := oldEtcd(t)
	// The registries 0.11 left: its default token, half-formed (two of
	// three members), and a finished single-member one.
	const a, b = "41f07d10ab835b22071a32d5c1b75a6d", "9b2c0e3f4a5d6e7f8091a2b3c4d5e6f7"
	proctest.EtcdV2Create(t, etcd, discovery.RegistryPrefix+"/"+a+"/_config/size", "3")
	proctest.EtcdV2Create(t, etcd, discovery.RegistryPrefix+"/"+a+"/8e9e05c52164694d", "core-1=http://10.9.0.21:2380")
	proctest.EtcdV2Create(t, etcd, discovery.RegistryPrefix+"/"+a+"/91bc3c398fb3c146", "core-2=http://10.9.0.22:2380")
	proctest.EtcdV2Create(t, etcd, discovery.RegistryPrefix+"/"+b+"/_config/size", "1")
	proctest.EtcdV2Create(t, etcd, discovery.RegistryPrefix+"/"+b+"/fd422379fda50e48", "solo=http://10.9.0.30:2380")
	want := map[string]*discovery.Node{}
	for _, tok := range []string{a, b} {
		want[tok] = members(t, etcd+"/v2/keys/_etcd/registry/"+tok)
		require.NotNil(t, want[tok])
	}

	// 0.11's cluster directory: a git repository whose cluster.json names
	// the default token.
	dir := t.TempDir()
	cluster := filepath.Join(dir, "cluster")
	require.NoError(t, os.MkdirAll(cluster, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(cluster, "cluster.json"),
		[]byte(`{"GitStore":true,"Config":{"DefaultEtcdClusterToken":"`+a+`"}}`), 0o644))
	git(t, cluster, "init", "-q")
	git(t, cluster, "-c", "user.name=mayu", "-c", "user.email=mayu@localhost", "add", "cluster.json")
	git(t, cluster, "-c", "user.name=mayu", "-c", "user.email=mayu@localhost", "commit", "-q", "-m", "Set default etcd cluster to '"+a+"'")

	d := startDaemon(t, dir, "--no-tls", "--legacy-etcd-endpoint="+etcd)
	d.waitReady(d.client)
	for tok, w := range want {
		assert.Equal(t, w, members(t, d.base+"/etcd/"+tok), "token %s answers what the old etcd did", tok)
	}
	log := d.out.String()
	assert.Contains(t, log, "Mayu 0.11's etcd discovery registries imported")
	assert.Contains(t, log, "tokens=2 members=3 skipped=0")
	assert.Equal(t, 2, strings.Count(log, "etcd discovery token imported from Mayu 0.11's etcd"))
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "0.11") {
			t.Log(line)
		}
	}
	cl, err := os.ReadFile(filepath.Join(cluster, "cluster.json"))
	require.NoError(t, err)
	assert.Contains(t, string(cl), a, "the default token stays 0.11's")
	require.NoError(t, d.stop())

	// A token made in the old etcd after the upgrade is not imported by
	// the next start: the import happened once.
	const c = "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c"
	proctest.EtcdV2Create(t, etcd, discovery.RegistryPrefix+"/"+c+"/_config/size", "3")
	again := startDaemon(t, dir, "--no-tls", "--legacy-etcd-endpoint="+etcd)
	again.waitReady(again.client)
	assert.NotContains(t, again.out.String(), "imported from Mayu 0.11")
	assert.NotContains(t, again.out.String(), "Mayu 0.11's etcd discovery registries imported")
	assert.Nil(t, members(t, again.base+"/etcd/"+c))
	assert.Equal(t, want[a], members(t, again.base+"/etcd/"+a))
	require.NoError(t, again.stop())
}

// TestProcessNoLegacyEtcd: the common case, nothing on the old endpoint:
// mayu starts at once and creates its default token as before.
func TestProcessNoLegacyEtcd(t *testing.T) {
	nobody := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	dir := t.TempDir()
	start := time.Now()
	d := startDaemon(t, dir, "--no-tls", "--legacy-etcd-endpoint="+nobody)
	d.waitReady(d.client)
	took := time.Since(start)
	assert.Less(t, took, 5*time.Second)
	assert.Contains(t, d.out.String(), "no Mayu 0.11 etcd to import discovery registries from")
	var cl struct {
		Config struct{ DefaultEtcdClusterToken string }
	}
	b, err := os.ReadFile(filepath.Join(d.cluster, "cluster.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &cl))
	require.NotEmpty(t, cl.Config.DefaultEtcdClusterToken)
	assert.NotNil(t, members(t, d.base+"/etcd/"+cl.Config.DefaultEtcdClusterToken))
	t.Logf("ready after %s", took)
}
