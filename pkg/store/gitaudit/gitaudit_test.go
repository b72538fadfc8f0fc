//go:build linux

package gitaudit_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/pkg/store"
	"mayu/pkg/store/etcdv3"
	"mayu/pkg/store/gitaudit"
	"mayu/pkg/store/gitdir"
)

const prefix = "/audited/"

func openStore(t *testing.T, ep string) *etcdv3.Store {
	t.Helper()
	var s *etcdv3.Store
	var err error
	require.Eventually(t, func() bool {
		s, err = etcdv3.Open(etcdv3.Options{Endpoints: []string{ep}, Prefix: prefix, Timeout: 3 * time.Second, SessionTTL: 5 * time.Second})
		return err == nil
	}, 30*time.Second, 200*time.Millisecond)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// changes writes n machines' worth of changes through s: several steps
// per change, trailers, a cluster setting.
func changes(t *testing.T, s store.Store, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		serial := fmt.Sprintf("m%02d", i)
		_, err := s.Create(serial,
			store.Step{Message: "host created", Apply: func(h *host.Host) error { h.State = host.Configured; return nil }},
			store.Step{Message: "updated host cabinet", Apply: func(h *host.Host) error { h.Cabinet = uint(i); return nil }})
		require.NoError(t, err)
		_, err = s.Update(serial, store.Step{Message: "updated host state to installing\n\nPrincipal: machine:" + serial,
			Apply: func(h *host.Host) error { h.State = host.Installing; return nil }})
		require.NoError(t, err)
	}
	_, err := s.UpdateCluster(fmt.Sprintf("Set default etcd cluster to 'tok%d'", from), func(c *store.Cluster) error {
		c.Config.DefaultEtcdClusterToken = fmt.Sprintf("tok%d", from)
		return nil
	})
	require.NoError(t, err)
}

// auditor runs an auditor on its own store instance and cluster directory
// until stop is called.
type auditor struct {
	dir  string
	stop func()
}

func startAuditor(t *testing.T, ep, name, dir string) *auditor {
	t.Helper()
	src := openStore(t, ep)
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		assert.NoError(t, gitaudit.Run(ctx, gitaudit.Config{Source: src, Target: d, Name: name, Retry: 100 * time.Millisecond}))
	}()
	a := &auditor{dir: dir}
	var once sync.Once
	a.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			assert.NoError(t, d.Close())
		})
	}
	t.Cleanup(a.stop)
	return a
}

// wantLog is the git log (oldest first) a complete replay of s's records
// gives after the initial commit.
func wantLog(t *testing.T, s *etcdv3.Store) ([]string, gitaudit.Position) {
	recs, err := s.Audit(0)
	require.NoError(t, err)
	out := []string{"initial commit"}
	for _, r := range recs {
		out = append(out, r.Subject())
	}
	last := recs[len(recs)-1]
	return out, gitaudit.Position{Revision: last.Revision, Step: last.Step}
}

func gitLog(t *testing.T, dir string) []string {
	return strings.Split(strings.TrimSpace(proctest.Git(t, dir, "log", "--reverse", "--format=%s")), "\n")
}

// caughtUp waits until dir's last trailer is at.
func caughtUp(t *testing.T, dir string, at gitaudit.Position) bool {
	p, err := gitaudit.LastReplayed(dir)
	return err == nil && p == at
}

// One of two auditors is elected and commits every record once, in
// revision order, following new ones; when it steps down the other takes
// over and catches its own repository up; an auditor restarted on its
// repository resumes after its last commit. No commit is lost or written
// twice, and git fsck finds the repositories clean.
func TestElectedAuditor(t *testing.T) {
	proctest.RequireCommand(t, "git", "git")
	e := proctest.StartEtcd(t, "audit", "--initial-cluster", "audit={peer}")
	ep := strings.TrimPrefix(e.ClientURL, "http://")
	w := openStore(t, ep)
	changes(t, w, 0, 5)

	dirA, dirB := t.TempDir(), t.TempDir()
	a := startAuditor(t, ep, "a", dirA)
	want, last := wantLog(t, w)
	require.Eventually(t, func() bool { return caughtUp(t, dirA, last) }, 30*time.Second, 50*time.Millisecond)
	b := startAuditor(t, ep, "b", dirB)

	changes(t, w, 5, 3) // while a holds the office
	want, last = wantLog(t, w)
	require.Eventually(t, func() bool { return caughtUp(t, dirA, last) }, 30*time.Second, 50*time.Millisecond)
	assert.Equal(t, want, gitLog(t, dirA), "every record once, in revision order")
	assert.Equal(t, []string{"initial commit"}, gitLog(t, dirB), "b is not elected while a holds the office")

	a.stop()
	changes(t, w, 8, 2)
	want, last = wantLog(t, w)
	require.Eventually(t, func() bool { return caughtUp(t, dirB, last) }, 30*time.Second, 50*time.Millisecond, "b takes over")
	assert.Equal(t, want, gitLog(t, dirB))
	b.stop()

	// a's repository stopped at its last commit; a restarted auditor on it
	// resumes there.
	changes(t, w, 10, 1)
	want, last = wantLog(t, w)
	startAuditor(t, ep, "a-again", dirA)
	require.Eventually(t, func() bool { return caughtUp(t, dirA, last) }, 30*time.Second, 50*time.Millisecond)
	assert.Equal(t, want, gitLog(t, dirA), "nothing lost, nothing twice")

	for _, dir := range []string{dirA, dirB} {
		proctest.Git(t, dir, "fsck", "--strict")
	}
	body := proctest.Git(t, dirA, "log", "-1", "--skip=1", "--format=%B")
	assert.Contains(t, body, "Principal: machine:m10\n"+gitaudit.TrailerKey+": ", "the position joins the change's trailers")
	conf := proctest.Git(t, dirA, "show", "HEAD:cluster.json")
	assert.Contains(t, conf, `"DefaultEtcdClusterToken": "tok10"`)
	rec := proctest.Git(t, dirA, "show", "HEAD:m10/conf.json")
	h, err := w.Get("m10")
	require.NoError(t, err)
	b2, err := h.Marshal()
	require.NoError(t, err)
	assert.Equal(t, string(b2), rec, "the committed conf.json is the record as etcd holds it")
}
