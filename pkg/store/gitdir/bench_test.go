package gitdir_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mayu/pkg/host"
	"mayu/pkg/store/gitdir"
)

// Benchmarks of the cluster directory at 10, 1,000 and 10,000 existing
// hosts, git on and off. The fixture of each size is built once per run
// (files written directly, then one bulk initial commit by Open) and
// reused by every benchmark of that size.
//
//	go test -run '^$' -bench Open -benchtime 3x ./pkg/store/
//	go test -run '^$' -bench 'Get|Update|Create' -benchtime 200x ./pkg/store/
//
// The figures to compare are ns/op across host counts: the cost of one
// audited update must stay flat but for what git's data model forces (a
// new root tree of ~40 bytes per host per commit, and the index file of
// ~80 bytes per host per call).

var benchSizes = []int{10, 1000, 10000}

var (
	fixtureMu   sync.Mutex
	fixtureDirs = map[string]string{}
	fixtureRoot string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtureRoot != "" {
		_ = os.RemoveAll(fixtureRoot)
	}
	os.Exit(code)
}

// benchDir returns a cluster directory with n hosts, git or not, shared by
// the benchmarks of that kind.
func benchDir(b *testing.B, n int, noGit bool) string {
	b.Helper()
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	key := fmt.Sprintf("%d-%v", n, noGit)
	if dir, ok := fixtureDirs[key]; ok {
		return dir
	}
	if fixtureRoot == "" {
		root, err := os.MkdirTemp("", "mayu-store-bench-")
		if err != nil {
			b.Fatal(err)
		}
		fixtureRoot = root
	}
	dir := filepath.Join(fixtureRoot, key)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		h := benchHost(fmt.Sprintf("0800278e%04x-%d", i, i%10), i)
		data, err := h.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(dir, h.Serial), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, h.Serial, "conf.json"), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	d, err := gitdir.Open(dir, gitdir.Options{NoGit: noGit})
	if err != nil {
		b.Fatal(err)
	}
	if err := d.Close(); err != nil {
		b.Fatal(err)
	}
	b.Logf("fixture: %d hosts, git=%v, first open (bulk initial commit) %v", n, !noGit, time.Since(start))
	fixtureDirs[key] = dir
	return dir
}

func benchHost(serial string, i int) host.Host {
	return host.Host{
		Enabled: true, Serial: serial,
		MacAddresses: []string{fmt.Sprintf("08:00:27:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff)},
		InternalAddr: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)).To4(),
		Hostname:     fmt.Sprintf("%016x", i), MachineID: fmt.Sprintf("%032x", i), ConnectedNIC: "eth0",
		FleetMetadata: host.FleetMeta{"role-core=true"}, Profile: "core-services",
		EtcdClusterToken: "416b381afbc752dfc77e48ba7a99ccc3", State: host.Running,
		LastBoot: time.Date(2016, 8, 9, 15, 49, 2, 0, time.UTC), CoreOSVersion: "1068.6.0",
	}
}

func benchModes(b *testing.B, fn func(b *testing.B, n int, noGit bool)) {
	for _, noGit := range []bool{false, true} {
		mode := "git"
		if noGit {
			mode = "nogit"
		}
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/hosts=%d", mode, n), func(b *testing.B) { fn(b, n, noGit) })
		}
	}
}

// BenchmarkOpen: starting on an existing directory (read every record and
// HEAD's trees, rebuild .git/index). It runs first, on the fixtures as
// built; run it with a small -benchtime (3x) at 10,000 hosts.
func BenchmarkOpen(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			dir := benchDir(b, n, false)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				d, err := gitdir.Open(dir, gitdir.Options{})
				if err != nil {
					b.Fatal(err)
				}
				_ = d.Close()
			}
		})
	}
}

// BenchmarkGet: a lookup, from the index, at any size.
func BenchmarkGet(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			d := openBench(b, n, false)
			var macs []string
			for _, h := range d.List() {
				macs = append(macs, h.MacAddresses[0])
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := d.ByMAC(macs[i%len(macs)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUpdate: one Update with one changing step (one commit), as
// "updated state to running".
func BenchmarkUpdate(b *testing.B) {
	benchModes(b, func(b *testing.B, n int, noGit bool) {
		d := openBench(b, n, noGit)
		serials := benchSerials(d)
		report := countIO(b)
		b.ResetTimer()
		defer report()
		for i := 0; i < b.N; i++ {
			_, err := d.Update(serials[i%len(serials)], step("updated host cabinet", func(h *host.Host) { h.Cabinet++ }))
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkUpdateFinalConfig: one Update with the four steps of a final
// config request (four commits, one conf.json write).
func BenchmarkUpdateFinalConfig(b *testing.B) {
	benchModes(b, func(b *testing.B, n int, noGit bool) {
		d := openBench(b, n, noGit)
		serials := benchSerials(d)
		report := countIO(b)
		b.ResetTimer()
		defer report()
		for i := 0; i < b.N; i++ {
			_, err := d.Update(serials[i%len(serials)],
				step("collected host mac addresses", func(h *host.Host) {
					h.MacAddresses = append(h.MacAddresses[:1], fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8&0xff, i&0xff))
				}),
				step("updated host connected nic", func(h *host.Host) { h.ConnectedNIC = fmt.Sprintf("eth%d", i%2+1) }),
				step("updated host ipmi address", func(h *host.Host) { h.IPMIAddr = net.IPv4(10, 99, byte(i>>8), byte(i)).To4() }),
				step("updated host state to installing", func(h *host.Host) { h.MachineOnCabinet++ }),
			)
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCreate: a new machine's Create with the five steps of spec
// section 6 (five commits). Each op adds a host, so the count grows by
// b.N during the run.
func BenchmarkCreate(b *testing.B) {
	benchModes(b, func(b *testing.B, n int, noGit bool) {
		d := openBench(b, n, noGit)
		prefix := fmt.Sprintf("new%d-", time.Now().UnixNano())
		report := countIO(b)
		b.ResetTimer()
		defer report()
		for i := 0; i < b.N; i++ {
			_, err := d.Create(fmt.Sprintf("%s%d", prefix, i),
				step("host created", func(h *host.Host) { h.Enabled = true; h.State = host.Configured }),
				step("updated with predefined settings", func(h *host.Host) { h.MachineID = fmt.Sprintf("%032x", i); h.Hostname = h.MachineID[:16] }),
				step("updated host InternalAddr", func(h *host.Host) { h.InternalAddr = net.IPv4(10, 200, byte(i>>8), byte(i)).To4() }),
				step("updated host profile and metadata", func(h *host.Host) { h.Profile = "default"; h.FleetMetadata = host.FleetMeta{"role=worker"} }),
				step("set default etcd discovery token", func(h *host.Host) { h.EtcdClusterToken = "416b381afbc752dfc77e48ba7a99ccc3" }),
			)
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// countIO reports the files written, bytes written and fsyncs per op: the
// figures that show what one operation costs whatever the disk's speed.
func countIO(b *testing.B) func() {
	f0, by0, s0 := gitdir.IOCounts()
	return func() {
		f1, by1, s1 := gitdir.IOCounts()
		n := float64(b.N)
		b.ReportMetric(float64(f1-f0)/n, "files/op")
		b.ReportMetric(float64(by1-by0)/n, "wbytes/op")
		b.ReportMetric(float64(s1-s0)/n, "fsyncs/op")
	}
}

func openBench(b *testing.B, n int, noGit bool) *gitdir.Dir {
	b.Helper()
	dir := benchDir(b, n, noGit)
	d, err := gitdir.Open(dir, gitdir.Options{NoGit: noGit})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Close() })
	return d
}

func benchSerials(d *gitdir.Dir) []string {
	var out []string
	for _, h := range d.List() {
		out = append(out, h.Serial)
		if len(out) == 256 {
			break
		}
	}
	return out
}

// BenchmarkUpdateConcurrent: C goroutines updating distinct hosts at once
// (one changing step each), at 1,000 hosts (and 10,000) with git: what the group commit
// shares between the requests of a storm. ops/s is the figure to compare
// across C; fsyncs/op falls as batches grow.
func BenchmarkUpdateConcurrent(b *testing.B) {
	for _, c := range []int{1, 8, 32, 128} {
		for _, mode := range []string{"syncfs", "fsync", "syncfs/hosts=10000"} {
			b.Run(fmt.Sprintf("C=%d/%s", c, mode), func(b *testing.B) {
				if mode == "fsync" {
					defer gitdir.SetSyncfsMin(1 << 30)()
				}
				n := 1000
				if mode == "syncfs/hosts=10000" {
					n = 10000
				}
				d := openBench(b, n, false)
				serials := benchSerials(d)
				report := countIO(b)
				var next atomic.Int64
				var wg sync.WaitGroup
				start := time.Now()
				b.ResetTimer()
				for w := 0; w < c; w++ {
					wg.Add(1)
					go func(w int) {
						defer wg.Done()
						for {
							i := next.Add(1) - 1
							if i >= int64(b.N) {
								return
							}
							serial := serials[(int(i)%(len(serials)/c))*c+w]
							if _, err := d.Update(serial, step("updated host cabinet", func(h *host.Host) { h.Cabinet++ })); err != nil {
								b.Error(err)
								return
							}
						}
					}(w)
				}
				wg.Wait()
				b.StopTimer()
				report()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
			})
		}
	}
}
