package provision

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
	"mayu/pkg/host"
	"mayu/pkg/render"
	"mayu/pkg/store"
	"mayu/pkg/store/gitdir"
)

// snapshot is what a refused request must leave alone: every record and
// the audit trail.
type snapshot struct {
	hosts    []host.Host
	messages []string
}

func snap(st *store.Memory) snapshot { return snapshot{st.List(), st.Messages()} }

func assertUnchanged(t *testing.T, st *store.Memory, before snapshot, what string) {
	t.Helper()
	assert.Equal(t, before.hosts, st.List(), "%s: records changed", what)
	assert.Equal(t, before.messages, st.Messages(), "%s: something was committed", what)
}

// TestVersionIsNotPinned: a profile without coreos_version leaves the
// record's CoreOSVersion empty, as Mayu 0.11 did, so the machine follows
// default_coreos_version until it reports what it runs; a profile's own
// version is recorded; only the implicit default profile (absent from
// config.yaml) records the default, again as 0.11 did.
func TestVersionIsNotPinned(t *testing.T) {
	p, _ := newTest(t, "192.168.2.99")
	h, _, err := p.Register("core-1")
	require.NoError(t, err)
	assert.Equal(t, "core-services", h.Profile)
	assert.Empty(t, h.CoreOSVersion, "nothing pinned")
	v, err := p.ImageVersion("core-1")
	require.NoError(t, err)
	assert.Equal(t, "1068.6.0", v)

	p.cfg.DefaultCoreOSVersion = "1122.3.0" // an operator raises the default and restarts
	v, err = p.ImageVersion("core-1")
	require.NoError(t, err)
	assert.Equal(t, "1122.3.0", v, "a machine without an override follows the default")

	for i := 0; i < 2; i++ {
		_, _, err = p.Register(fmt.Sprintf("core-%d", i+2))
		require.NoError(t, err)
	}
	h, _, err = p.Register("storage-1")
	require.NoError(t, err)
	assert.Equal(t, "storage", h.Profile)
	assert.Equal(t, "1122.2.0", h.CoreOSVersion, "a profile's own version is recorded")

	// The machine reports what it runs; from then on that is its version.
	_, err = p.ReportFacts("core-1", Facts{MACs: []string{"02:00:00:00:00:01"}})
	require.NoError(t, err)
	_, err = p.SetInstalled("core-1")
	require.NoError(t, err)
	h, err = p.BootComplete("core-1", Versions{CoreOSVersion: "1122.3.0"})
	require.NoError(t, err)
	assert.Equal(t, "1122.3.0", h.CoreOSVersion)

	// Without a default profile in config.yaml, 0.11 recorded the default.
	cfg, err := config.Parse([]byte(strings.Replace(fmt.Sprintf(testConfig, "192.168.2.99"),
		"  - name: default\n    tags: [\"role-worker=true\"]\n", "", 1)))
	require.NoError(t, err)
	_, ok := cfg.Profile(config.DefaultProfileName)
	require.False(t, ok)
	st := store.NewMemory()
	q, err := New(Config{Cluster: cfg, Store: st})
	require.NoError(t, err)
	for i := 0; i < 6; i++ {
		h, _, err = q.Register(fmt.Sprintf("m%d", i))
		require.NoError(t, err)
	}
	assert.Equal(t, config.DefaultProfileName, h.Profile)
	assert.Equal(t, "1068.6.0", h.CoreOSVersion)
}

// TestIPMIAddrClears: an empty address clears it, audited like a change; a
// malformed one is refused.
func TestIPMIAddrClears(t *testing.T) {
	p, st := newTest(t, "192.168.2.99")
	_, _, err := p.Register("m1")
	require.NoError(t, err)
	h, err := p.SetIPMIAddr("m1", "10.1.1.1")
	require.NoError(t, err)
	assert.Equal(t, "10.1.1.1", h.IPMIAddr.String())
	for _, empty := range []string{"", "  "} {
		h, err = p.SetIPMIAddr("m1", empty)
		require.NoError(t, err)
		assert.Nil(t, h.IPMIAddr)
	}
	n := 0
	for _, m := range st.Messages() {
		if m == "m1: "+MsgIPMIAddr {
			n++
		}
	}
	assert.Equal(t, 2, n, "set and cleared: two commits (clearing again changes nothing)")
	before := snap(st)
	_, err = p.SetIPMIAddr("m1", "10.1.1.300")
	assert.ErrorIs(t, err, ErrInvalid)
	assertUnchanged(t, st, before, "malformed address")
}

func TestMACBinding(t *testing.T) {
	const (
		macA = "02:00:00:00:00:0a"
		macB = "02:00:00:00:00:0b"
		macC = "02:00:00:00:00:0c"
		macD = "02:00:00:00:00:0d"
	)
	p, st := newTest(t, "192.168.2.99")

	t.Run("empty MAC refused", func(t *testing.T) {
		before := snap(st)
		_, err := p.ReportFacts("fresh", Facts{MACs: []string{macA, ""}})
		assert.ErrorIs(t, err, ErrInvalid)
		assert.Contains(t, err.Error(), "empty MAC")
		assertUnchanged(t, st, before, "empty MAC")
	})

	t.Run("installed needs a MAC", func(t *testing.T) {
		_, err := p.ReportFacts("nomac", Facts{ConnectedNIC: "eth0"})
		require.NoError(t, err)
		before := snap(st)
		_, err = p.SetInstalled("nomac")
		assert.ErrorIs(t, err, ErrConflict)
		assert.Contains(t, err.Error(), "no MAC address")
		_, err = p.SetState("nomac", "installed")
		assert.ErrorIs(t, err, ErrConflict, "the operator's route to installed too")
		assertUnchanged(t, st, before, "installed without MAC")
		// Once its MACs are known, it installs.
		_, err = p.ReportFacts("nomac", Facts{MACs: []string{macD}})
		require.NoError(t, err)
		h, err := p.SetInstalled("nomac")
		require.NoError(t, err)
		assert.Equal(t, host.Installed, h.State)
	})

	t.Run("disjoint report refused, overlap accepted", func(t *testing.T) {
		_, err := p.ReportFacts("s1", Facts{MACs: []string{macA, macB}})
		require.NoError(t, err)
		before := snap(st)
		_, err = p.ReportFacts("s1", Facts{MACs: []string{macC}})
		require.ErrorIs(t, err, ErrMACConflict)
		assert.ErrorIs(t, err, ErrConflict)
		for _, want := range []string{"s1", macA + "," + macB, macC, "mayuctl set s1 macs " + macC} {
			assert.Contains(t, err.Error(), want)
		}
		assertUnchanged(t, st, before, "disjoint report")

		h, err := p.ReportFacts("s1", Facts{MACs: []string{macB, macC}})
		require.NoError(t, err, "one card replaced: still this machine")
		assert.Equal(t, []string{macB, macC}, h.MacAddresses)
	})

	t.Run("MAC of another host refused", func(t *testing.T) {
		before := snap(st)
		_, err := p.ReportFacts("s2", Facts{MACs: []string{macB}})
		require.ErrorIs(t, err, ErrMACConflict)
		assert.Contains(t, err.Error(), "host s1")
		assertUnchanged(t, st, before, "MAC of s1 reported by a new serial")
		_, err = p.SetMACs("nomac", []string{macC})
		assert.ErrorIs(t, err, ErrMACConflict)
		assertUnchanged(t, st, before, "MAC of s1 set on nomac")
	})

	t.Run("re-bind after a board swap", func(t *testing.T) {
		// nomac is installed with macD; its board is swapped: macA.
		_, err := p.SetMACs("nomac", nil)
		assert.ErrorIs(t, err, ErrConflict, "an installed machine cannot be unbound: DHCP must keep ignoring it")
		h, err := p.SetMACs("nomac", []string{"02-00-00-00-00-0A"})
		require.NoError(t, err)
		assert.Equal(t, []string{macA}, h.MacAddresses, "normalized; DHCP now ignores the new board")
		assert.Contains(t, st.Messages(), "nomac: "+MsgSetMACs)

		// s1 is reinstalled on a new board: unbind, the next report binds.
		_, err = p.SetState("s1", "configured")
		require.ErrorIs(t, err, host.ErrForbiddenTransition, "installing -> configured is not a transition")
		_, err = p.SetMACs("s1", []string{})
		require.NoError(t, err)
		h, err = p.ReportFacts("s1", Facts{MACs: []string{macB}})
		require.NoError(t, err)
		assert.Equal(t, []string{macB}, h.MacAddresses)

		_, err = p.SetMACs("s1", []string{"nope"})
		assert.ErrorIs(t, err, ErrInvalid)
		_, err = p.SetMACs("ghost", []string{macC})
		assert.ErrorIs(t, err, store.ErrNotFound)
	})

	t.Run("concurrent claims of one MAC", func(t *testing.T) {
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, errs[i] = p.ReportFacts(fmt.Sprintf("clone-%d", i), Facts{MACs: []string{"02:00:00:00:00:ee"}})
			}(i)
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
			} else {
				assert.ErrorIs(t, err, ErrMACConflict)
			}
		}
		assert.Equal(t, 1, ok, "one machine gets the MAC")
		owners := 0
		for _, h := range st.List() {
			if contains(h.MacAddresses, "02:00:00:00:00:ee") {
				owners++
			}
		}
		assert.Equal(t, 1, owners)
	})
}

// TestFailedRenderChangesNothing: a final config or first-stage script that
// does not render leaves the records, the files and the git history as
// they were, for a known and for a new serial.
func TestFailedRenderChangesNothing(t *testing.T) {
	dir := t.TempDir()
	st, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	p := newTestWith(t, "192.168.2.99", st)
	gitLog := func() string {
		out, err := exec.Command("git", "-C", dir, "log", "--format=%H %s").Output()
		require.NoError(t, err)
		return string(out)
	}
	conf := func(serial string) string {
		b, err := os.ReadFile(filepath.Join(dir, serial, "conf.json"))
		if errors.Is(err, os.ErrNotExist) {
			return ""
		}
		require.NoError(t, err)
		return string(b)
	}
	_, _, err = p.Register("known")
	require.NoError(t, err)

	failing := func(render.FinalData) ([]byte, error) {
		return nil, fmt.Errorf("%w: final: line 3: no such key", render.ErrRender)
	}
	facts := Facts{MACs: []string{"02:00:00:00:01:01"}, ConnectedNIC: "eth0", IPMIAddr: "10.0.0.9"}
	for _, serial := range []string{"known", "newcomer"} {
		logBefore, confBefore, listBefore := gitLog(), conf(serial), st.List()
		_, _, err = p.FinalConfig(serial, facts, failing)
		require.ErrorIs(t, err, render.ErrRender, serial)
		assert.Equal(t, logBefore, gitLog(), "%s: nothing committed", serial)
		assert.Equal(t, confBefore, conf(serial), "%s: conf.json untouched", serial)
		assert.Equal(t, listBefore, st.List(), serial)
	}
	_, err = st.ByMAC("02:00:00:00:01:01")
	assert.ErrorIs(t, err, store.ErrNotFound, "no MAC claimed")

	logBefore := gitLog()
	_, _, err = p.RegisterChecked("newcomer", func(host.Host) error { return errors.New("first stage does not render") })
	require.Error(t, err)
	assert.Equal(t, logBefore, gitLog())
	assert.Empty(t, p.inflight)
	res, err := st.Reserve("probe", p.alloc)
	require.NoError(t, err)
	assert.Equal(t, store.Allocation{Profile: "core-services", Addr: net.ParseIP("192.168.2.22").To4()}, res.Allocation(),
		"the reserved address is free again")
	res.Release()

	// The same request with a working render writes once, and what was
	// rendered is what is stored.
	var rendered host.Host
	out, h, err := p.FinalConfig("known", facts, func(d render.FinalData) ([]byte, error) {
		rendered = d.Host
		return []byte("#cloud-config\n"), nil
	})
	require.NoError(t, err)
	assert.Equal(t, "#cloud-config\n", string(out))
	assert.Equal(t, host.Installing, h.State)
	stored, err := st.Get("known")
	require.NoError(t, err)
	assert.Equal(t, stored, rendered, "the config was rendered from the record as stored")
	assert.Contains(t, gitLog(), "known: updated host state to installing")
}

// TestRenderSeesConcurrentChanges: a change that lands between the render
// and the write makes the request start over, so the config served always
// matches the stored record.
func TestRenderSeesConcurrentChanges(t *testing.T) {
	p, st := newTest(t, "192.168.2.99")
	_, _, err := p.Register("m1")
	require.NoError(t, err)
	renders := 0
	out, h, err := p.FinalConfig("m1", Facts{}, func(d render.FinalData) ([]byte, error) {
		renders++
		if renders == 1 { // an operator's override lands meanwhile
			_, err := p.Override("m1", map[string]interface{}{"docker_version": "1.12"})
			require.NoError(t, err)
		}
		return []byte(fmt.Sprint(d.Host.Overrides["docker_version"])), nil
	})
	require.NoError(t, err)
	assert.Equal(t, 2, renders)
	assert.Equal(t, "1.12", string(out))
	assert.Equal(t, host.Installing, h.State)
	stored, _ := st.Get("m1")
	assert.Equal(t, "1.12", stored.Overrides["docker_version"])
}

// TestValuesAreCheckedAtWrite: every value that later becomes a path
// component (a version) or a rendered value is refused when written, with
// the reason, and nothing is stored.
func TestValuesAreCheckedAtWrite(t *testing.T) {
	p, st := newTest(t, "192.168.2.99")
	_, err := p.ReportFacts("m1", Facts{MACs: []string{"02:00:00:00:02:01"}})
	require.NoError(t, err)
	_, err = p.SetInstalled("m1")
	require.NoError(t, err)
	hidden := map[string]string{"RLO U+202E": "\u202e", "ZWSP U+200B": "\u200b", "BOM U+FEFF": "\ufeff",
		"LS U+2028": "\u2028", "PS U+2029": "\u2029", "NEL U+0085": "\u0085", "ESC": "\x1b", "NUL": "\x00"}
	type attempt struct {
		name string
		do   func() error
	}
	var attempts []attempt
	for _, v := range []string{"../../../etc", "..", ".", ".hidden", "a/b", `a\b`, "1068.6.0 ", "x\x00", strings.Repeat("9", 65)} {
		v := v
		attempts = append(attempts,
			attempt{"override CoreOSVersion " + v, func() error {
				_, err := p.Override("m1", map[string]interface{}{"CoreOSVersion": v})
				return err
			}},
			attempt{"override yochu_version " + v, func() error {
				_, err := p.Override("m1", map[string]interface{}{"yochu_version": v})
				return err
			}},
			attempt{"reported CoreOSVersion " + v, func() error {
				_, err := p.BootComplete("m1", Versions{CoreOSVersion: v + "x"})
				return err
			}})
	}
	attempts = append(attempts, attempt{"override version not a scalar", func() error {
		_, err := p.Override("m1", map[string]interface{}{"CoreOSVersion": map[string]interface{}{"a": "b"}})
		return err
	}})
	for name, c := range hidden {
		c := c
		attempts = append(attempts,
			attempt{"provider id " + name, func() error { _, err := p.SetProviderID("m1", "rack"+c+"7"); return err }},
			attempt{"metadata " + name, func() error { _, err := p.SetMetadata("m1", []string{"role=x" + c + "y"}); return err }},
			attempt{"override key " + name, func() error {
				_, err := p.Override("m1", map[string]interface{}{"k" + c: "v"})
				return err
			}},
			attempt{"override value " + name, func() error {
				_, err := p.Override("m1", map[string]interface{}{"k": []interface{}{"ok", "v" + c}})
				return err
			}},
			attempt{"reported MayuVersion " + name, func() error {
				_, err := p.BootComplete("m1", Versions{MayuVersion: "0.11" + c + "1"})
				return err
			}},
			attempt{"etcd token " + name, func() error { _, err := p.SetEtcdClusterToken("m1", "t"+c+"t"); return err }})
	}
	before := snap(st)
	for _, a := range attempts {
		err := a.do()
		assert.ErrorIs(t, err, ErrInvalid, a.name)
	}
	assertUnchanged(t, st, before, "refused values")

	// What real values look like still passes.
	_, err = p.Override("m1", map[string]interface{}{"CoreOSVersion": "1122.2.0", "yochu_version": "0.19.1",
		"etcd_version": "v2.2.5-gs-1", "k8s_version": "", "docker_version": nil, "note": "fine ünïcode"})
	require.NoError(t, err)
	_, err = p.SetProviderID("m1", "aws:///eu-west-1a/i-0abc")
	require.NoError(t, err, "provider IDs are not paths here: Kubernetes-style IDs keep their slashes")
	h, err := p.BootComplete("m1", Versions{CoreOSVersion: "1122.2.0", MayuVersion: "1.0.0+dirty", DockerVersion: "1.10.3"})
	require.NoError(t, err)
	assert.Equal(t, "1122.2.0", h.CoreOSVersion)
}

// TestRecordCap: no write may grow a record past MaxRecordBytes; the
// refused write stores and commits nothing. Mayu 0.11's records are far
// below the cap.
func TestRecordCap(t *testing.T) {
	p, st := newTest(t, "192.168.2.99")
	_, _, err := p.Register("m1")
	require.NoError(t, err)
	before := snap(st)
	big := strings.Repeat("v", 900<<10)
	for i := 0; i < 20; i++ {
		_, err = p.Override("m1", map[string]interface{}{fmt.Sprintf("k%d", i): big})
		require.ErrorIs(t, err, ErrTooLarge)
	}
	assert.Contains(t, err.Error(), "over the cap of 65536 (64 KiB)")
	_, err = p.SetMetadata("m1", []string{"k=" + strings.Repeat("x", MaxRecordBytes)})
	assert.ErrorIs(t, err, ErrTooLarge)
	_, err = p.SetProviderID("m1", strings.Repeat("p", MaxRecordBytes))
	assert.ErrorIs(t, err, ErrTooLarge)
	assertUnchanged(t, st, before, "oversized records")

	// Just under the cap is fine; one more byte is not.
	h, _ := st.Get("m1")
	b, _ := h.Marshal()
	room := MaxRecordBytes - len(b) - len(`,
  "ProviderId": ""`)
	_, err = p.SetProviderID("m1", strings.Repeat("p", room))
	require.NoError(t, err)
	h, _ = st.Get("m1")
	b, _ = h.Marshal()
	assert.Equal(t, MaxRecordBytes, len(b))
	_, err = p.SetProviderID("m1", strings.Repeat("p", room+1))
	assert.ErrorIs(t, err, ErrTooLarge)

	// The fixtures of a Mayu 0.11 cluster directory (wherever the store
	// keeps them) are far below the cap.
	var fixtures []string
	for _, pat := range []string{"../store/testdata/mayu-0.11/*/conf.json", "../store/*/testdata/mayu-0.11/*/conf.json"} {
		m, err := filepath.Glob(pat)
		require.NoError(t, err)
		fixtures = append(fixtures, m...)
	}
	require.NotEmpty(t, fixtures, "the 0.11 fixtures moved: update the glob")
	for _, f := range fixtures {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		h, err := host.Unmarshal(b)
		require.NoError(t, err, f)
		out, err := h.Marshal()
		require.NoError(t, err)
		assert.Less(t, len(out)*32, MaxRecordBytes, "%s is %d bytes", f, len(out))
	}
}

// TestSetStateRunningIsRefused: 0.11 read "set state running" as
// "reinstall with the data wiped"; doing anything else under that name
// would surprise its users, so it is refused, naming mark-fresh.
func TestSetStateRunningIsRefused(t *testing.T) {
	p, st := newTest(t, "192.168.2.99")
	_, err := p.ReportFacts("m1", Facts{MACs: []string{"02:00:00:00:03:01"}})
	require.NoError(t, err)
	_, err = p.SetInstalled("m1")
	require.NoError(t, err)
	_, err = p.BootComplete("m1", Versions{})
	require.NoError(t, err)
	before := snap(st)
	for _, s := range []string{"running", "RUNNING"} {
		_, err = p.SetState("m1", s)
		require.ErrorIs(t, err, host.ErrForbiddenTransition)
		assert.Contains(t, err.Error(), "from running to running")
		assert.Contains(t, err.Error(), "mark-fresh")
	}
	_, err = p.SetState("nobody", "running")
	assert.ErrorIs(t, err, store.ErrNotFound)
	assertUnchanged(t, st, before, "set state running")
}

// TestRenderGivesUpOnAHotRecord: a record that changes under every
// attempt ends the request with ErrConflict (a 409 to retry) after
// maxAttempts renders, without writing the facts.
func TestRenderGivesUpOnAHotRecord(t *testing.T) {
	p, st := newTest(t, "192.168.2.99")
	_, _, err := p.Register("m1")
	require.NoError(t, err)
	renders := 0
	_, _, err = p.FinalConfig("m1", Facts{MACs: []string{"02:00:00:00:04:01"}}, func(render.FinalData) ([]byte, error) {
		renders++
		_, err := p.SetCabinet("m1", uint(renders), nil)
		require.NoError(t, err)
		return nil, nil
	})
	require.ErrorIs(t, err, ErrConflict)
	assert.Equal(t, maxAttempts, renders)
	h, _ := st.Get("m1")
	assert.Equal(t, host.Configured, h.State)
	assert.Empty(t, h.MacAddresses)
}

// TestIgnoredByDHCP: with network.installed_boot ignore (the default)
// installed and running hosts are left to their disk by DHCP; with local
// DHCP answers every host and LocalBoot names those that boot their disk.
func TestIgnoredByDHCP(t *testing.T) {
	ignore := config.Network{InstalledBoot: config.InstalledBootIgnore}
	local := config.Network{InstalledBoot: config.InstalledBootLocal}
	for _, s := range host.States {
		h := host.Host{State: s}
		assert.Equal(t, s.IgnoredByDHCP(), IgnoredByDHCP(ignore, h), s)
		assert.Equal(t, s.IgnoredByDHCP(), IgnoredByDHCP(config.Network{}, h), "unset is ignore: %s", s)
		assert.False(t, IgnoredByDHCP(local, h), s)
		assert.False(t, IgnoredByDHCP(config.Network{ProxyDHCP: true, InstalledBoot: config.InstalledBootIgnore}, h),
			"a proxyDHCP server cannot ignore: %s", s)
	}

	p, st := newTest(t, "192.168.2.99")
	_, _, err := p.LocalBoot("nonsense")
	require.ErrorIs(t, err, ErrInvalid)
	_, err = st.Create("m1", store.Step{Message: "test", Apply: func(h *host.Host) error {
		h.State, h.MacAddresses = host.Installed, []string{"00:11:22:33:44:55"}
		return nil
	}})
	require.NoError(t, err)
	_, local1, err := p.LocalBoot("00:11:22:33:44:55")
	require.NoError(t, err)
	assert.False(t, local1, "installed_boot ignore: the boot script never sends a machine to its disk")

	p.cfg.Network.InstalledBoot = config.InstalledBootLocal
	h, ok, err := p.LocalBoot("00-11-22-33-44-55")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, "m1", h.Serial)
	_, ok, err = p.LocalBoot("00:11:22:33:44:56")
	require.NoError(t, err)
	assert.False(t, ok, "unknown MAC installs")
}
