//go:build linux

package main

// Failure tests of --store=etcd: two mayu instances (loopback, no
// dnsmasq) share a three-member etcd cluster (Debian's etcd-server) while
// the HTTP storm generator (tools/storm) drives both, and the test takes
// one piece away: an etcd member, the auditing instance, or one
// instance's link to etcd. They skip loudly without etcd, and fail
// instead under MAYU_E2E=required (CI). Each is bounded (a few minutes
// at most) and asserts outcomes, never durations.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/pkg/store/etcdv3"
	"mayu/tools/storm"
)

// fleetConfig is processConfig with room for the storms' machines in one
// ip_range both instances share.
var fleetConfig = proctest.Config(proctest.LoopConfig{
	IPStart: "10.9.0.21", IPEnd: "10.9.3.250",
	Profiles: []proctest.Profile{
		{Name: "core-services", Quantity: 3, Tags: []string{"role-core=true"}},
		{Name: "default", Tags: []string{"role-worker=true"}},
	},
})

const fleetPrefix = "/fleet/"

// startInstance runs mayu named name in dir (made, with fleetConfig, if
// new) on the etcd endpoints eps, and waits until it serves.
func startInstance(t *testing.T, dir, name, eps string) *proctest.Daemon {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "config.yaml")); err != nil {
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(fleetConfig), 0o644))
	}
	d := startDaemon(t, dir, "--no-tls", "--store=etcd", "--store-endpoints="+eps, "--store-prefix="+fleetPrefix,
		"--instance-name="+name)
	d.WaitReady()
	return d
}

// stormOn drives machines machines (serials <prefix>NNNNNN) through d at
// 8 at once in the background; retry is the storm's Retry (0: none). ok,
// when set, counts the requests answered 2xx.
func stormOn(ctx context.Context, d *proctest.Daemon, prefix string, machines int, retry time.Duration, ok *atomic.Int64) <-chan *storm.Result {
	out := make(chan *storm.Result, 1)
	go func() {
		res, err := storm.Run(ctx, storm.Config{
			BaseURL: d.Base, Machines: machines, Concurrency: 8, SerialPrefix: prefix,
			Client:  proctest.WithToken(storm.NewClient(8), d.Token),
			Timeout: 15 * time.Second, Retry: retry,
			OnEvent: func(ev storm.Event) {
				if ev.OK && ok != nil {
					ok.Add(1)
				}
			},
		})
		if res == nil {
			res = &storm.Result{Errors: map[string]int{"storm: " + fmt.Sprint(err): 1}, Failed: machines}
		}
		out <- res
	}()
	return out
}

// waitCount waits (bounded by ctx) until n reaches at least want.
func waitCount(t *testing.T, ctx context.Context, n *atomic.Int64, want int64) {
	t.Helper()
	for n.Load() < want {
		select {
		case <-ctx.Done():
			t.Fatalf("the storm made %d requests, not %d", n.Load(), want)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// report logs a storm's figures.
func report(t *testing.T, name string, r *storm.Result) {
	t.Helper()
	t.Logf("storm through %s: %d machines, %d completed, %d failed, %.1f machines/s, %d retries, errors %v",
		name, r.Machines, r.Completed, r.Failed, r.PerSecond, r.Retries, r.Errors)
}

// allRunning tells whether every host is running.
func allRunning(hosts map[string]host.Host) bool {
	for _, h := range hosts {
		if h.State != host.Running {
			return false
		}
	}
	return true
}

// checkFleet checks that every instance lists the same machines, each
// running with its own address, with exactly 3 core-services among them,
// and returns the list.
func checkFleet(t *testing.T, want int, ds ...*proctest.Daemon) map[string]host.Host {
	t.Helper()
	var first map[string]host.Host
	for i, d := range ds {
		var hosts map[string]host.Host
		// An instance learns of the other's changes through its watch, a
		// moment later: wait until it has seen every machine's last step.
		require.Eventually(t, func() bool { hosts = d.Hosts(); return len(hosts) == want && allRunning(hosts) }, 30*time.Second, 100*time.Millisecond,
			"instance %d lists %d machines, all running", i, want)
		if first == nil {
			first = hosts
		}
		addrs := map[netip.Addr]string{}
		core := 0
		for serial, h := range hosts {
			assert.Equal(t, host.Running, h.State, serial)
			a, ok := netip.AddrFromSlice(h.InternalAddr.To4())
			if assert.True(t, ok, "%s has an address", serial) {
				if other, dup := addrs[a]; dup {
					t.Errorf("%s and %s share %s", serial, other, a)
				}
				addrs[a] = serial
			}
			if h.Profile == "core-services" {
				core++
			}
			assert.Equal(t, first[serial].InternalAddr.String(), h.InternalAddr.String(), "instances agree on %s", serial)
			assert.Equal(t, first[serial].State, h.State, "instances agree on %s", serial)
		}
		assert.Equal(t, 3, core, "instance %d: core-services quantity", i)
	}
	return first
}

// One etcd member (the leader) killed during a storm through both
// instances: no machine fails (a request that met the election may
// answer 503 and is retried, as a machine's script retries), every
// machine ends running with its own address.
func TestEtcdFailureMemberKilledDuringStorm(t *testing.T) {
	members := proctest.StartEtcdCluster(t, "fm", 3)
	eps := proctest.Endpoints(members)
	a := startInstance(t, t.TempDir(), "inst-a", eps)
	b := startInstance(t, t.TempDir(), "inst-b", eps)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const perInstance = 150
	var ok atomic.Int64
	ra := stormOn(ctx, a, "a-", perInstance, time.Minute, &ok)
	rb := stormOn(ctx, b, "b-", perInstance, time.Minute, &ok)
	waitCount(t, ctx, &ok, 300)
	leader, err := proctest.Leader(members)
	require.NoError(t, err)
	require.NoError(t, leader.Kill(10*time.Second))
	t.Logf("killed etcd leader %s after %d requests", leader.Name, ok.Load())
	resA, resB := <-ra, <-rb
	report(t, "inst-a", resA)
	report(t, "inst-b", resB)
	assert.Zero(t, resA.Failed, "no machine fails through inst-a: %v", resA.Errors)
	assert.Zero(t, resB.Failed, "no machine fails through inst-b: %v", resB.Errors)
	checkFleet(t, 2*perInstance, a, b)
	require.NoError(t, a.Stop(), a.Out.String())
	require.NoError(t, b.Stop(), b.Out.String())
}

// auditLog is a repository's history after the initial commit: the
// subjects and the Audit-Revision trailers, oldest first.
func auditLog(t *testing.T, dir string) (subjects, positions []string) {
	t.Helper()
	out := proctest.Git(t, dir, "log", "--reverse", "--format=%s%x00%(trailers:key=Audit-Revision,valueonly,separator=%x2C)%x01")
	for _, c := range strings.Split(out, "\x01") {
		c = strings.TrimLeft(c, "\n")
		if c == "" {
			continue
		}
		subj, pos, _ := strings.Cut(c, "\x00")
		if subj == "initial commit" {
			continue
		}
		subjects = append(subjects, subj)
		positions = append(positions, strings.TrimSpace(pos))
	}
	return subjects, positions
}

var positionRE = regexp.MustCompile(`^(\d+)/(\d+)$`)

// checkOrdered fails unless every position is one well-formed trailer
// and each is after the one before (so none is there twice).
func checkOrdered(t *testing.T, name string, positions []string) {
	t.Helper()
	var prev [2]int64
	for i, p := range positions {
		m := positionRE.FindStringSubmatch(p)
		if !assert.NotNil(t, m, "%s commit %d has one Audit-Revision trailer, not %q", name, i+1, p) {
			return
		}
		rev, _ := strconv.ParseInt(m[1], 10, 64)
		step, _ := strconv.ParseInt(m[2], 10, 64)
		cur := [2]int64{rev, step}
		if i > 0 && !(cur[0] > prev[0] || (cur[0] == prev[0] && cur[1] > prev[1])) {
			t.Errorf("%s commit %d replays %s after %d/%d: out of order or twice", name, i+1, p, prev[0], prev[1])
			return
		}
		prev = cur
	}
}

// etcdAudit is the subjects and positions of every audit record in etcd,
// in etcd revision order.
func etcdAudit(t *testing.T, eps string) (subjects, positions []string) {
	t.Helper()
	s, err := etcdv3.Open(etcdv3.Options{Endpoints: strings.Split(eps, ","), Prefix: fleetPrefix})
	require.NoError(t, err)
	defer s.Close()
	recs, err := s.Audit(0)
	require.NoError(t, err)
	for _, r := range recs {
		subjects = append(subjects, r.Subject())
		positions = append(positions, fmt.Sprintf("%d/%d", r.Revision, r.Step))
	}
	return subjects, positions
}

// waitAudited waits (2 minutes at most) until the repository in dir has
// as many commits as etcd has audit records.
func waitAudited(t *testing.T, dir string, want int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		subjects, _ := auditLog(t, dir)
		if len(subjects) >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d of %d audit records after 2 minutes", dir, len(subjects), want)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// The auditing instance SIGKILLed during a storm: the other is elected
// once the dead one's lease runs out and commits every audit record into
// its own repository, in etcd revision order, each once. "Complete"
// across the two repositories means: the new auditor's repository holds
// every record etcd holds, in order; the dead one's is a prefix of that
// sequence (whatever it had committed when it died), and when it comes
// back and is elected again it resumes after its own last commit, so it
// too ends with every record exactly once. git fsck is clean in both.
func TestEtcdFailureAuditorKilledDuringStorm(t *testing.T) {
	members := proctest.StartEtcdCluster(t, "fa", 3)
	eps := proctest.Endpoints(members)
	dirA, dirB := t.TempDir(), t.TempDir()
	a := startInstance(t, dirA, "inst-a", eps)
	require.Eventually(t, func() bool { return strings.Contains(a.Out.String(), "elected auditor") }, 30*time.Second, 50*time.Millisecond,
		"inst-a, the first, is elected auditor")
	b := startInstance(t, dirB, "inst-b", eps)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const perInstance = 100
	var okA atomic.Int64
	ra := stormOn(ctx, a, "a-", perInstance, 0, &okA)
	rb := stormOn(ctx, b, "b-", perInstance, time.Minute, nil)
	waitCount(t, ctx, &okA, 150)
	a.Kill()
	t.Logf("SIGKILLed the auditor inst-a after %d requests through it", okA.Load())
	resA, resB := <-ra, <-rb
	report(t, "inst-a (killed)", resA)
	report(t, "inst-b", resB)
	assert.Zero(t, resB.Failed, "no machine fails through inst-b: %v", resB.Errors)

	require.Eventually(t, func() bool { return strings.Contains(b.Out.String(), "elected auditor") }, time.Minute, 100*time.Millisecond,
		"inst-b takes the office over once inst-a's lease expires")
	want, wantPos := etcdAudit(t, eps)
	waitAudited(t, b.Cluster, len(want))
	gotB, posB := auditLog(t, b.Cluster)
	assert.Equal(t, want, gotB, "inst-b's repository holds every audit record, in etcd revision order")
	assert.Equal(t, wantPos, posB)
	checkOrdered(t, "inst-b", posB)
	proctest.Git(t, b.Cluster, "fsck", "--strict")

	gotA, posA := auditLog(t, a.Cluster)
	t.Logf("audit records: %d in etcd; inst-a had committed %d when killed; inst-b committed %d", len(want), len(gotA), len(gotB))
	require.LessOrEqual(t, len(gotA), len(want))
	assert.Equal(t, want[:len(gotA)], gotA, "the dead auditor's repository is a prefix of the sequence")
	assert.Equal(t, wantPos[:len(posA)], posA)
	proctest.Git(t, a.Cluster, "fsck", "--strict")

	// inst-a comes back on its repository; inst-b stops: inst-a is
	// elected and resumes after its own last commit.
	resumeAfter := "0/0"
	if len(posA) > 0 {
		resumeAfter = posA[len(posA)-1]
	}
	a2 := startInstance(t, dirA, "inst-a", eps)
	require.NoError(t, b.Stop(), b.Out.String())
	require.Eventually(t, func() bool { return strings.Contains(a2.Out.String(), "elected auditor") }, time.Minute, 100*time.Millisecond)
	waitAudited(t, a2.Cluster, len(want))
	gotA, posA = auditLog(t, a2.Cluster)
	assert.Equal(t, want, gotA, "inst-a caught up: every record once, in order")
	assert.Equal(t, wantPos, posA)
	checkOrdered(t, "inst-a", posA)
	proctest.Git(t, a2.Cluster, "fsck", "--strict")
	assert.Regexp(t, `auditor resumes.*after=`+regexp.QuoteMeta(resumeAfter)+`\b`, a2.Out.String())
	require.NoError(t, a2.Stop(), a2.Out.String())
}

// One instance cut off from etcd (its etcd traffic goes through proxies
// the test stops): its machine routes answer 503 with the reason and
// write nothing, the other instance goes on registering machines, and
// once the link is back the cut-off instance sees every change made
// meanwhile and both agree.
func TestEtcdFailureInstanceCutOff(t *testing.T) {
	members := proctest.StartEtcdCluster(t, "fc", 3)
	eps := proctest.Endpoints(members)
	var proxies []*proctest.TCPProxy
	var viaProxy []string
	for _, m := range members {
		p := proctest.StartTCPProxy(t, strings.TrimPrefix(m.ClientURL, "http://"))
		proxies = append(proxies, p)
		viaProxy = append(viaProxy, p.Addr)
	}
	a := startInstance(t, t.TempDir(), "inst-a", eps)
	b := startInstance(t, t.TempDir(), "inst-b", strings.Join(viaProxy, ","))
	// A machine registers through inst-b and is installing.
	code, body := b.Do("GET", "/first-stage-script/0800278e158b-1", "")
	require.Equal(t, 200, code, body)
	code, body = b.Do("POST", "/final-cloud-config.yaml",
		`{"Serial":"0800278e158b-1","NetDevs":[{"Name":"eth0","MacAddress":"08:00:27:8e:15:8b"}],"IPMIAddress":"","ConnectedNIC":"eth0"}`)
	require.Equal(t, 200, code, body)
	waitListed := func(want int) {
		for _, d := range []*proctest.Daemon{a, b} {
			require.Eventually(t, func() bool { return len(d.Hosts()) == want }, 30*time.Second, 100*time.Millisecond)
		}
	}
	waitListed(1)

	for _, p := range proxies {
		p.Cut()
	}
	code, body = b.Do("GET", "/first-stage-script/0800278e158c-2", "")
	assert.Equal(t, 503, code, "a new machine through the cut-off instance")
	assert.Contains(t, body, "store: shared store unavailable: etcd "+strings.Join(viaProxy, ","))
	code, body = b.Do("PUT", "/admin/host/0800278e158b-1/set_installed", "")
	assert.Equal(t, 503, code, "a change through the cut-off instance: %s", body)
	assert.Contains(t, body, "store: shared store unavailable")
	t.Logf("cut-off instance answers: %d %s", code, strings.TrimSpace(body))

	// Meanwhile the fleet goes on through inst-a.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := <-stormOn(ctx, a, "a-", 40, 0, nil)
	report(t, "inst-a while inst-b is cut off", res)
	assert.Zero(t, res.Failed, "%v", res.Errors)
	code, body = a.Do("PUT", "/admin/host/0800278e158b-1/set_installed", "")
	assert.Equal(t, 202, code, "the machine registered through inst-b changes through inst-a: %s", body)

	for _, p := range proxies {
		require.NoError(t, p.Restore())
	}
	// inst-b rejoins: it sees the machines and the change made meanwhile,
	// and registers again, at an address no one holds.
	require.Eventually(t, func() bool {
		hosts := b.Hosts()
		return len(hosts) == 41 && hosts["0800278e158b-1"].State == host.Installed
	}, time.Minute, 200*time.Millisecond, "inst-b catches up after the link is back")
	var code2 int
	require.Eventually(t, func() bool {
		code2, body = b.Do("GET", "/first-stage-script/0800278e158c-2", "")
		return code2 == 200
	}, 30*time.Second, 200*time.Millisecond, "inst-b writes again: %d %s", code2, body)
	walk(t, b, "0800278e158d-3", "08:00:27:8e:15:8d")
	waitListed(43)
	ha, hb := a.Hosts(), b.Hosts()
	for serial, h := range ha {
		assert.Equal(t, h.InternalAddr.String(), hb[serial].InternalAddr.String(), serial)
		assert.Equal(t, h.State, hb[serial].State, serial)
		assert.Equal(t, h.Profile, hb[serial].Profile, serial)
	}
	seen := map[string]string{}
	for serial, h := range hb {
		if other, dup := seen[h.InternalAddr.String()]; dup && h.InternalAddr != nil {
			t.Errorf("%s and %s share %s", serial, other, h.InternalAddr)
		}
		seen[h.InternalAddr.String()] = serial
	}
	assert.Equal(t, "inst-b", hb["0800278e158d-3"].Instance)
	assert.Equal(t, "inst-a", hb["0800278e158b-1"].Instance, "the last change of 0800278e158b-1 was inst-a's")
	require.NoError(t, a.Stop(), a.Out.String())
	require.NoError(t, b.Stop(), b.Out.String())
}
