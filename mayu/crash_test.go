package main

// Crash-safety tests of the real binary: kill -9 during a boot storm, a
// cluster directory on a full disk, a damaged git repository. They check
// what an operator would check after a power cut: the daemon starts, no
// record is torn, git is consistent with the files, and nothing a machine
// was told had happened is lost.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/tools/storm"
)

// crashConfig has an address range far larger than any storm here and
// two profiles with quantities, so profile allocation is checked too.
var crashConfig = proctest.Config(proctest.LoopConfig{
	IPStart: "10.10.0.1", IPEnd: "10.10.250.254",
	Profiles: []proctest.Profile{
		{Name: "core-services", Quantity: 3, Tags: []string{"role-core=true"}},
		{Name: "workers", Quantity: 40, Tags: []string{"role-worker=true"}},
		{Name: "default", Tags: []string{"role-default=true"}},
	},
})

// startProc starts mayu with args (crashArgs) on port, fixed so that it
// can be killed and restarted where the storm's clients expect it, and
// waits (bounded) until it answers.
func startProc(t *testing.T, port int, args []string) *proctest.Daemon {
	t.Helper()
	d := proctest.StartDaemon(t, exec.Command(mayuBinary(t), args...), fmt.Sprintf("http://127.0.0.1:%d", port))
	d.WaitReady()
	return d
}

// crashArgs are the flags of a loopback daemon with crashConfig, git
// audit on and no TLS.
func crashArgs(t *testing.T, dir string, port int) []string {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(crashConfig), 0o644))
	return append(baseArgs(t, dir, port), "--no-tls")
}

// parseAllRecords reads every conf.json and cluster.json in the cluster
// directory as gitdir.Open would, and fails on any torn or undecodable file.
func parseAllRecords(t *testing.T, cluster string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cluster, "cluster.json"))
	require.NoError(t, err)
	require.True(t, len(b) > 0 && b[len(b)-1] == '\n', "cluster.json is complete: %q", b)
	entries, err := os.ReadDir(cluster)
	require.NoError(t, err)
	n := 0
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(cluster, e.Name(), "conf.json")
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			// A host directory created just before the kill, whose record
			// never landed: allowed, gitdir.Open ignores it.
			continue
		}
		require.NoError(t, err)
		h, err := host.Unmarshal(data)
		require.NoError(t, err, "torn record %s: %q", p, data)
		require.Equal(t, e.Name(), h.Serial, p)
		n++
	}
	return n
}

// gitClean checks git fsck --full and that the working tree matches the
// last commit.
func gitClean(t *testing.T, cluster string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "-C", cluster, "fsck", "--full", "--no-progress").CombinedOutput()
	require.NoError(t, err, "git fsck --full: %s", out)
	// Dangling objects (written by a request that was killed before its
	// ref update) are harmless and what git itself leaves after a crash;
	// anything else fsck prints is not.
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" && !strings.HasPrefix(line, "dangling ") {
			t.Errorf("git fsck --full says: %s", line)
		}
	}
	out, err = exec.CommandContext(ctx, "git", "-C", cluster, "status", "--porcelain", "--untracked-files=all").CombinedOutput()
	require.NoError(t, err, "git status: %s", out)
	require.Empty(t, string(out), "the working tree matches the last commit")
}

var stateOrder = map[string]int{"unknown": 0, "configured": 1, "installing": 2, "installed": 3, "running": 4}

// checkAcked checks that every step a machine got a 2xx for is in its
// record and in git log, and that no address is held twice.
func checkAcked(t *testing.T, p *proctest.Daemon, cluster string, acked map[string]int, reported map[string]bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hosts, err := storm.FetchHosts(ctx, p.AdminClient(), p.Base)
	require.NoError(t, err)
	by := map[string]storm.HostView{}
	addrs := map[string]string{}
	for _, h := range hosts {
		by[h.Serial] = h
		if other, dup := addrs[h.InternalAddr]; dup && h.InternalAddr != "" {
			t.Errorf("address %s held by %s and %s", h.InternalAddr, other, h.Serial)
		}
		addrs[h.InternalAddr] = h.Serial
	}
	subjects, _, err := storm.GitSubjects(ctx, cluster)
	require.NoError(t, err)
	for serial, steps := range acked {
		h, ok := by[serial]
		if !assert.True(t, ok, "%s got a 2xx for %s but has no record", serial, storm.Steps[steps-1]) {
			continue
		}
		want := storm.StepState[storm.Steps[steps-1]]
		// A later step may have landed without its answer arriving.
		assert.GreaterOrEqual(t, stateOrder[h.StateName()], stateOrder[want],
			"%s got a 2xx for %s but is %s", serial, storm.Steps[steps-1], h.StateName())
		for _, step := range storm.Steps[:steps] {
			for _, m := range storm.StepAudit[step] {
				if !subjects[serial+": "+m] && !reported[serial+": "+m] {
					reported[serial+": "+m] = true
					t.Errorf("%s got a 2xx for %s but git log lacks %q; its log:\n%s", serial, step, m,
						proctest.Git(t, cluster, "log", "--format=%h %s", "--", serial))
				}
			}
		}
	}
}

func TestCrashSafetyKill9DuringStorm(t *testing.T) {
	const (
		machines = 400
		kills    = 20
	)
	dir := t.TempDir()
	port := proctest.FreePort(t)
	args := crashArgs(t, dir, port)
	cluster := filepath.Join(dir, "cluster")
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1))

	p := startProc(t, port, args)
	gate := &storm.Gate{}
	var (
		mu      sync.Mutex
		acked   = map[string]int{}
		ackedN  int
		stepIdx = map[string]int{}
	)
	for i, s := range storm.Steps {
		stepIdx[s] = i + 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	resc := make(chan *storm.Result, 1)
	errc := make(chan error, 1)
	go func() {
		res, err := storm.Run(ctx, storm.Config{
			BaseURL: p.Base, Machines: machines, Concurrency: 16, SerialPrefix: "crash-",
			Client:  proctest.WithToken(storm.NewClient(16), p.Token), // the storm lists hosts too
			Timeout: 10 * time.Second, Retry: 2 * time.Minute, Gate: gate,
			Mix: storm.Mix{Hosts: 0.05},
			OnEvent: func(ev storm.Event) {
				if !ev.OK || stepIdx[ev.Route] == 0 {
					return
				}
				mu.Lock()
				if stepIdx[ev.Route] > acked[ev.Serial] {
					acked[ev.Serial] = stepIdx[ev.Route]
				}
				ackedN++
				mu.Unlock()
			},
		})
		resc <- res
		errc <- err
	}()
	acks := func() int {
		mu.Lock()
		defer mu.Unlock()
		return ackedN
	}

	// Each lost audit message is reported once, not after every kill.
	reported := map[string]bool{}
	stormDone := false
	done := 0
	for done < kills && !stormDone {
		// Kill after a random number of acknowledged steps (spread so
		// that all kills land inside the storm), plus a random delay so
		// the kill falls anywhere inside the requests in flight.
		target := acks() + 5 + rng.IntN(4*machines/(kills+8))
		lastAck, lastChange := acks(), time.Now()
		for acks() < target && !stormDone {
			select {
			case <-resc:
				stormDone = true
			case <-time.After(2 * time.Millisecond):
			}
			if n := acks(); n != lastAck {
				lastAck, lastChange = n, time.Now()
			} else if time.Since(lastChange) > 30*time.Second {
				// Ask the Go runtime for every goroutine's stack.
				_ = p.Cmd.Process.Signal(syscall.SIGQUIT)
				time.Sleep(time.Second)
				t.Fatalf("the storm made no progress for 30s after kill %d; mayu's output:\n%s", done, p.Out.String())
			}
		}
		if stormDone {
			break
		}
		time.Sleep(time.Duration(rng.IntN(15)) * time.Millisecond)
		p.Kill()
		done++
		gate.Close()
		mu.Lock()
		snapshot := make(map[string]int, len(acked))
		for k, v := range acked {
			snapshot[k] = v
		}
		mu.Unlock()

		records := parseAllRecords(t, cluster)
		p = startProc(t, port, args)
		gitClean(t, cluster)
		checkAcked(t, p, cluster, snapshot, reported)
		t.Logf("kill %d: %d acknowledged steps, %d records on disk", done, acks(), records)
		gate.Open()
	}
	require.Equal(t, kills, done, "the storm ended before %d kills: make it longer", kills)

	var res *storm.Result
	select {
	case res = <-resc:
	case <-ctx.Done():
		t.Fatal("the storm did not finish after the restarts")
	}
	require.NoError(t, <-errc)
	t.Logf("storm: %d machines completed in %.1fs with %d retries; errors by kind: %v",
		res.Completed, time.Duration(res.Duration).Seconds(), res.Retries, res.Errors)
	require.Equal(t, machines, res.Completed, "every machine finishes its life cycle despite the kills: %v", res.LastError)

	cfg, err := config.Parse([]byte(crashConfig))
	require.NoError(t, err)
	chk, err := storm.CheckEndState(ctx, storm.CheckConfig{BaseURL: p.Base, Client: p.AdminClient(), Serials: res.Serials, Cluster: cfg, ClusterDir: cluster})
	require.NoError(t, err)
	assert.Empty(t, chk.Problems)
	assert.Equal(t, machines, chk.Hosts, "one record per serial")
	p.Kill()
	assert.Equal(t, machines, parseAllRecords(t, cluster))
	gitClean(t, cluster)
}

// fillDisk writes a file until the filesystem is full and returns its
// path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	require.NoError(t, err)
	defer f.Close()
	buf := make([]byte, 4096)
	for i := 0; i < 1<<20; i++ {
		if _, err := f.Write(buf); err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			break
		}
	}
	// Also the last few bytes of a partly used page.
	for _, n := range []int{1024, 64, 1} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
	return p
}

// lifeCycleStep is one life-cycle request of machine i of a storm with
// prefix.
func lifeCycleStep(base, prefix string, i, step int) (method, url, body string) {
	s := storm.Serial(prefix, i)
	switch step {
	case 0:
		return http.MethodGet, base + "/first-stage-script/" + s, ""
	case 1:
		return http.MethodPost, base + "/final-cloud-config.yaml", string(storm.Facts(prefix, i))
	case 2:
		return http.MethodPut, base + "/admin/host/" + s + "/set_installed", ""
	default:
		return http.MethodPut, base + "/admin/host/" + s + "/boot_complete", `{"CoreOSVersion":"1068.6.0"}`
	}
}

func TestDiskFullGives500AndRecovers(t *testing.T) {
	proctest.RequireRoot(t, "mount a small tmpfs for the cluster directory")
	dir := t.TempDir()
	cluster := filepath.Join(dir, "cluster")
	require.NoError(t, os.MkdirAll(cluster, 0o755))
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", cluster).CombinedOutput()
	if err != nil {
		proctest.RequireE2E(t, fmt.Sprintf("mount -t tmpfs failed (%v: %s): no disk-full test here", err, strings.TrimSpace(string(out))))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", cluster).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", cluster, err, out)
		}
	})
	port := proctest.FreePort(t)
	args := crashArgs(t, dir, port)
	p := startProc(t, port, args)

	// Machines 0-3 walk part of their life cycle while there is room.
	const prefix = "full-"
	for i := 0; i < 4; i++ {
		for step := 0; step < 2; step++ {
			m, u, b := lifeCycleStep(p.Base, prefix, i, step)
			code, body := proctest.Do(t, nil, m, u, b)
			require.Equal(t, 200, code, body)
		}
	}
	before, err := storm.FetchHosts(context.Background(), p.AdminClient(), p.Base)
	require.NoError(t, err)
	headBefore := strings.TrimSpace(proctest.Git(t, cluster, "rev-parse", "HEAD"))

	filler := fillDisk(t, cluster)

	// Now every write fails: a new machine, facts of a known one, a
	// state change. Each is a 500 naming the cause, nothing changes.
	requests := [][3]string{}
	add := func(i, step int) {
		m, u, b := lifeCycleStep(p.Base, prefix, i, step)
		requests = append(requests, [3]string{m, u, b})
	}
	add(10, 0) // new machine
	add(11, 1) // new machine through its final config
	add(0, 2)  // set_installed
	add(1, 1)  // facts again, with a new MAC below: a real change
	requests[len(requests)-1][2] = strings.Replace(requests[len(requests)-1][2], storm.MACs(prefix, 1)[1], "02:ff:ff:ff:ff:01", 1)
	for _, r := range requests {
		code, body := proctest.Do(t, nil, r[0], r[1], r[2])
		assert.Equal(t, 500, code, "%s %s: %s", r[0], r[1], body)
		assert.Contains(t, body, "no space left on device", "%s %s: the reason is given", r[0], r[1])
		assert.Equal(t, 1, strings.Count(body, "\n"), "one-line reason: %q", body)
	}
	after, err := storm.FetchHosts(context.Background(), p.AdminClient(), p.Base)
	require.NoError(t, err)
	assert.Equal(t, before, after, "failed writes change no record")
	assert.Equal(t, headBefore, strings.TrimSpace(proctest.Git(t, cluster, "rev-parse", "HEAD")), "no commit")
	assert.Equal(t, len(before), parseAllRecords(t, cluster), "no torn or half-created record")
	gitCleanIgnoring(t, cluster, "filler")

	// The daemon survives a restart on the full disk: it still opens the
	// directory and serves what it has.
	p.Kill()
	t.Run("restart on the full disk serves what it has", func(t *testing.T) {
		// A power cut on a full disk must not keep the fleet from getting
		// its configs and images once mayu is back.
		q := startProc(t, port, args)
		defer q.Kill()
		listed, err := storm.FetchHosts(context.Background(), q.AdminClient(), q.Base)
		require.NoError(t, err)
		assert.Equal(t, before, listed)
		m, u, b := lifeCycleStep(q.Base, prefix, 2, 1)
		code, body := proctest.Do(t, nil, m, u, b)
		assert.Equal(t, 200, code, "an unchanged machine gets its final config: %s", body)
	})

	// Space comes back: the same requests succeed, and the storm goes on.
	require.NoError(t, os.Remove(filler))
	p = startProc(t, port, args)
	for _, r := range requests {
		code, body := proctest.Do(t, nil, r[0], r[1], r[2])
		assert.Contains(t, []int{200, 202}, code, "%s %s after space freed: %s", r[0], r[1], body)
	}
	for i := 0; i < 4; i++ {
		for step := 2; step < 4; step++ {
			m, u, b := lifeCycleStep(p.Base, prefix, i, step)
			code, body := proctest.Do(t, nil, m, u, b)
			require.Equal(t, 202, code, body)
		}
	}
	p.Kill()
	parseAllRecords(t, cluster)
	gitClean(t, cluster)
	log := proctest.Git(t, cluster, "log", "--format=%s")
	for i := 0; i < 4; i++ {
		assert.Contains(t, log, storm.Serial(prefix, i)+": updated state to running")
	}
	assert.Contains(t, log, storm.Serial(prefix, 10)+": host created")
}

// gitCleanIgnoring is gitClean while a file of the test's own sits in the
// cluster directory.
func gitCleanIgnoring(t *testing.T, cluster, name string) {
	t.Helper()
	out, err := exec.Command("git", "-C", cluster, "fsck", "--full", "--no-progress").CombinedOutput()
	require.NoError(t, err, "git fsck --full: %s", out)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" && !strings.HasPrefix(line, "dangling ") {
			t.Errorf("git fsck --full says: %s", line)
		}
	}
	// git status refreshes .git/index unless told not to; there is no
	// room for that here.
	out, err = exec.Command("git", "--no-optional-locks", "-C", cluster, "status", "--porcelain", "--untracked-files=all").CombinedOutput()
	require.NoError(t, err, "git status: %s", out)
	assert.Equal(t, "?? "+name+"\n", string(out), "the working tree matches the last commit")
}

func TestDamagedRepositoryIsReportedNotReinitialised(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, cluster string)
		want   string
	}{
		{"garbage HEAD", func(t *testing.T, cluster string) {
			require.NoError(t, os.WriteFile(filepath.Join(cluster, ".git", "HEAD"), []byte("\x00\x01garbage\n"), 0o644))
		}, "damaged git repository"},
		{"garbage branch ref", func(t *testing.T, cluster string) {
			ref := strings.TrimSpace(proctest.Git(t, cluster, "symbolic-ref", "HEAD"))
			require.NoError(t, os.WriteFile(filepath.Join(cluster, ".git", filepath.FromSlash(ref)), []byte("not a hash\n"), 0o644))
		}, "damaged git repository"},
		{"missing commit object", func(t *testing.T, cluster string) {
			removeObject(t, cluster, strings.TrimSpace(proctest.Git(t, cluster, "rev-parse", "HEAD")))
		}, "damaged git repository"},
		{"missing tree object", func(t *testing.T, cluster string) {
			removeObject(t, cluster, strings.TrimSpace(proctest.Git(t, cluster, "rev-parse", "HEAD^{tree}")))
		}, "damaged git repository"},
		{"missing blob of a record", func(t *testing.T, cluster string) {
			removeObject(t, cluster, strings.TrimSpace(proctest.Git(t, cluster, "rev-parse", "HEAD:"+storm.Serial("dmg-", 0)+"/conf.json")))
		}, "damaged git repository"},
		{"corrupt object", func(t *testing.T, cluster string) {
			explode(t, cluster)
			p := objectPath(cluster, strings.TrimSpace(proctest.Git(t, cluster, "rev-parse", "HEAD^{tree}")))
			require.NoError(t, os.Chmod(p, 0o644))
			require.NoError(t, os.WriteFile(p, []byte("this is not zlib"), 0o444))
		}, "damaged git repository"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			port := proctest.FreePort(t)
			args := crashArgs(t, dir, port)
			cluster := filepath.Join(dir, "cluster")
			p := startProc(t, port, args)
			for i := 0; i < 2; i++ {
				for step := 0; step < 4; step++ {
					m, u, b := lifeCycleStep(p.Base, "dmg-", i, step)
					code, body := proctest.Do(t, nil, m, u, b)
					require.Contains(t, []int{200, 202}, code, body)
				}
			}
			p.Kill()
			commits := proctest.Git(t, cluster, "rev-list", "--all", "--count")
			tt.damage(t, cluster)
			snapshot := treeSnapshot(t, filepath.Join(cluster, ".git"))

			code, out := runOnce(t, args...)
			assert.NotEqual(t, 0, code, "mayu must not start on a damaged repository:\n%s", out)
			assert.Contains(t, out, tt.want)
			assert.Contains(t, out, cluster, "the message names the directory")
			assert.NotContains(t, out, "panic")
			assert.NotContains(t, out, "initialised git repository")
			assert.Equal(t, snapshot, treeSnapshot(t, filepath.Join(cluster, ".git")), "the damaged .git is left as it was for the operator")
			_ = commits
		})
	}
}

func objectPath(cluster, hash string) string {
	return filepath.Join(cluster, ".git", "objects", hash[:2], hash[2:])
}

func removeObject(t *testing.T, cluster, hash string) {
	t.Helper()
	require.Len(t, hash, 40)
	explode(t, cluster)
	require.NoError(t, os.Remove(objectPath(cluster, hash)))
}

// explode turns the cluster's packs (mayu writes one per batch of
// commits) into loose objects with stock git, so that a test can damage a
// single object.
func explode(t *testing.T, cluster string) {
	t.Helper()
	packs, err := filepath.Glob(filepath.Join(cluster, ".git", "objects", "pack", "pack-*.pack"))
	require.NoError(t, err)
	for _, p := range packs {
		data, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NoError(t, os.Remove(p))
		require.NoError(t, os.Remove(strings.TrimSuffix(p, ".pack")+".idx"))
		cmd := exec.Command("git", "unpack-objects", "-q")
		cmd.Dir = cluster
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "git unpack-objects: %s", out)
	}
}

// treeSnapshot maps every file under dir to its size and mode.
func treeSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			m[rel] = "dir"
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		m[rel] = fmt.Sprintf("%v %d %x", fi.Mode(), fi.Size(), b[:min(len(b), 32)])
		return nil
	}))
	return m
}
