package main

import (
	"bytes"
	"context"
	"flag"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/client/clienttest"
	"mayu/pkg/host"
	"mayu/pkg/store"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// result is what one mayuctl run printed.
type result struct {
	stdout, stderr string
	code           int
}

// mayuctl runs the app in-process with the given arguments.
func mayuctl(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := run(ctx, append([]string{"mayuctl"}, args...), &out, &errOut)
	return result{out.String(), errOut.String(), code}
}

// fakeMayu is the fake admin API with fixture machines, and the global flags
// that reach it.
type fakeMayu struct {
	store *store.Memory
	fake  *clienttest.Server
	flags []string
}

// args prefixes the global flags that point mayuctl at the fake.
func (f fakeMayu) args(args ...string) []string {
	return append(append([]string{}, f.flags...), args...)
}

func startFake(t *testing.T, hosts ...host.Host) fakeMayu {
	t.Helper()
	mem := store.NewMemory()
	t.Cleanup(func() { _ = mem.Close() })
	for _, h := range hosts {
		h := h
		_, err := mem.Create(h.Serial, store.Step{Message: "host created", Apply: func(r *host.Host) error {
			*r = h.Clone()
			return nil
		}})
		require.NoError(t, err)
	}
	fake := clienttest.New(mem, func() time.Time { return bootTime })
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	return fakeMayu{store: mem, fake: fake,
		flags: []string{"--no-tls", "--host=" + u.Hostname(), "--port=" + u.Port(), "--token=" + clienttest.AdminToken}}
}

var bootTime = time.Date(2016, 8, 9, 15, 49, 2, 344687863, time.UTC)

// seedHosts are the three machines of the seed's last `mayuctl list`.
func seedHosts() []host.Host {
	var hosts []host.Host
	for i, s := range []string{"0800278e158a-0", "0800278e158b-1", "0800278e158c-2"} {
		hosts = append(hosts, host.Host{
			Enabled:          true,
			Serial:           s,
			InternalAddr:     net.IPv4(192, 168, 2, byte(21+i)).To4(),
			Profile:          "core-services",
			FleetMetadata:    host.FleetMeta{"role-core=true"},
			EtcdClusterToken: "416b381afbc752dfc77e48ba7a99ccc3",
			CoreOSVersion:    "1068.6.0",
			State:            host.Running,
			LastBoot:         time.Date(2016, 8, 9, 15, 49, []int{2, 6, 11}[i], 123456789, time.UTC),
		})
	}
	return hosts
}

// fixtureHosts cover every kind of cell: a machine that registered a
// moment ago (no address, no profile yet), one fully described, one with
// several tags and an IPMI address, and IPs that sort differently as text
// than as numbers.
func fixtureHosts() []host.Host {
	return []host.Host{
		{
			Enabled: true, Serial: "0800278e158a-0", MacAddresses: []string{"08:00:27:8e:15:8a", "08:00:27:8e:15:8b"},
			InternalAddr: net.ParseIP("192.168.2.21").To4(), Cabinet: 1, MachineOnCabinet: 3,
			Hostname: "0103a1b2c3d4e5f6", MachineID: "0103a1b2c3d4e5f60718293a4b5c6d7e", ConnectedNIC: "eth0",
			FleetMetadata: host.FleetMeta{"role-core=true"}, Profile: "core-services",
			EtcdClusterToken: "41f07d10ab835b22071a32d5c1b75a6d", State: host.Running, LastBoot: bootTime,
			CoreOSVersion: "1068.6.0", MayuVersion: "0.11.1", DockerVersion: "1.10.3", FleetVersion: "v0.11.7",
			EtcdVersion: "v2.2.5-gs-1", RktVersion: "1.3.0", K8sVersion: "1.3.4", YochuVersion: "0.19.1",
		},
		{
			Enabled: true, Serial: "s-0042", InternalAddr: net.ParseIP("192.168.2.100").To4(),
			IPMIAddr: net.ParseIP("10.0.0.17").To4(), ProviderId: "rack-7/u12",
			FleetMetadata: host.FleetMeta{"role-worker=true", "quobyte=true"}, FleetDisableEngine: true,
			Profile: "default", State: host.Installing, CoreOSVersion: "1122.2.0",
			MachineID: "00002a0b1c2d3e4f5061728394a5b6c7", Hostname: "00002a0b1c2d3e4f",
			Instance: "rack-7:4080", // served by one of several instances sharing an etcd store
		},
		{Enabled: true, Serial: "new-machine", State: host.Configured},
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create it")
	assert.Equal(t, string(want), got, "output differs from %s (go test -update rewrites it)", path)
}

func TestListGolden(t *testing.T) {
	tests := []struct {
		name  string
		hosts []host.Host
		args  []string
	}{
		{"list_default", fixtureHosts(), []string{"list"}},
		{"list_fields", fixtureHosts(), []string{"list", "--fields=serial,state,machineid,coreos"}},
		{"list_versions", fixtureHosts(), []string{"list", "--fields=serial,mayu,yochu,docker,etcd,fleet,rkt,k8s,cabinet,hostname"}},
		{"list_no_legend", fixtureHosts(), []string{"list", "--no-legend"}},
		{"list_no_legend_fields", fixtureHosts(), []string{"list", "--no-legend", "--fields=ip,serial"}},
		{"list_instance", fixtureHosts(), []string{"list", "--fields=serial,state,instance"}},
		{"list_empty", nil, []string{"list"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, tc.hosts...)
			r := mayuctl(t, f.args(tc.args...)...)
			require.Equal(t, 0, r.code, r.stderr)
			assert.Empty(t, r.stderr)
			golden(t, tc.name, r.stdout)
			for _, line := range strings.Split(r.stdout, "\n") {
				assert.Equal(t, strings.TrimRight(line, " "), line, "trailing blanks")
			}
		})
	}
}

func TestStatusGolden(t *testing.T) {
	tests := []struct{ name, serial string }{
		{"status_running", "0800278e158a-0"},
		{"status_installing", "S-0042"}, // serials are case-insensitive
		{"status_new", "new-machine"},
	}
	f := startFake(t, fixtureHosts()...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mayuctl(t, f.args("status", tc.serial)...)
			require.Equal(t, 0, r.code, r.stderr)
			assert.Empty(t, r.stderr)
			golden(t, tc.name, r.stdout)
		})
	}
}

// The seed's own output, character for character (not a golden file: it
// must never be regenerated).
const seedList = `IP            SERIAL          PROFILE        IPMIADDR  PROVIDERID  ETCDTOKEN                         METADATA        COREOS    STATE      LASTBOOT
192.168.2.21  0800278e158a-0  core-services  -         -           416b381afbc752dfc77e48ba7a99ccc3  role-core=true  1068.6.0  "running"  2016-08-09 15:49:02
192.168.2.22  0800278e158b-1  core-services  -         -           416b381afbc752dfc77e48ba7a99ccc3  role-core=true  1068.6.0  "running"  2016-08-09 15:49:06
192.168.2.23  0800278e158c-2  core-services  -         -           416b381afbc752dfc77e48ba7a99ccc3  role-core=true  1068.6.0  "running"  2016-08-09 15:49:11
`

const seedEmptyList = "IP  SERIAL  PROFILE  IPMIADDR  PROVIDERID  ETCDTOKEN  METADATA  COREOS  STATE  LASTBOOT\n"

func TestListMatchesSeed(t *testing.T) {
	r := mayuctl(t, startFake(t).args("list")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, seedEmptyList, r.stdout)

	f := startFake(t, seedHosts()...)
	r = mayuctl(t, f.args("list")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, seedList, r.stdout)

	// The seed's status excerpt.
	r = mayuctl(t, f.args("status", "0800278e158a-0")...)
	require.Equal(t, 0, r.code, r.stderr)
	for _, line := range []string{
		"Serial:              0800278e158a-0\n",
		"IP:                  192.168.2.21\n",
		"State:               \"running\"\n",
	} {
		assert.Contains(t, r.stdout, line)
	}
	assert.True(t, strings.HasPrefix(r.stdout, "Serial:              0800278e158a-0\nIP:                  192.168.2.21\n"))
}

func TestListSortsAsText(t *testing.T) {
	// "192.168.2.100" < "192.168.2.21" < "192.168.2.9" as text, and a
	// machine without an address ("-") comes first.
	var hosts []host.Host
	for _, h := range []struct{ serial, ip string }{{"a", "192.168.2.9"}, {"b", "192.168.2.21"}, {"c", "192.168.2.100"}, {"d", ""}} {
		hh := host.Host{Serial: h.serial, State: host.Configured}
		if h.ip != "" {
			hh.InternalAddr = net.ParseIP(h.ip).To4()
		}
		hosts = append(hosts, hh)
	}
	f := startFake(t, hosts...)
	r := mayuctl(t, f.args("list", "--no-legend", "--fields=ip,serial")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "-              d\n192.168.2.100  c\n192.168.2.21   b\n192.168.2.9    a\n", r.stdout)
}

func TestBadInput(t *testing.T) {
	f := startFake(t, fixtureHosts()...)

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedPort := closed.Addr().(*net.TCPAddr).Port
	require.NoError(t, closed.Close())

	dir := t.TempDir()
	noSerial := filepath.Join(dir, "mayu-env")
	require.NoError(t, os.WriteFile(noSerial, []byte("MAYU_VERSION=0.11.1\n"), 0o644))

	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string // the whole single line, or its start when prefix is set
		prefix bool
	}{
		{"unknown field", f.args("list", "--fields=ip,bogus"), 2,
			`mayuctl: list: unknown field "bogus" (valid fields: ip,serial,profile,ipmiaddr,providerid,etcdtoken,metadata,coreos,state,lastboot,machineid,hostname,cabinet,mayu,yochu,docker,etcd,fleet,rkt,k8s,instance)`, false},
		{"empty fields", f.args("list", "--fields="), 2, "mayuctl: list: --fields is empty", true},
		{"list with argument", f.args("list", "extra"), 2,
			"mayuctl: list: takes no arguments, got 1 (see 'mayuctl list --help')", false},
		{"unknown key", f.args("set", "0800278e158a-0", "colour", "blue"), 2,
			`mayuctl: set: unknown key "colour" (want one of metadata, providerid, ipmiaddr, cabinet, state, etcdtoken, macs)`, false},
		{"set too few arguments", f.args("set", "0800278e158a-0", "state"), 2,
			"mayuctl: set: want 3 arguments <serial> <key> <value>, got 2 (see 'mayuctl set --help')", false},
		{"set too many arguments", f.args("set", "0800278e158a-0", "state", "configured", "now"), 2,
			"mayuctl: set: want 3 arguments <serial> <key> <value>, got 4 (see 'mayuctl set --help')", false},
		{"nonexistent state", f.args("set", "0800278e158a-0", "state", "sleeping"), 2,
			`mayuctl: set: invalid state "sleeping" (want one of unknown, configured, installing, installed, running)`, false},
		{"unparsable address", f.args("set", "0800278e158a-0", "ipmiaddr", "10.0.0.300"), 2,
			`mayuctl: set: invalid IPMI address "10.0.0.300" (want an IP address such as 10.0.0.17)`, false},
		{"negative cabinet", f.args("set", "0800278e158a-0", "cabinet", "-1"), 2,
			`mayuctl: set: invalid cabinet "-1" (want a number, 0 or more)`, false},
		{"word cabinet", f.args("set", "0800278e158a-0", "cabinet", "four"), 2,
			`mayuctl: set: invalid cabinet "four" (want a number, 0 or more)`, false},
		{"invalid serial", f.args("set", "../../etc", "cabinet", "1"), 2,
			`mayuctl: set ../../etc cabinet: invalid argument: host: invalid serial "../../etc": must start with a letter or digit`, false},
		{"unknown serial set", f.args("set", "unknown-1", "cabinet", "1"), 1,
			"mayuctl: set unknown-1 cabinet: mayu answered 404 Not Found: store: host not found: unknown-1", false},
		{"unknown serial override", f.args("override", "unknown-1", "yochu_version", "1"), 1,
			"mayuctl: override unknown-1 yochu_version: mayu answered 404 Not Found: store: host not found: unknown-1", false},
		{"unknown serial mark-fresh", f.args("mark-fresh", "unknown-1"), 1,
			"mayuctl: mark-fresh unknown-1: mayu answered 404 Not Found: store: host not found: unknown-1", false},
		{"unknown serial status", f.args("status", "unknown-1"), 1,
			`mayuctl: status unknown-1: host not found: "unknown-1"`, false},
		{"forbidden transition", f.args("set", "new-machine", "state", "running"), 1,
			"mayuctl: set new-machine state: mayu answered 409 Conflict: host: forbidden state transition from configured to running: " +
				`a machine reports running itself when it boots (boot_complete); Mayu 0.11's "set state running" meant reinstall with the data disk wiped, which is mayuctl mark-fresh`, false},
		{"status without serial", f.args("status"), 2,
			"mayuctl: status: want 1 argument <serial>, got 0 (see 'mayuctl status --help')", false},
		{"override too few arguments", f.args("override", "0800278e158a-0", "yochu_version"), 2,
			"mayuctl: override: want 3 arguments <serial> <property> <value>, got 2 (see 'mayuctl override --help')", false},
		{"unreachable server", []string{"--no-tls", "--host=127.0.0.1", "--port=" + strconv.Itoa(closedPort), "list"}, 1,
			"mayuctl: list: cannot reach mayu at http://127.0.0.1:" + strconv.Itoa(closedPort) + ": dial tcp 127.0.0.1:" + strconv.Itoa(closedPort) + ": connect: connection refused", false},
		{"TLS to a plain HTTP mayu", []string{"--host=127.0.0.1", "--port=" + f.port(), "list"}, 1,
			"mayuctl: list: cannot reach mayu at https://127.0.0.1:" + f.port() + ":", true},
		{"port out of range", []string{"--no-tls", "--port=70000", "list"}, 2,
			"mayuctl: invalid argument: port 70000: want 1-65535", false},
		{"port not a number", []string{"--port=http", "list"}, 2,
			`mayuctl: invalid value "http" for flag -port: parse error (see 'mayuctl --help')`, false},
		{"unknown command", []string{"lsit"}, 2, `mayuctl: unknown command "lsit" (see 'mayuctl --help')`, false},
		{"unknown flag", []string{"list", "--colour"}, 2,
			"mayuctl: flag provided but not defined: -colour (see 'mayuctl list --help')", false},
		{"missing CA file", []string{"--ca-file=/nonexistent/ca.pem", "list"}, 2,
			"mayuctl: invalid argument: CA file: open /nonexistent/ca.pem: no such file or directory", false},
		{"boot-complete without mayu-env", f.args("boot-complete", "--mayu-env="+filepath.Join(dir, "absent")), 1,
			"mayuctl: boot-complete: open " + filepath.Join(dir, "absent") + ": no such file or directory", false},
		{"boot-complete without SERIAL", f.args("boot-complete", "--mayu-env="+noSerial), 1,
			"mayuctl: boot-complete: no SERIAL= in " + noSerial, false},
		{"boot-complete with argument", f.args("boot-complete", "x"), 2,
			"mayuctl: boot-complete: takes no arguments, got 1 (see 'mayuctl boot-complete --help')", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.store.Messages())
			r := mayuctl(t, tc.args...)
			assert.Equal(t, tc.code, r.code)
			assert.Empty(t, r.stdout, "nothing on stdout")
			require.True(t, strings.HasSuffix(r.stderr, "\n"), "stderr %q", r.stderr)
			assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "exactly one line on stderr: %q", r.stderr)
			line := strings.TrimSuffix(r.stderr, "\n")
			if tc.prefix {
				assert.True(t, strings.HasPrefix(line, tc.stderr), "stderr %q does not start with %q", line, tc.stderr)
			} else {
				assert.Equal(t, tc.stderr, line)
			}
			assert.Len(t, f.store.Messages(), before, "a failed command changed nothing")
		})
	}
}

func TestTLSHint(t *testing.T) {
	f := startFake(t)
	r := mayuctl(t, "--host=127.0.0.1", "--port="+f.port(), "list")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "(mayu runs without TLS: add --no-tls)")
}

func TestSetCommands(t *testing.T) {
	const s = "0800278e158a-0"
	tests := []struct {
		name    string
		args    []string
		body    string
		message string
		check   func(t *testing.T, h host.Host)
	}{
		{"metadata", []string{"set", s, "metadata", "role-core=true, rack=7,"},
			`{"FleetMetadata":["role-core=true","rack=7"]}`, "updated host metadata",
			func(t *testing.T, h host.Host) {
				assert.Equal(t, host.FleetMeta{"role-core=true", "rack=7"}, h.FleetMetadata)
			}},
		{"providerid", []string{"set", s, "providerid", "rack-7/u12"},
			`{"ProviderId":"rack-7/u12"}`, "updated host provider id",
			func(t *testing.T, h host.Host) { assert.Equal(t, "rack-7/u12", h.ProviderId) }},
		{"ipmiaddr", []string{"set", s, "ipmiaddr", "10.0.0.17"},
			`{"IPMIAddr":"10.0.0.17"}`, "updated host ipmi address",
			func(t *testing.T, h host.Host) { assert.Equal(t, "10.0.0.17", h.IPMIAddr.String()) }},
		{"cabinet", []string{"set", s, "cabinet", "4"},
			`{"Cabinet":4}`, "updated host cabinet",
			func(t *testing.T, h host.Host) { assert.EqualValues(t, 4, h.Cabinet) }},
		{"state", []string{"set", s, "state", "configured"},
			`{"State":"configured"}`, "updated host state",
			func(t *testing.T, h host.Host) { assert.Equal(t, host.Configured, h.State) }},
		{"state with quotes and capitals, as list prints it", []string{"set", s, "STATE", `"Configured"`},
			`{"State":"configured"}`, "updated host state",
			func(t *testing.T, h host.Host) { assert.Equal(t, host.Configured, h.State) }},
		{"etcdtoken", []string{"set", s, "etcdtoken", "416b381afbc752dfc77e48ba7a99ccc3"},
			`{"EtcdClusterToken":"416b381afbc752dfc77e48ba7a99ccc3"}`, "updated host etcd cluster token",
			func(t *testing.T, h host.Host) {
				assert.Equal(t, "416b381afbc752dfc77e48ba7a99ccc3", h.EtcdClusterToken)
			}},
		{"override", []string{"override", s, "CoreOSVersion", "1122.2.0"},
			`{"Overrides":{"CoreOSVersion":"1122.2.0"}}`, "updated host overrides: CoreOSVersion",
			func(t *testing.T, h host.Host) { assert.Equal(t, "1122.2.0", h.Overrides["CoreOSVersion"]) }},
		{"mark-fresh", []string{"mark-fresh", s}, `{}`, "host flagged as fresh",
			func(t *testing.T, h host.Host) {
				assert.Equal(t, host.Configured, h.State)
				assert.False(t, h.KeepDiskData)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, fixtureHosts()...)
			r := mayuctl(t, f.args(tc.args...)...)
			require.Equal(t, 0, r.code, r.stderr)
			assert.Empty(t, r.stdout)
			assert.Empty(t, r.stderr)
			reqs := f.fake.Requests()
			require.Len(t, reqs, 1)
			assert.JSONEq(t, tc.body, reqs[0].Body)
			msgs := f.store.Messages()
			assert.Equal(t, s+": "+tc.message+"\n\nPrincipal: admin:operator\nRemote-Address: 127.0.0.1", msgs[len(msgs)-1],
				"0.11's subject, and who asked")
			h, err := f.store.Get(s)
			require.NoError(t, err)
			tc.check(t, h)
		})
	}
}

func TestBootComplete(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	mayuEnv := write("mayu-env", "SERIAL=S-0042\nMAYU_VERSION=0.11.1\n")
	osRelease := write("os-release", `NAME="Container Linux by CoreOS"
ID=coreos
VERSION=1068.6.0
VERSION_ID=1068.6.0
BUILD_ID=2016-07-12-1826
PRETTY_NAME="Container Linux by CoreOS 1068.6.0 (MoreOS)"
`)
	yochuEnv := write("yochu-env", `# written by yochu
export DOCKER_VERSION=1.10.3
ETCD_VERSION="v2.2.5-gs-1"
FLEET_VERSION='v0.11.7'
YOCHU_VERSION=0.19.1
RKT_VERSION=1.3.0
K8S_VERSION=1.3.4
`)
	files := []string{"--mayu-env=" + mayuEnv, "--os-release=" + osRelease, "--yochu-env=" + yochuEnv}

	tests := []struct {
		name string
		args []string
		body string
	}{
		{"with versions", append([]string{"boot-complete", "--update-versions"}, files...),
			`{"CoreOSVersion":"1068.6.0","MayuVersion":"0.11.1","DockerVersion":"1.10.3","FleetVersion":"v0.11.7",
			  "EtcdVersion":"v2.2.5-gs-1","RktVersion":"1.3.0","K8sVersion":"1.3.4","YochuVersion":"0.19.1"}`},
		{"without versions", append([]string{"boot-complete"}, files...), `{}`},
		{"no yochu installed", []string{"boot-complete", "--update-versions", "--mayu-env=" + mayuEnv,
			"--os-release=" + osRelease, "--yochu-env=" + filepath.Join(dir, "absent")},
			`{"CoreOSVersion":"1068.6.0","MayuVersion":"0.11.1"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, fixtureHosts()...)
			_, err := f.store.Update("s-0042", store.Step{Message: "installed", Apply: func(h *host.Host) error {
				h.State = host.Installed
				return nil
			}})
			require.NoError(t, err)
			r := mayuctl(t, f.args(tc.args...)...)
			require.Equal(t, 0, r.code, r.stderr)
			assert.Empty(t, r.stdout)
			reqs := f.fake.Requests()
			require.Len(t, reqs, 1)
			assert.Equal(t, "/admin/host/s-0042/boot_complete", reqs[0].Path)
			assert.JSONEq(t, tc.body, reqs[0].Body)
			h, err := f.store.Get("s-0042")
			require.NoError(t, err)
			assert.Equal(t, host.Running, h.State)
			assert.True(t, bootTime.Equal(h.LastBoot))
		})
	}

	t.Run("paths from the environment", func(t *testing.T) {
		f := startFake(t, fixtureHosts()...)
		t.Setenv("MAYU_ENV_FILE", mayuEnv)
		t.Setenv("MAYU_OS_RELEASE_FILE", osRelease)
		t.Setenv("MAYU_YOCHU_ENV_FILE", yochuEnv)
		_, err := f.store.Update("s-0042", store.Step{Message: "installed", Apply: func(h *host.Host) error {
			h.State = host.Installed
			return nil
		}})
		require.NoError(t, err)
		r := mayuctl(t, f.args("boot-complete", "--update-versions")...)
		require.Equal(t, 0, r.code, r.stderr)
		h, err := f.store.Get("s-0042")
		require.NoError(t, err)
		assert.Equal(t, "1.3.4", h.K8sVersion)
	})
}

func TestEnvironmentVariables(t *testing.T) {
	f := startFake(t, seedHosts()...)
	u, port := "127.0.0.1", f.port()
	t.Setenv("MAYU_HOST", u)
	t.Setenv("MAYU_PORT", port)
	t.Setenv("MAYU_NO_TLS", "true")
	t.Setenv("MAYU_TOKEN", clienttest.AdminToken)
	r := mayuctl(t, "list")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, seedList, r.stdout)

	// A flag beats the environment.
	r = mayuctl(t, "--port=1", "list")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "http://127.0.0.1:1")
}

func TestVerboseLogsOnStderrOnly(t *testing.T) {
	f := startFake(t, seedHosts()...)
	for _, flag := range []string{"-v", "--verbose", "-d", "--debug"} {
		r := mayuctl(t, append([]string{flag}, f.args("list")...)...)
		require.Equal(t, 0, r.code, r.stderr)
		assert.Equal(t, seedList, r.stdout, flag)
		assert.Contains(t, r.stderr, "url=http://127.0.0.1:"+f.port()+"/admin/hosts", flag)
		assert.Contains(t, r.stderr, "status=200", flag)
	}
	r := mayuctl(t, f.args("list")...)
	assert.Empty(t, r.stderr, "quiet by default")
}

func TestHelp(t *testing.T) {
	for _, cmd := range []string{"version", "list", "status", "set", "override", "mark-fresh", "boot-complete", "events", "history"} {
		for _, args := range [][]string{{cmd, "--help"}, {cmd, "-h"}, {"help", cmd}} {
			r := mayuctl(t, args...)
			assert.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
			assert.Contains(t, r.stdout, "USAGE:\n   mayuctl "+cmd, args)
			if cmd != "version" {
				assert.Contains(t, r.stdout, "Examples:", args)
			}
			assert.Empty(t, r.stderr, args)
		}
	}
	for _, args := range [][]string{{}, {"--help"}, {"help"}} {
		r := mayuctl(t, args...)
		assert.Equal(t, 0, r.code, args)
		assert.Contains(t, r.stdout, "Examples:", args)
		assert.Contains(t, r.stdout, "[$MAYU_HOST]", args)
	}
}

func TestVersion(t *testing.T) {
	r := mayuctl(t, "version")
	assert.Equal(t, 0, r.code)
	assert.Equal(t, "mayuctl dev (commit unknown)\n", r.stdout)
}

func (f fakeMayu) port() string {
	for _, a := range f.flags {
		if p, ok := strings.CutPrefix(a, "--port="); ok {
			return p
		}
	}
	return ""
}
