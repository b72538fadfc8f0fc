package gitdir_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"mayu/pkg/durable"
	"mayu/pkg/host"
	"mayu/pkg/store/gitdir"
)

// TestGroupCommitFsyncs pins the fsync calls of a group commit of N
// updates, the figure BenchmarkUpdateConcurrent's fsyncs/op averages over
// batches of whatever sizes the scheduler made (so that figure swings from
// run to run; this one does not). The protocol (durable.Batch) costs:
//
//   - the N records, the pack, its index and the ref lock: one fdatasync
//     each, or one syncfs once they are SyncfsMin or more;
//   - objects/pack and refs/heads, which got the pack and hold the lock:
//     one fsync each, before any record is renamed;
//   - the N host directories the records were renamed into: one fsync
//     each, or one syncfs from SyncfsMin directories;
//   - refs/heads once more, after the ref lock's rename.
//
// Nothing else of a batch is fsynced: the reflog and .git/index are
// rebuilt from the ref and the records after a crash. (The index's shared
// base is, when it is rewritten, once more than 64 + hosts/16 entries
// changed: the cases stay below that.)
func TestGroupCommitFsyncs(t *testing.T) {
	defer gitdir.SetMergeFanIn(1 << 20)() // no background merge meanwhile
	syncfsMin := durable.SyncfsMin
	cost := func(n int, syncfs bool) int64 {
		files, dirs := n+3, n
		if syncfs && files >= syncfsMin {
			files = 1
		}
		if syncfs && dirs >= syncfsMin {
			dirs = 1
		}
		return int64(files + 2 + dirs + 1)
	}
	for _, tc := range []struct {
		n      int
		syncfs bool
	}{{4, true}, {durable.SyncfsMin - 4, true}, {durable.SyncfsMin - 3, true}, {durable.SyncfsMin, true}, {32, true}, {64, true}, {4, false}, {32, false}} {
		mode := "fsync"
		if tc.syncfs {
			mode = "syncfs"
		}
		t.Run(fmt.Sprintf("N=%d/%s", tc.n, mode), func(t *testing.T) {
			if !tc.syncfs {
				defer gitdir.SetSyncfsMin(1 << 30)()
			}
			d := openHosts(t, tc.n+1)
			defer d.Close()
			_, _, fsyncs0 := gitdir.IOCounts()
			queued, release := d.HoldWrites()
			var wg sync.WaitGroup
			update := func(i int) {
				defer wg.Done()
				_, err := d.Update(fmt.Sprintf("s%03d", i), step("updated host cabinet", func(h *host.Host) { h.Cabinet++ }))
				require.NoError(t, err)
			}
			// The first request leads a batch of its own; the others
			// queue behind it while the lock is held, and make the next
			// batch.
			wg.Add(1)
			go update(0)
			waitQueue(t, queued, 0)
			for i := 1; i <= tc.n; i++ {
				wg.Add(1)
				go update(i)
			}
			waitQueue(t, queued, tc.n)
			release()
			wg.Wait()
			_, _, fsyncs1 := gitdir.IOCounts()
			require.Equal(t, cost(1, tc.syncfs)+cost(tc.n, tc.syncfs), fsyncs1-fsyncs0,
				"fsyncs of a batch of 1 and a batch of %d", tc.n)
		})
	}
}

// openHosts opens a cluster directory holding n hosts s000..., written
// before the store's first start (its bulk initial commit).
func openHosts(t *testing.T, n int) *gitdir.Dir {
	t.Helper()
	dir := t.TempDir()
	for i := 0; i < n; i++ {
		h := benchHost(fmt.Sprintf("s%03d", i), i)
		data, err := h.Marshal()
		require.NoError(t, err)
		require.NoError(t, os.Mkdir(filepath.Join(dir, h.Serial), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, h.Serial, "conf.json"), data, 0o644))
	}
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	return d
}

// waitQueue waits until a request leads and n more wait behind it.
func waitQueue(t *testing.T, queued func() (bool, int), n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		leading, got := queued()
		if leading && got == n {
			return
		}
		require.True(t, time.Now().Before(deadline), "queue: leading %v, %d waiting, want %d", leading, got, n)
		time.Sleep(time.Millisecond)
	}
}
