package gitdir_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store"
	"mayu/pkg/store/gitdir"
	"mayu/pkg/store/storetest"
)

func TestDirConformance(t *testing.T) {
	for _, noGit := range []bool{false, true} {
		name := "git"
		if noGit {
			name = "nogit"
		}
		t.Run(name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) store.Store {
				dir := t.TempDir()
				d, err := gitdir.Open(dir, gitdir.Options{NoGit: noGit})
				require.NoError(t, err)
				t.Cleanup(func() {
					require.NoError(t, d.Close())
					checkFilesMatch(t, dir, d)
					if !noGit {
						checkRepo(t, dir)
					}
				})
				return d
			})
		})
	}
}

// TestDirAudit checks the history of one machine's life: one commit per
// step that changed the record, each holding the record as that step left
// it, and a single conf.json write holding the final state.
func TestDirAudit(t *testing.T) {
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()

	var snapshots []host.Host
	record := func(msg string, fn func(h *host.Host)) store.Step {
		return store.Step{Message: msg, Apply: func(h *host.Host) error {
			fn(h)
			snapshots = append(snapshots, h.Clone())
			return nil
		}}
	}
	calls := []struct {
		create bool
		steps  []store.Step
	}{
		{true, []store.Step{
			record("host created", func(h *host.Host) { h.Enabled = true; h.State = host.Configured }),
			record("updated with predefined settings", func(h *host.Host) { h.MachineID = "0000aabbccddeeff"; h.Hostname = "0000aabbccddeeff" }),
			record("updated host InternalAddr", func(h *host.Host) { h.InternalAddr = net.ParseIP("192.168.2.21").To4() }),
			record("updated host profile and metadata", func(h *host.Host) { h.Profile = "core-services"; h.FleetMetadata = host.FleetMeta{"role-core=true"} }),
			record("set default etcd discovery token", func(h *host.Host) { h.EtcdClusterToken = "416b381afbc752dfc77e48ba7a99ccc3" }),
		}},
		{false, []store.Step{
			record("collected host mac addresses", func(h *host.Host) { h.MacAddresses = []string{"08:00:27:8e:15:8a"} }),
			record("updated host connected nic", func(h *host.Host) { h.ConnectedNIC = "eth1" }),
			record("updated host ipmi address", func(h *host.Host) {}), // no change: no commit
			record("updated host state to installing", func(h *host.Host) { h.State = host.Installing }),
		}},
		{false, []store.Step{record("updated state to installed", func(h *host.Host) { h.State = host.Installed })}},
		{false, []store.Step{record("updated state to running", func(h *host.Host) {
			h.State = host.Running
			h.LastBoot = time.Date(2016, 8, 9, 15, 49, 2, 123456789, time.UTC)
		})}},
		{false, []store.Step{record("updated host overrides: CoreOSVersion", func(h *host.Host) {
			h.Overrides = map[string]interface{}{"CoreOSVersion": "1010.5.0"}
		})}},
	}
	for _, c := range calls {
		if c.create {
			_, err = d.Create("0800278e158a-0", c.steps...)
		} else {
			_, err = d.Update("0800278e158a-0", c.steps...)
		}
		require.NoError(t, err)
	}
	_, err = d.UpdateCluster("Set default etcd cluster to '416b381afbc752dfc77e48ba7a99ccc3'", func(c *store.Cluster) error {
		c.Config.DefaultEtcdClusterToken = "416b381afbc752dfc77e48ba7a99ccc3"
		return nil
	})
	require.NoError(t, err)

	want := []string{
		"Set default etcd cluster to '416b381afbc752dfc77e48ba7a99ccc3'",
		"0800278e158a-0: updated host overrides: CoreOSVersion",
		"0800278e158a-0: updated state to running",
		"0800278e158a-0: updated state to installed",
		"0800278e158a-0: updated host state to installing",
		"0800278e158a-0: updated host connected nic",
		"0800278e158a-0: collected host mac addresses",
		"0800278e158a-0: set default etcd discovery token",
		"0800278e158a-0: updated host profile and metadata",
		"0800278e158a-0: updated host InternalAddr",
		"0800278e158a-0: updated with predefined settings",
		"0800278e158a-0: host created",
		"initial commit",
	}
	assert.Equal(t, want, gitLog(t, dir))
	checkRepo(t, dir)

	// Each host commit holds the record as its step left it. The no-op
	// step's snapshot equals its predecessor's and has no commit.
	commits := strings.Fields(git(t, dir, "log", "--reverse", "--format=%H"))
	var distinct []host.Host
	for _, s := range snapshots {
		b, _ := s.Marshal()
		if len(distinct) > 0 {
			pb, _ := distinct[len(distinct)-1].Marshal()
			if bytes.Equal(b, pb) {
				continue
			}
		}
		distinct = append(distinct, s)
	}
	require.Len(t, distinct, len(commits)-2)
	for i, s := range distinct {
		b, err := s.Marshal()
		require.NoError(t, err)
		assert.Equal(t, string(b), git(t, dir, "show", commits[i+1]+":0800278e158a-0/conf.json"), "commit %d", i+1)
	}
	final, err := d.Get("0800278e158a-0")
	require.NoError(t, err)
	fb, _ := final.Marshal()
	assert.Equal(t, string(fb), string(readFile(t, dir, "0800278e158a-0/conf.json")))
	assert.Equal(t, `{
  "GitStore": true,
  "Config": {
    "DefaultEtcdClusterToken": "416b381afbc752dfc77e48ba7a99ccc3"
  }
}
`, string(readFile(t, dir, "cluster.json")))
}

func TestDirReservedSerial(t *testing.T) {
	d, err := gitdir.Open(t.TempDir(), gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()
	_, err = d.Create("cluster.json", step("host created", func(h *host.Host) { h.Enabled = true }))
	assert.ErrorIs(t, err, host.ErrInvalidSerial)
}

// TestDirConcurrency: many goroutines create and update different and the
// same serials while readers read the files and the index.
func TestDirConcurrency(t *testing.T) {
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()

	const workers, ops = 8, 12
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		expected = map[string]int{} // audit message -> times committed
	)
	count := func(msg string) {
		mu.Lock()
		expected[msg]++
		mu.Unlock()
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for r := 0; r < 3; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				for _, h := range d.List() {
					b, err := os.ReadFile(filepath.Join(dir, h.Serial, "conf.json"))
					if errors.Is(err, fs.ErrNotExist) {
						continue
					}
					if assert.NoError(t, err) {
						_, err := host.Unmarshal(b)
						assert.NoError(t, err, "torn conf.json of %s: %q", h.Serial, b)
					}
				}
			}
		}()
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			own := fmt.Sprintf("w%d", w)
			for i := 0; i < ops; i++ {
				// Everyone races to create the shared serial.
				if _, err := d.Create("shared", step("host created", func(h *host.Host) { h.Enabled = true })); err == nil {
					count("shared: host created")
				} else {
					assert.ErrorIs(t, err, store.ErrExists)
				}
				if i == 0 {
					_, err := d.Create(own, step("host created", func(h *host.Host) { h.Enabled = true }),
						step("updated host InternalAddr", func(h *host.Host) { h.InternalAddr = net.IPv4(10, 0, 1, byte(w)) }))
					if !assert.NoError(t, err) {
						return
					}
					count(own + ": host created")
					count(own + ": updated host InternalAddr")
					continue
				}
				_, err := d.Update(own, step("updated host cabinet", func(h *host.Host) { h.Cabinet++ }),
					step("updated host state", func(h *host.Host) { h.MachineOnCabinet = uint(i) }))
				if !assert.NoError(t, err) {
					return
				}
				count(own + ": updated host cabinet")
				count(own + ": updated host state")
				_, err = d.Update("shared", step("updated host metadata", func(h *host.Host) {
					h.FleetMetadata = append(h.FleetMetadata, fmt.Sprintf("%s-%d=1", own, i))
				}))
				if !assert.NoError(t, err) {
					return
				}
				count("shared: updated host metadata")
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	readers.Wait()

	got := map[string]int{}
	for _, m := range gitLog(t, dir) {
		got[m]++
	}
	delete(got, "initial commit")
	assert.Equal(t, expected, got, "every audit message is in git log, once per change")
	shared, err := d.Get("shared")
	require.NoError(t, err)
	assert.Len(t, shared.FleetMetadata, workers*(ops-1), "no lost update on the shared serial")
	checkRepo(t, dir)
	checkFilesMatch(t, dir, d)
}
