package main

// Process test: the real mayu daemon on loopback with a temporary cluster
// directory, machines registered over HTTP by the real host-info helper
// (with fake sysfs trees), then the real mayuctl binary walking list,
// status, set, override, mark-fresh and boot-complete, with the git audit
// trail checked at the end.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/client"
	"mayu/pkg/host"
	"mayu/pkg/hostinfo/hostinfotest"

	"mayu/pkg/proctest"
)

var daemonConfig = proctest.Config(proctest.LoopConfig{
	IPStart: "10.9.0.21", IPEnd: "10.9.0.99",
	Profiles: []proctest.Profile{
		{Name: "core-services", Quantity: 2, Tags: []string{"role-core=true"}},
		{Name: "default", Tags: []string{"role-worker=true"}},
	},
	SSHKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMayuctlProcessTest test@example",
})

// mayuDaemon is one running mayu.
type mayuDaemon struct{ *proctest.Daemon }

// startMayu runs the daemon on a free loopback port without dnsmasq, and
// waits (bounded) until it answers. With tlsArgs it serves HTTPS with a
// certificate that pool trusts, else plain HTTP. It is stopped by PID when
// the test ends.
func startMayu(t *testing.T, bin proctest.Binaries, dir string, pool *x509.CertPool, tlsArgs ...string) *mayuDaemon {
	t.Helper()
	extra := tlsArgs
	if len(tlsArgs) == 0 {
		extra = []string{"--no-tls"}
	}
	d := proctest.StartMayu(t, bin.Mayu, proctest.Flags{Dir: dir, ConfigText: daemonConfig}, extra...)
	if pool != nil {
		d.Client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	d.WaitReady()
	return &mayuDaemon{d}
}

// ctl runs the real mayuctl against d, with d's token file.
func (d *mayuDaemon) ctl(t *testing.T, bin proctest.Binaries, args ...string) result {
	t.Helper()
	all := append([]string{"--no-tls", "--host=127.0.0.1", "--port=" + strconv.Itoa(d.Flags.Port), "--timeout=20s",
		"--token-file=" + d.Flags.TokenFile}, args...)
	return runBinary(t, bin.Mayuctl, nil, all...)
}

// runBinary runs a built binary to completion.
func runBinary(t *testing.T, path string, env []string, args ...string) result {
	t.Helper()
	r := proctest.Run(t, path, env, args...)
	return result{r.Stdout, r.Stderr, r.Code}
}

// register does what a PXE-booted machine does: fetch its first-stage
// script (which creates its record), then run the host-info helper, which
// posts its facts and gets its final cloud-config.
func (d *mayuDaemon) register(t *testing.T, bin proctest.Binaries, dmiSerial string, macs ...string) {
	t.Helper()
	serial := strings.ReplaceAll(dmiSerial, " ", "-")
	code, body := d.Do(http.MethodGet, "/first-stage-script/"+serial, "")
	require.Equal(t, http.StatusOK, code, body)

	sys := hostinfotest.System{
		DMI:   map[string]string{"product_serial": dmiSerial + "\n", "chassis_serial": "To be filled by O.E.M.\n"},
		NICs:  []hostinfotest.NIC{{Name: "lo", Address: "00:00:00:00:00:00", Virtual: true}},
		Route: hostinfotest.RouteHeader + "eth0\t00000000\t0100090A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
	}
	for i, m := range macs {
		sys.NICs = append(sys.NICs, hostinfotest.NIC{Name: "eth" + strconv.Itoa(i), Address: m})
	}
	sysRoot, procRoot := hostinfotest.Write(t, t.TempDir(), sys)
	r := runBinary(t, bin.Infopusher, nil, "-post-url="+d.Base+"/final-cloud-config.yaml",
		"-sysfs-root="+sysRoot, "-procfs-root="+procRoot, "-ipmitool=-")
	require.Equal(t, 0, r.code, "infopusher: %s", r.stderr)
	require.True(t, strings.HasPrefix(r.stdout, "#cloud-config"), "the helper prints the final cloud-config, got %q", r.stdout)
}

func TestProcessMayuctlAgainstRealMayu(t *testing.T) {
	bin := proctest.Build(t)
	proctest.RequireCommand(t, "git", "git")
	d := startMayu(t, bin, t.TempDir(), nil)

	// An empty cluster lists as the seed's first `mayuctl list` does.
	r := d.ctl(t, bin, "list")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, seedEmptyList, r.stdout)

	serials := []string{"0800278e158a-0", "0800278e158b-1", "0800278e158c-2"}
	d.register(t, bin, "0800278e158a 0", "08:00:27:8E:15:8A", "08:00:27:8e:15:9a")
	d.register(t, bin, "0800278e158b 1", "08:00:27:8e:15:8b")
	d.register(t, bin, "0800278e158c 2", "08:00:27:8e:15:8c")

	var cluster struct {
		Config struct{ DefaultEtcdClusterToken string }
	}
	b, err := os.ReadFile(filepath.Join(d.Cluster, "cluster.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &cluster))
	token := cluster.Config.DefaultEtcdClusterToken
	require.Len(t, token, 32)
	hosts := d.Hosts()
	coreos := hosts[serials[0]].CoreOSVersion

	// While installing: the seed's watch output, our addresses.
	r = d.ctl(t, bin, "list")
	require.Equal(t, 0, r.code, r.stderr)
	want := alignColumns([][]string{
		{"IP", "SERIAL", "PROFILE", "IPMIADDR", "PROVIDERID", "ETCDTOKEN", "METADATA", "COREOS", "STATE", "LASTBOOT"},
		{"10.9.0.21", serials[0], "core-services", "-", "-", token, "role-core=true", coreos, `"installing"`, "0001-01-01 00:00:00"},
		{"10.9.0.22", serials[1], "core-services", "-", "-", token, "role-core=true", coreos, `"installing"`, "0001-01-01 00:00:00"},
		{"10.9.0.23", serials[2], "default", "-", "-", token, "role-worker=true", coreos, `"installing"`, "0001-01-01 00:00:00"},
	})
	assert.Equal(t, want, r.stdout)
	t.Logf("mayuctl list while installing:\n%s", r.stdout)

	// The first-stage script reports installed; the machine boots and runs
	// boot-complete with its env files.
	c, err := client.New(client.Config{BaseURL: d.Base})
	require.NoError(t, err)
	for _, s := range serials {
		require.NoError(t, c.SetInstalled(context.Background(), s))
	}
	etc := t.TempDir()
	for i, s := range serials {
		mayuEnv := filepath.Join(etc, s+"-mayu-env")
		require.NoError(t, os.WriteFile(mayuEnv, []byte("SERIAL="+s+"\nMAYU_VERSION=0.11.1\n"), 0o644))
		args := []string{"boot-complete", "--mayu-env=" + mayuEnv, "--os-release=" + filepath.Join(etc, "absent")}
		if i == 0 {
			osRelease := filepath.Join(etc, "os-release")
			require.NoError(t, os.WriteFile(osRelease, []byte("ID=coreos\nVERSION=1068.6.0\n"), 0o644))
			yochuEnv := filepath.Join(etc, "yochu-env")
			require.NoError(t, os.WriteFile(yochuEnv, []byte("DOCKER_VERSION=1.10.3\nETCD_VERSION=v2.2.5-gs-1\nFLEET_VERSION=v0.11.7\nYOCHU_VERSION=0.19.1\nRKT_VERSION=1.3.0\nK8S_VERSION=1.3.4\n"), 0o644))
			args = []string{"boot-complete", "--update-versions", "--mayu-env=" + mayuEnv, "--os-release=" + osRelease, "--yochu-env=" + yochuEnv}
		}
		r = d.ctl(t, bin, args...)
		require.Equal(t, 0, r.code, r.stderr)
		assert.Empty(t, r.stdout+r.stderr)
	}
	hosts = d.Hosts()
	h0 := hosts[serials[0]]
	assert.Equal(t, host.Running, h0.State)
	assert.WithinDuration(t, time.Now(), h0.LastBoot, 5*time.Minute)
	assert.Equal(t, "1.3.4", h0.K8sVersion)
	assert.Equal(t, "0.19.1", h0.YochuVersion)

	r = d.ctl(t, bin, "list")
	require.Equal(t, 0, r.code, r.stderr)
	rows := [][]string{{"IP", "SERIAL", "PROFILE", "IPMIADDR", "PROVIDERID", "ETCDTOKEN", "METADATA", "COREOS", "STATE", "LASTBOOT"}}
	for i, s := range serials {
		h := hosts[s]
		rows = append(rows, []string{h.InternalAddr.String(), s, h.Profile, "-", "-", token,
			[]string{"role-core=true", "role-core=true", "role-worker=true"}[i], h.CoreOSVersion, `"running"`,
			h.LastBoot.Format("2006-01-02 15:04:05")})
	}
	assert.Equal(t, alignColumns(rows), r.stdout)
	assert.Equal(t, "1068.6.0", hosts[serials[0]].CoreOSVersion)
	t.Logf("mayuctl list once running:\n%s", r.stdout)

	r = d.ctl(t, bin, "status", strings.ToUpper(serials[0]))
	require.Equal(t, 0, r.code, r.stderr)
	t.Logf("mayuctl status %s:\n%s", serials[0], r.stdout)
	wantStatus := []string{
		"Serial:              " + serials[0],
		"IP:                  10.9.0.21",
		"IPMI:                <nil>",
		"Provider ID:         ",
		"Macs:                08:00:27:8e:15:8a, 08:00:27:8e:15:9a",
		"Cabinet:             0",
		"Machine on Cabinet:  0",
		"Hostname:            " + h0.Hostname,
		"MachineID:           " + h0.MachineID,
		"ConnectedNIC:        eth0",
		"Profile:             core-services",
		"DisableEngine:       false",
		`State:               "running"`,
		"EtcdToken:           " + token,
		"Metadata:            role-core=true",
		"CoreOS:              1068.6.0",
		"Mayu:                0.11.1",
		"Yochu:               0.19.1",
		"Docker:              1.10.3",
		"Etcd:                v2.2.5-gs-1",
		"Fleet:               v0.11.7",
		"Rkt:                 1.3.0",
		"K8s:                 1.3.4",
		"LastBoot:            " + h0.LastBoot.String(),
		"Enabled:             true",
	}
	assert.Equal(t, strings.Join(wantStatus, "\n")+"\n", r.stdout)
	assert.Len(t, h0.MachineID, 32)

	// The operator's changes.
	s0 := serials[0]
	for _, args := range [][]string{
		{"set", s0, "metadata", "role-core=true,rack=7"},
		{"set", s0, "providerid", "rack-7/u12"},
		{"set", s0, "ipmiaddr", "10.9.1.17"},
		{"set", s0, "cabinet", "4"},
		{"set", s0, "etcdtoken", "416b381afbc752dfc77e48ba7a99ccc3"},
		{"override", s0, "CoreOSVersion", "1122.2.0"},
		{"set", s0, "state", "configured"},
		{"mark-fresh", serials[1]},
	} {
		r = d.ctl(t, bin, args...)
		require.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
		assert.Empty(t, r.stdout+r.stderr, args)
	}
	hosts = d.Hosts()
	h0 = hosts[s0]
	assert.Equal(t, host.FleetMeta{"role-core=true", "rack=7"}, h0.FleetMetadata)
	assert.Equal(t, "rack-7/u12", h0.ProviderId)
	assert.Equal(t, "10.9.1.17", h0.IPMIAddr.String())
	assert.EqualValues(t, 4, h0.Cabinet)
	assert.Equal(t, "416b381afbc752dfc77e48ba7a99ccc3", h0.EtcdClusterToken)
	assert.Equal(t, "1122.2.0", h0.Overrides["CoreOSVersion"])
	assert.Equal(t, host.Configured, h0.State)
	assert.True(t, h0.KeepDiskData)
	assert.Equal(t, host.Configured, hosts[serials[1]].State)
	assert.False(t, hosts[serials[1]].KeepDiskData)

	r = d.ctl(t, bin, "list", "--fields=ip,serial,ipmiaddr,providerid,metadata,state")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, alignColumns([][]string{
		{"IP", "SERIAL", "IPMIADDR", "PROVIDERID", "METADATA", "STATE"},
		{"10.9.0.21", s0, "10.9.1.17", "rack-7/u12", "role-core=true,rack=7", `"configured"`},
		{"10.9.0.22", serials[1], "-", "-", "role-core=true", `"configured"`},
		{"10.9.0.23", serials[2], "-", "-", "role-worker=true", `"running"`},
	}), r.stdout)
	t.Logf("mayuctl list --fields=... after the changes:\n%s", r.stdout)

	// Failures the real daemon reports, one line each.
	for _, tc := range []struct {
		args   []string
		code   int
		prefix string
	}{
		{[]string{"status", "nope-1"}, 1, `mayuctl: status nope-1: host not found: "nope-1"`},
		{[]string{"set", "nope-1", "cabinet", "1"}, 1, "mayuctl: set nope-1 cabinet: mayu answered 404 Not Found"},
		{[]string{"set", s0, "state", "running"}, 1, "mayuctl: set " + s0 + " state: mayu answered 409 Conflict"},
		{[]string{"set", s0, "state", "sleeping"}, 2, `mayuctl: set: invalid state "sleeping"`},
	} {
		r = d.ctl(t, bin, tc.args...)
		assert.Equal(t, tc.code, r.code, tc.args)
		assert.Empty(t, r.stdout, tc.args)
		assert.True(t, strings.HasPrefix(r.stderr, tc.prefix), "%v: stderr %q", tc.args, r.stderr)
		assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "%v: one line: %q", tc.args, r.stderr)
		t.Logf("%v -> exit %d: %s", tc.args, r.code, strings.TrimSpace(r.stderr))
	}

	// The audit trail: every change above is a commit by "mayu commiter".
	log := proctest.Git(t, d.Cluster, "log", "--reverse", "--format=%an|%s")
	var mine []string
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		author, msg, _ := strings.Cut(line, "|")
		assert.Equal(t, "mayu commiter", author, line)
		if rest, ok := strings.CutPrefix(msg, s0+": "); ok {
			mine = append(mine, rest)
		}
	}
	wantInOrder := []string{
		"host created", "updated with predefined settings", "updated host InternalAddr",
		"updated host profile and metadata", "set default etcd discovery token", "collected host mac addresses", "updated host connected nic",
		"updated host state to installing", "updated state to installed", "updated state to running",
		"updated host metadata", "updated host provider id", "updated host ipmi address",
		"updated host cabinet", "updated host etcd cluster token", "updated host overrides: CoreOSVersion",
		"updated host state",
	}
	assertSubsequence(t, wantInOrder, mine)
	assert.Contains(t, log, serials[1]+": host flagged as fresh")
	t.Logf("git log of %s:\n%s", s0, strings.Join(mine, "\n"))
}

// assertSubsequence checks that want appears in got in this order (other
// messages may come between).
func assertSubsequence(t *testing.T, want, got []string) {
	t.Helper()
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	assert.Equal(t, len(want), i, "audit messages: want %q in this order within %q (missing from %q)", want, got, want[min(i, len(want)-1)])
}

func TestProcessTLS(t *testing.T) {
	bin := proctest.Build(t)
	dir := t.TempDir()
	cert, key, pool := proctest.SelfSignedCert(t, dir)
	d := startMayu(t, bin, dir, pool, "--tls-cert-file="+cert, "--tls-key-file="+key)
	hostFlags := []string{"--host=127.0.0.1", "--port=" + strconv.Itoa(d.Flags.Port), "--token-file=" + d.Flags.TokenFile}

	r := runBinary(t, bin.Mayuctl, nil, append(hostFlags, "list")...)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "certificate")
	assert.Contains(t, r.stderr, "(trust its CA with --ca-file, or use --insecure for a self-signed test setup)")
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)

	r = runBinary(t, bin.Mayuctl, nil, append(hostFlags, "--ca-file="+cert, "list")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, seedEmptyList, r.stdout)

	r = runBinary(t, bin.Mayuctl, []string{"MAYU_INSECURE=true"}, append(hostFlags, "list")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, seedEmptyList, r.stdout)

	// HTTP to the HTTPS port: mayu's reason, in one line.
	r = runBinary(t, bin.Mayuctl, nil, append(hostFlags, "--no-tls", "list")...)
	assert.Equal(t, 1, r.code)
	assert.True(t, strings.HasPrefix(r.stderr, "mayuctl: list: mayu answered 400 Bad Request"), r.stderr)
}
