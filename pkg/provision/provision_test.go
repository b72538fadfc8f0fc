package provision

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
	"mayu/pkg/host"
	"mayu/pkg/store"
	"mayu/pkg/store/gitdir"
	"mayu/pkg/store/storetest"
)

const testConfig = `
default_coreos_version: 1068.6.0
network:
  pxe: true
  interface: eth1
  bind_addr: 192.168.2.2
  bootstrap_range: {start: 192.168.2.100, end: 192.168.2.200}
  ip_range: {start: 192.168.2.21, end: %s}
profiles:
  - name: core-services
    quantity: 3
    tags: ["role-core=true"]
  - name: storage
    quantity: 2
    tags: ["role-storage=true", "quobyte=true"]
    disable_engine: true
    coreos_version: "1122.2.0"
    etcd_cluster_token: storagetoken
  - name: default
    tags: ["role-worker=true"]
`

func newTest(t *testing.T, rangeEnd string) (*Provisioner, *store.Memory) {
	t.Helper()
	st := store.NewMemory()
	return newTestWith(t, rangeEnd, st), st
}

func newTestWith(t *testing.T, rangeEnd string, st store.Store) *Provisioner {
	t.Helper()
	cfg, err := config.Parse([]byte(fmt.Sprintf(testConfig, rangeEnd)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	p, err := New(Config{Cluster: cfg, Store: st, Now: func() time.Time {
		return time.Date(2016, 8, 9, 15, 49, 2, 123, time.UTC)
	}})
	require.NoError(t, err)
	require.NoError(t, p.SetClusterToken("41f07d10ab835b22071a32d5c1b75a6d"))
	return p
}

func TestRegisterAssignsProfilesAddressesAndTokens(t *testing.T) {
	p, st := newTest(t, "192.168.2.99")
	want := []struct {
		profile, ip, token, version string
		tags                        []string
		disable                     bool
	}{
		// A profile without coreos_version pins nothing (as Mayu 0.11): the
		// machine follows default_coreos_version (TestVersionIsNotPinned).
		{"core-services", "192.168.2.21", "41f07d10ab835b22071a32d5c1b75a6d", "", []string{"role-core=true"}, false},
		{"core-services", "192.168.2.22", "41f07d10ab835b22071a32d5c1b75a6d", "", []string{"role-core=true"}, false},
		{"core-services", "192.168.2.23", "41f07d10ab835b22071a32d5c1b75a6d", "", []string{"role-core=true"}, false},
		{"storage", "192.168.2.24", "storagetoken", "1122.2.0", []string{"role-storage=true", "quobyte=true"}, true},
		{"storage", "192.168.2.25", "storagetoken", "1122.2.0", []string{"role-storage=true", "quobyte=true"}, true},
		{"default", "192.168.2.26", "41f07d10ab835b22071a32d5c1b75a6d", "", []string{"role-worker=true"}, false},
	}
	for i, w := range want {
		serial := fmt.Sprintf("0800278E158%d-%d", i, i)
		h, created, err := p.Register(serial)
		require.NoError(t, err)
		assert.True(t, created)
		assert.Equal(t, fmt.Sprintf("0800278e158%d-%d", i, i), h.Serial, "serial is lower-cased")
		assert.Equal(t, w.profile, h.Profile)
		assert.Equal(t, w.ip, h.InternalAddr.String())
		assert.Equal(t, w.token, h.EtcdClusterToken)
		assert.Equal(t, w.version, h.CoreOSVersion)
		assert.Equal(t, host.FleetMeta(w.tags), h.FleetMetadata)
		assert.Equal(t, w.disable, h.FleetDisableEngine)
		assert.Equal(t, host.Configured, h.State)
		assert.True(t, h.Enabled)
		assert.Len(t, h.MachineID, 32)
		assert.Equal(t, "0000", h.MachineID[:4], "cabinet and machine on cabinet are bytes 0 and 1")
		assert.Equal(t, h.MachineID[:16], h.Hostname)
	}
	// Registering again returns the same record.
	h, created, err := p.Register("0800278e1580-0")
	require.NoError(t, err)
	assert.False(t, created)
	assert.Equal(t, "192.168.2.21", h.InternalAddr.String())

	msgs := st.Messages()
	assert.Contains(t, msgs, "0800278e1580-0: host created")
	assert.Contains(t, msgs, "0800278e1580-0: updated with predefined settings")
	assert.Contains(t, msgs, "0800278e1580-0: updated host InternalAddr")
	assert.Contains(t, msgs, "0800278e1580-0: updated host profile and metadata")
	assert.Contains(t, msgs, "0800278e1580-0: set default etcd discovery token")
	assert.NotContains(t, msgs, "0800278e1583-3: set default etcd discovery token", "storage profile has its own token")
}

func TestRegisterRejectsBadSerials(t *testing.T) {
	p, _ := newTest(t, "192.168.2.99")
	for _, s := range []string{"", "../etc", "a/b", "..", ".hidden", "x\x00y", string(make([]byte, 200))} {
		_, _, err := p.Register(s)
		assert.ErrorIs(t, err, ErrInvalid, "serial %q", s)
	}
}

func TestRangeFullIsAnErrorNotAHang(t *testing.T) {
	p, _ := newTest(t, "192.168.2.23")
	for i := 0; i < 3; i++ {
		_, _, err := p.Register(fmt.Sprintf("m%d", i))
		require.NoError(t, err)
	}
	_, _, err := p.Register("m3")
	assert.ErrorIs(t, err, ErrRangeFull)
}

// TestConcurrentRegistrations: registrations reserve their address and
// profile and write outside the lock (sharing the store's group commit),
// yet never share an address, overshoot a quantity or create a serial
// twice. Run on the git store too, where writes take real time.
func TestConcurrentRegistrations(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		p, st := newTest(t, "192.168.2.99")
		concurrentRegistrations(t, p, st, st.Messages)
	})
	t.Run("git", func(t *testing.T) {
		dir := t.TempDir()
		st, err := gitdir.Open(dir, gitdir.Options{})
		require.NoError(t, err)
		p := newTestWith(t, "192.168.2.99", st)
		concurrentRegistrations(t, p, st, func() []string {
			out, err := exec.Command("git", "-C", dir, "log", "--format=%s").Output()
			require.NoError(t, err)
			return strings.Split(strings.TrimSpace(string(out)), "\n")
		})
	})
}

func concurrentRegistrations(t *testing.T, p *Provisioner, st store.Store, messages func() []string) {
	const machines = 64
	var wg sync.WaitGroup
	errs := make(chan error, machines*2)
	for i := 0; i < machines; i++ {
		for j := 0; j < 2; j++ { // each serial registered twice at once
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				if _, _, err := p.Register(fmt.Sprintf("node-%02d", i)); err != nil {
					errs <- err
				}
			}(i)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	hosts := st.List()
	require.Len(t, hosts, machines)
	storetest.CheckFleet(t, hosts, map[string]int{"core-services": 3, "storage": 2, "default": machines - 5})
	created := 0
	for _, m := range messages() {
		if len(m) > 13 && m[len(m)-12:] == "host created" {
			created++
		}
	}
	assert.Equal(t, machines, created, "one record per serial")
}

// TestFailedRegistrationFreesItsAddress: a registration whose write fails
// gives its reserved address and profile back.
func TestFailedRegistrationFreesItsAddress(t *testing.T) {
	cfg, err := config.Parse([]byte(fmt.Sprintf(testConfig, "192.168.2.99")))
	require.NoError(t, err)
	broken := storetest.NewBroken(t)
	p, err := New(Config{Cluster: cfg, Store: broken})
	require.NoError(t, err)
	_, _, err = p.Register("lost")
	require.ErrorIs(t, err, store.ErrStorage)
	assert.Empty(t, p.inflight)
	// No reservation is left behind in the store that failed: its next
	// one gets the same address and profile slot.
	res, err := broken.Reserve("probe", p.alloc)
	require.NoError(t, err)
	assert.Equal(t, store.Allocation{Profile: "core-services", Addr: net.ParseIP("192.168.2.21").To4()}, res.Allocation(),
		"no reservation left behind")
	res.Release()

	// The same provisioner over a working store hands out the same first
	// address and the first profile again.
	mem := store.NewMemory()
	p.store = mem
	h, _, err := p.Register("kept")
	require.NoError(t, err)
	assert.Equal(t, "192.168.2.21", h.InternalAddr.String())
	assert.Equal(t, "core-services", h.Profile)
	assert.Empty(t, p.inflight)
}

func TestLifeCycle(t *testing.T) {
	p, st := newTest(t, "192.168.2.99")
	const s = "0800278e158a-0"
	h, err := p.ReportFacts(s, Facts{MACs: []string{"08:00:27:8E:15:8A", "08:00:27:8e:15:8a"}, ConnectedNIC: "eth0", IPMIAddr: "10.0.0.5"})
	require.NoError(t, err)
	assert.Equal(t, host.Installing, h.State)
	assert.Equal(t, []string{"08:00:27:8e:15:8a"}, h.MacAddresses)
	assert.Equal(t, "eth0", h.ConnectedNIC)
	assert.Equal(t, "10.0.0.5", h.IPMIAddr.String())

	// A machine that asks again mid-install stays installing.
	_, err = p.ReportFacts(s, Facts{MACs: []string{"08:00:27:8e:15:8a"}, ConnectedNIC: "eth0"})
	require.NoError(t, err)

	_, err = p.BootComplete(s, Versions{})
	assert.ErrorIs(t, err, host.ErrForbiddenTransition, "cannot run before installed")

	h, err = p.SetInstalled(s)
	require.NoError(t, err)
	assert.Equal(t, host.Installed, h.State)

	h, err = p.BootComplete(s, Versions{CoreOSVersion: "1068.6.0", DockerVersion: "1.10.3"})
	require.NoError(t, err)
	assert.Equal(t, host.Running, h.State)
	assert.Equal(t, "1.10.3", h.DockerVersion)
	assert.Equal(t, 2016, h.LastBoot.Year())

	_, err = p.ReportFacts(s, Facts{})
	assert.ErrorIs(t, err, host.ErrForbiddenTransition, "a running machine does not reinstall by itself")

	h, err = p.SetState(s, "configured")
	require.NoError(t, err)
	assert.Equal(t, host.Configured, h.State)
	assert.True(t, h.KeepDiskData)

	h, err = p.MarkFresh(s)
	require.NoError(t, err)
	assert.False(t, h.KeepDiskData)

	_, err = p.SetState(s, "bogus")
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = p.SetState("nobody", "configured")
	assert.ErrorIs(t, err, store.ErrNotFound)

	msgs := st.Messages()
	for _, m := range []string{MsgMACs, MsgConnectedNIC, MsgIPMIAddr, MsgInstalling, MsgInstalled, MsgRunning, MsgState, MsgFresh} {
		assert.Contains(t, msgs, s+": "+m)
	}
}

func TestSetters(t *testing.T) {
	p, st := newTest(t, "192.168.2.99")
	const s = "abc"
	_, _, err := p.Register(s)
	require.NoError(t, err)

	h, err := p.SetMetadata(s, []string{"role-core=true", " zone=b "})
	require.NoError(t, err)
	assert.Equal(t, "role-core=true,zone=b", h.FleetMetadata.String())
	_, err = p.SetMetadata(s, []string{"novalue"})
	assert.ErrorIs(t, err, ErrInvalid)

	h, err = p.SetProviderID(s, "rack-7")
	require.NoError(t, err)
	assert.Equal(t, "rack-7", h.ProviderId)

	_, err = p.SetIPMIAddr(s, "not-an-ip")
	assert.ErrorIs(t, err, ErrInvalid)
	h, err = p.SetIPMIAddr(s, "10.1.1.1")
	require.NoError(t, err)
	assert.Equal(t, "10.1.1.1", h.IPMIAddr.String())

	h, err = p.SetCabinet(s, 4, nil)
	require.NoError(t, err)
	assert.EqualValues(t, 4, h.Cabinet)

	h, err = p.SetEtcdClusterToken(s, "416b381afbc752dfc77e48ba7a99ccc3")
	require.NoError(t, err)
	assert.Equal(t, "416b381afbc752dfc77e48ba7a99ccc3", h.EtcdClusterToken)
	_, err = p.SetEtcdClusterToken(s, "../x")
	assert.ErrorIs(t, err, ErrInvalid)

	_, err = p.Override(s, map[string]interface{}{"CoreOSVersion": "1122.2.0"})
	require.NoError(t, err)
	h, err = p.Override(s, map[string]interface{}{"docker_version": "1.12"})
	require.NoError(t, err)
	assert.Equal(t, map[string]interface{}{"CoreOSVersion": "1122.2.0", "docker_version": "1.12"}, h.Overrides, "overrides merge")
	_, err = p.Override(s, nil)
	assert.ErrorIs(t, err, ErrInvalid)

	msgs := st.Messages()
	for _, m := range []string{MsgMetadata, MsgProviderID, MsgIPMIAddr, MsgCabinet, MsgEtcdToken,
		"updated host overrides: CoreOSVersion", "updated host overrides: docker_version"} {
		assert.Contains(t, msgs, s+": "+m)
	}
	assert.Contains(t, msgs, "Set default etcd cluster to '41f07d10ab835b22071a32d5c1b75a6d'")
}

func TestForbiddenTransitionsLeaveRecordUntouched(t *testing.T) {
	p, st := newTest(t, "192.168.2.99")
	_, _, err := p.Register("x1")
	require.NoError(t, err)
	before := len(st.Messages())
	_, err = p.SetInstalled("x1")
	require.True(t, errors.Is(err, host.ErrForbiddenTransition))
	assert.Len(t, st.Messages(), before)
	h, _ := st.Get("x1")
	assert.Equal(t, host.Configured, h.State)
}

func TestValuesRenderedIntoConfigsAreChecked(t *testing.T) {
	p, st := newTest(t, "192.168.2.99")
	_, err := p.ReportFacts("m1", Facts{ConnectedNIC: "eth0\x07"})
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = p.ReportFacts("m1", Facts{ConnectedNIC: "a-very-long-interface-name"})
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = st.Get("m1")
	assert.ErrorIs(t, err, store.ErrNotFound, "refused facts create no record")
	h, err := p.ReportFacts("m1", Facts{ConnectedNIC: "enp0s3"})
	require.NoError(t, err)
	assert.Equal(t, "enp0s3", h.ConnectedNIC)

	_, err = p.SetMetadata("m1", []string{"role=\x00"})
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = p.SetProviderID("m1", "rack\n7")
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = p.Override("m1", map[string]interface{}{"k": []interface{}{"ok", "bad\x1b"}})
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = p.Override("m1", map[string]interface{}{"k": "\xff"})
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = p.Override("m1", map[string]interface{}{"k": "fine ünïcode"})
	assert.NoError(t, err)
}
