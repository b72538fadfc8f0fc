//go:build linux

package main

// Process tests of --store=etcd and mayu migrate: the real mayu and
// mayuctl binaries against a real etcd (Debian's etcd-server) on
// loopback. They skip loudly without etcd, and fail instead under
// MAYU_E2E=required (CI).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/pkg/store"
	"mayu/pkg/store/etcdv3"
	"mayu/pkg/store/gitdir"
)

// startStoreEtcd runs a single-member etcd and returns its host:port.
func startStoreEtcd(t *testing.T) string {
	t.Helper()
	e := proctest.StartEtcd(t, "mayu-store", "--initial-cluster", "mayu-store={peer}")
	return strings.TrimPrefix(e.ClientURL, "http://")
}

// walk takes serial through the machine's life cycle over HTTP on d, up
// to running.
func walk(t *testing.T, d *proctest.Daemon, serial, mac string) {
	t.Helper()
	code, body := d.Do("GET", "/first-stage-script/"+serial, "")
	require.Equal(t, 200, code, body)
	facts := fmt.Sprintf(`{"Serial":%q,"NetDevs":[{"Name":"eth0","MacAddress":%q}],"IPMIAddress":"","ConnectedNIC":"eth0"}`, serial, mac)
	code, body = d.Do("POST", "/final-cloud-config.yaml", facts)
	require.Equal(t, 200, code, body)
	code, body = d.Do("PUT", "/admin/host/"+serial+"/set_installed", "")
	require.Equal(t, 202, code, body)
	code, body = d.Do("PUT", "/admin/host/"+serial+"/boot_complete", `{"CoreOSVersion":"1068.6.0"}`)
	require.Equal(t, 202, code, body)
}

// ctl runs the real mayuctl against d.
func ctl(t *testing.T, d *proctest.Daemon, args ...string) proctest.Result {
	t.Helper()
	all := append([]string{"--no-tls", "--host=127.0.0.1", "--port=" + strconv.Itoa(d.Flags.Port), "--timeout=20s",
		"--token-file=" + d.Flags.TokenFile}, args...)
	return proctest.Run(t, proctest.Build(t).Mayuctl, nil, all...)
}

// Two mayu instances on one etcd serve one fleet: machines registered
// through either get distinct addresses and the profile quantities hold
// across both, mayuctl against either lists every machine, and the audit
// records of every step are in etcd.
func TestProcessEtcdStoreTwoInstances(t *testing.T) {
	ep := startStoreEtcd(t)
	storeFlags := []string{"--no-tls", "--store=etcd", "--store-endpoints=" + ep, "--store-prefix=/fleet/"}
	a := startDaemon(t, t.TempDir(), append(storeFlags, "--instance-name=rack-a")...)
	a.WaitReady()
	walk(t, a, "0800278e158a-0", "08:00:27:8e:15:8a")
	walk(t, a, "0800278e158b-1", "08:00:27:8e:15:8b")

	b := startDaemon(t, t.TempDir(), storeFlags...) // named by default: host name:port
	b.WaitReady()
	walk(t, b, "0800278e158c-2", "08:00:27:8e:15:8c")
	walk(t, b, "0800278e158d-3", "08:00:27:8e:15:8d")

	hostName, err := os.Hostname()
	require.NoError(t, err)
	bName := fmt.Sprintf("%s:%d", hostName, b.Flags.Port)
	want := map[string]struct{ addr, profile, instance string }{
		"0800278e158a-0": {"10.9.0.21", "core-services", "rack-a"},
		"0800278e158b-1": {"10.9.0.22", "core-services", "rack-a"},
		"0800278e158c-2": {"10.9.0.23", "core-services", bName}, // the third and last core slot, taken through b
		"0800278e158d-3": {"10.9.0.24", "default", bName},
	}
	for name, d := range map[string]*proctest.Daemon{"a": a, "b": b} {
		var hosts map[string]host.Host
		// Through its watch an instance sees the other's last step a
		// moment later.
		require.Eventually(t, func() bool { hosts = d.Hosts(); return len(hosts) == 4 && allRunning(hosts) }, 10*time.Second, 50*time.Millisecond,
			"%s lists 4 machines, all running", name)
		for serial, w := range want {
			assert.Equal(t, w.addr, hosts[serial].InternalAddr.String(), "%s %s", name, serial)
			assert.Equal(t, w.profile, hosts[serial].Profile, "%s %s", name, serial)
			assert.Equal(t, host.Running, hosts[serial].State, "%s %s", name, serial)
			assert.Equal(t, w.instance, hosts[serial].Instance, "%s %s: GET /admin/hosts names the instance", name, serial)
		}
		r := ctl(t, d, "list")
		require.Equal(t, 0, r.Code, r.Stderr)
		for serial, w := range want {
			assert.Regexp(t, strings.ReplaceAll(w.addr, ".", `\.`)+`\s+`+serial+`\s+`+w.profile+`.*"running"`, r.Stdout, name)
		}
		assert.Regexp(t, `^IP\s+SERIAL\s+PROFILE\s+IPMIADDR\s+PROVIDERID\s+ETCDTOKEN\s+METADATA\s+COREOS\s+STATE\s+LASTBOOT\n`, r.Stdout,
			"the default columns stay 0.11's")
		r = ctl(t, d, "list", "--no-legend", "--fields=serial,instance")
		require.Equal(t, 0, r.Code, r.Stderr)
		for serial, w := range want {
			assert.Regexp(t, `(?m)^`+serial+`\s+`+regexp.QuoteMeta(w.instance)+`\s*$`, r.Stdout, name)
		}
		r = ctl(t, d, "status", "0800278e158c-2")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Regexp(t, `(?m)^Enabled:\s+true\nInstance:\s+`+regexp.QuoteMeta(bName)+`\n`, r.Stdout, name)
	}

	// The records are in etcd; the cluster directories keep each
	// instance's own files, and the git audit trail of the elected
	// auditor: a, the first to start.
	for _, d := range []*proctest.Daemon{a, b} {
		_, err := os.Stat(filepath.Join(d.Cluster, ".machine-auth"))
		assert.NoError(t, err, "the machines' bindings stay per instance")
	}
	assert.Contains(t, a.Out.String(), `store="etcd `+ep+` /fleet/"`)

	s, err := etcdv3.Open(etcdv3.Options{Endpoints: []string{ep}, Prefix: "/fleet/"})
	require.NoError(t, err)
	defer s.Close()
	recs, err := s.Audit(0)
	require.NoError(t, err)
	var subjects []string
	all := []string{"initial commit"}
	for _, r := range recs {
		all = append(all, r.Subject())
		if r.Serial == "0800278e158c-2" {
			subjects = append(subjects, r.Subject())
		}
	}
	assert.Equal(t, []string{
		"0800278e158c-2: host created", "0800278e158c-2: updated with predefined settings", "0800278e158c-2: updated host InternalAddr",
		"0800278e158c-2: updated host profile and metadata", "0800278e158c-2: set default etcd discovery token",
		"0800278e158c-2: collected host mac addresses", "0800278e158c-2: updated host connected nic", "0800278e158c-2: updated host state to installing",
		"0800278e158c-2: updated state to installed", "0800278e158c-2: updated state to running",
	}, subjects)
	assert.Equal(t, "Set default etcd cluster to '"+s.Cluster().Config.DefaultEtcdClusterToken+"'", recs[0].Subject(),
		"the first instance set the cluster's token; the second kept it")
	gitLog := func(dir string) []string {
		return strings.Split(strings.TrimSpace(proctest.Git(t, dir, "log", "--reverse", "--format=%s")), "\n")
	}
	require.Eventually(t, func() bool { return len(gitLog(a.Cluster)) == len(all) }, 20*time.Second, 100*time.Millisecond,
		"a, elected auditor, commits every audit record")
	assert.Equal(t, all, gitLog(a.Cluster))
	assert.Equal(t, []string{"initial commit"}, gitLog(b.Cluster))

	// a stops: b takes the office over and writes its own repository.
	require.NoError(t, a.Stop(), a.Out.String())
	require.Eventually(t, func() bool { return len(gitLog(b.Cluster)) == len(all) }, 30*time.Second, 100*time.Millisecond,
		"b takes over")
	assert.Equal(t, all, gitLog(b.Cluster))
	proctest.Git(t, a.Cluster, "fsck", "--strict")
	proctest.Git(t, b.Cluster, "fsck", "--strict")
	assert.Contains(t, b.Out.String(), "elected auditor")
	require.NoError(t, b.Stop(), b.Out.String())
}

// An instance whose etcd is gone answers machine routes with 503 and the
// reason, and still stops on SIGTERM (the elected auditor and a
// candidate alike); a restart without etcd stops at once with the
// endpoint named.
func TestProcessEtcdStoreUnreachable(t *testing.T) {
	e := proctest.StartEtcd(t, "mayu-gone", "--initial-cluster", "mayu-gone={peer}")
	ep := strings.TrimPrefix(e.ClientURL, "http://")
	d := startDaemon(t, t.TempDir(), "--no-tls", "--store=etcd", "--store-endpoints="+ep)
	d.WaitReady()
	candidate := startDaemon(t, t.TempDir(), "--no-tls", "--store=etcd", "--store-endpoints="+ep)
	candidate.WaitReady()
	require.NoError(t, e.Kill(10*time.Second))
	code, body := d.Do("GET", "/first-stage-script/0800278e158a-0", "")
	assert.Equal(t, 503, code)
	assert.Contains(t, body, "store: shared store unavailable: etcd "+ep)
	require.NoError(t, d.Stop(), d.Out.String())
	require.NoError(t, candidate.Stop(), candidate.Out.String())

	_, args := proctest.MayuArgs(t, loopFlags(t.TempDir(), 0), "--no-tls", "--store=etcd", "--store-endpoints="+ep)
	r := proctest.Run(t, mayuBinary(t), nil, args...)
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "--store=etcd: store: shared store unavailable: etcd "+ep)
}

// mayu migrate copies a cluster directory into etcd and back: every
// record arrives byte for byte with the keys that make its MACs its own
// across instances, a non-empty target is refused unless --overwrite, and
// the copy back is one commit per record.
func TestProcessMigrate(t *testing.T) {
	proctest.RequireCommand(t, "git", "git")
	ep := startStoreEtcd(t)
	bin := mayuBinary(t)
	src := filepath.Join(t.TempDir(), "cluster")
	seedDir(t, src, 3)
	etcdFlags := []string{"--store-endpoints=" + ep, "--store-prefix=/moved/"}

	r := proctest.Run(t, bin, nil, append([]string{"migrate", "--from=" + src, "--to=etcd"}, etcdFlags...)...)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, "copied 3 host records from cluster directory "+src+" to etcd "+ep+" /moved/: 3 created, 0 replaced, 0 already identical; cluster settings copied")
	assert.Contains(t, r.Stdout, "the target holds 3 host records")
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	macs, err := cli.Get(ctx, "/moved/macs/", clientv3.WithPrefix())
	require.NoError(t, err)
	gotMACs := map[string]string{}
	for _, kv := range macs.Kvs {
		gotMACs[strings.TrimPrefix(string(kv.Key), "/moved/macs/")] = string(kv.Value)
	}
	assert.Equal(t, map[string]string{"00:16:3e:00:00:00": "m0", "00:16:3e:00:00:01": "m1", "00:16:3e:00:00:02": "m2"}, gotMACs)

	r = proctest.Run(t, bin, nil, append([]string{"migrate", "--from=" + src, "--to=etcd"}, etcdFlags...)...)
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "store: the target is not empty: it holds 3 host records")
	r = proctest.Run(t, bin, nil, append([]string{"migrate", "--from=" + src, "--to=etcd", "--overwrite"}, etcdFlags...)...)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, "0 created, 0 replaced, 3 already identical")

	back := filepath.Join(t.TempDir(), "cluster")
	r = proctest.Run(t, bin, nil, append([]string{"migrate", "--from=etcd", "--to=" + back}, etcdFlags...)...)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, "copied 3 host records from etcd "+ep+" /moved/ to cluster directory "+back)
	for i := 0; i < 3; i++ {
		serial := fmt.Sprintf("m%d", i)
		orig, err := os.ReadFile(filepath.Join(src, serial, "conf.json"))
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(back, serial, "conf.json"))
		require.NoError(t, err)
		assert.Equal(t, string(orig), string(got), serial)
	}
	origCluster, err := os.ReadFile(filepath.Join(src, "cluster.json"))
	require.NoError(t, err)
	gotCluster, err := os.ReadFile(filepath.Join(back, "cluster.json"))
	require.NoError(t, err)
	assert.Equal(t, string(origCluster), string(gotCluster))
	log := proctest.Git(t, back, "log", "--reverse", "--format=%s")
	assert.Equal(t, "initial commit\n"+
		"m0: host copied from etcd "+ep+" /moved/ by mayu migrate\n"+
		"m1: host copied from etcd "+ep+" /moved/ by mayu migrate\n"+
		"m2: host copied from etcd "+ep+" /moved/ by mayu migrate\n"+
		"Set default etcd cluster to 'feedc0de'\n", log)
	proctest.Git(t, back, "fsck", "--strict")

	// The copy in etcd serves a mayu: its allocations continue after the
	// copied addresses.
	d := startDaemon(t, t.TempDir(), "--no-tls", "--store=etcd", "--store-prefix=/moved/", "--store-endpoints="+ep)
	d.WaitReady()
	walk(t, d, "0800278e158e-4", "08:00:27:8e:15:8e")
	hosts := d.Hosts()
	require.Len(t, hosts, 4)
	assert.Equal(t, "10.9.0.24", hosts["0800278e158e-4"].InternalAddr.String(), "10.9.0.21-23 are the copied machines'")
	assert.Equal(t, "default", hosts["0800278e158e-4"].Profile, "the three core-services slots are the copied machines'")
	require.NoError(t, d.Stop(), d.Out.String())
}

// seedDir makes a cluster directory with n running machines of profile
// core-services at 10.9.0.21 and up, and the default token feedc0de.
func seedDir(t *testing.T, dir string, n int) {
	t.Helper()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()
	for i := 0; i < n; i++ {
		_, err := d.Create(fmt.Sprintf("m%d", i), store.Step{Message: "host created", Apply: func(h *host.Host) error {
			h.State, h.Profile, h.Enabled = host.Running, "core-services", true
			h.InternalAddr = []byte{10, 9, 0, byte(21 + i)}
			h.MacAddresses = []string{fmt.Sprintf("00:16:3e:00:00:%02x", i)}
			h.MachineID = fmt.Sprintf("%032x", i+1)
			h.FleetMetadata = host.FleetMeta{"role-core=true"}
			return nil
		}})
		require.NoError(t, err)
	}
	_, err = d.UpdateCluster("Set default etcd cluster to 'feedc0de'", func(c *store.Cluster) error {
		c.Config.DefaultEtcdClusterToken = "feedc0de"
		return nil
	})
	require.NoError(t, err)
}

// Store flags are checked at start with every problem listed; mayu
// migrate's usage errors exit 2.
func TestStoreFlagProblems(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--store=etcd"}, []string{"--store=etcd needs --store-endpoints"}},
		{[]string{"--store-endpoints=127.0.0.1:2379", "--store-prefix=/x/"}, []string{
			"--store-endpoints is a setting of the etcd store: it needs --store=etcd",
			"--store-prefix is a setting of the etcd store: it needs --store=etcd"}},
		{[]string{"--store=consul"}, []string{`--store="consul": want git or etcd`}},
		{[]string{"--instance-name=a"}, []string{"--instance-name is a setting of the etcd store: it needs --store=etcd"}},
		{[]string{"--store=etcd", "--store-endpoints=127.0.0.1:2379", "--instance-name=rack a"}, []string{`--instance-name: "rack a": ' ' is not allowed`}},
		{[]string{"--store=etcd", "--store-endpoints=127.0.0.1,https://h:99999,http://ok:2379", "--store-prefix=a b",
			"--store-key-file=/nonexistent/key.pem"}, []string{
			`"127.0.0.1" is not host:port`, `"https://h:99999": "99999" is not a port`, `--store-prefix="a b"`,
			"--store-cert-file and --store-key-file go together", "--store-key-file: open /nonexistent/key.pem"}},
	} {
		r := proctest.Run(t, mayuBinary(t), nil, append([]string{"--no-tls"}, tc.args...)...)
		assert.Equal(t, 2, r.Code, tc.args)
		for _, w := range tc.want {
			assert.Contains(t, r.Stderr, w, tc.args)
		}
	}
	for _, args := range [][]string{
		{"--to=etcd", "--store-endpoints=127.0.0.1:2379"},
		{"--from=etcd", "--to=etcd", "--store-endpoints=127.0.0.1:2379"},
		{"--from=/nonexistent/cluster", "--to=etcd", "--store-endpoints=127.0.0.1:2379"},
		{"--from=a", "--to=b"},
	} {
		r := proctest.Run(t, mayuBinary(t), nil, append([]string{"migrate"}, args...)...)
		assert.Equal(t, 2, r.Code, args)
		assert.Contains(t, r.Stderr, "mayu migrate: ", args)
	}
}
