package main

// Process tests: the real mayu binary, started on loopback with a temporary
// cluster directory, driven over HTTP the way machines and mayuctl drive it.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
)

var processConfig = proctest.Config(proctest.LoopConfig{
	IPStart: "10.9.0.21", IPEnd: "10.9.0.99",
	Profiles: []proctest.Profile{
		{Name: "core-services", Quantity: 3, Tags: []string{"role-core=true"}},
		{Name: "default", Tags: []string{"role-worker=true"}},
	},
})

// mayuBinary is the daemon built from the working tree, once per run.
func mayuBinary(t *testing.T) string { return proctest.Build(t).Mayu }

// loopFlags are the flags of a loopback daemon in dir using the
// repository's templates; its config.yaml is processConfig unless the test
// wrote one there first.
func loopFlags(dir string, port int) proctest.Flags {
	f := proctest.Flags{Dir: dir, Port: port}
	if _, err := os.Stat(filepath.Join(dir, "config.yaml")); errors.Is(err, fs.ErrNotExist) {
		f.ConfigText = processConfig
	}
	return f
}

// baseArgs are loopFlags as mayu's arguments.
func baseArgs(t *testing.T, dir string, port int) []string {
	_, args := proctest.MayuArgs(t, loopFlags(dir, port))
	return args
}

// startDaemon runs mayu with loopFlags on a free port; it is stopped
// (SIGTERM, then SIGKILL) when the test ends.
func startDaemon(t *testing.T, dir string, extra ...string) *proctest.Daemon {
	t.Helper()
	return proctest.StartMayu(t, mayuBinary(t), loopFlags(dir, 0), extra...)
}

func TestProcessLifeCycle(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--no-tls")
	d.WaitReady()

	serials := []string{"0800278e158a-0", "0800278e158b-1", "0800278e158c-2", "0800278e158d-3"}
	for i, s := range serials {
		code, body := d.Do("GET", "/first-stage-script/"+strings.ToUpper(s), "")
		require.Equal(t, 200, code, body)
		assert.Contains(t, body, d.Base+"/images/"+s+"/install_image.bin.bz2")
		facts := fmt.Sprintf(`{"Serial":%q,"NetDevs":[{"Name":"eth0","MacAddress":"08:00:27:8e:15:%02x"}],"IPMIAddress":"","ConnectedNIC":"eth0"}`, s, 0x8a+i)
		code, body = d.Do("POST", "/final-cloud-config.yaml", facts)
		require.Equal(t, 200, code, body)
		assert.True(t, strings.HasPrefix(body, "#cloud-config"), body)
		assert.Contains(t, body, d.Base+"/admin/host/"+s+"/boot_complete")
	}
	hosts := d.Hosts()
	require.Len(t, hosts, 4)
	for i, s := range serials[:3] {
		assert.Equal(t, "core-services", hosts[s].Profile)
		assert.Equal(t, fmt.Sprintf("10.9.0.%d", 21+i), hosts[s].InternalAddr.String())
		assert.Equal(t, host.Installing, hosts[s].State)
	}
	assert.Equal(t, "default", hosts[serials[3]].Profile)

	for _, s := range serials {
		code, body := d.Do("PUT", "/admin/host/"+s+"/set_installed", "")
		require.Equal(t, 202, code, body)
		code, body = d.Do("PUT", "/admin/host/"+s+"/boot_complete", `{"CoreOSVersion":"1068.6.0","MayuVersion":"9.9.9-test"}`)
		require.Equal(t, 202, code, body)
	}
	s := serials[0]
	code, body := d.Do("PUT", "/admin/host/"+s+"/set_state", `{"State":"configured"}`)
	require.Equal(t, 202, code, body)
	code, body = d.Do("PUT", "/admin/host/"+s+"/mark_fresh", "")
	require.Equal(t, 202, code, body)
	code, body = d.Do("PUT", "/admin/host/"+s+"/set_cabinet", `{"Cabinet":4}`)
	require.Equal(t, 202, code, body)
	code, _ = d.Do("PUT", "/admin/host/"+s+"/boot_complete", `{}`)
	assert.Equal(t, 409, code, "a configured machine cannot report running")

	hosts = d.Hosts()
	assert.Equal(t, host.Running, hosts[serials[1]].State)
	assert.Equal(t, "9.9.9-test", hosts[serials[1]].MayuVersion)
	assert.False(t, hosts[serials[1]].LastBoot.IsZero())
	assert.Equal(t, host.Configured, hosts[s].State)
	assert.EqualValues(t, 4, hosts[s].Cabinet)

	// The files on disk are what the API says.
	b, err := os.ReadFile(filepath.Join(d.Cluster, s, "conf.json"))
	require.NoError(t, err)
	onDisk, err := host.Unmarshal(b)
	require.NoError(t, err)
	assert.Equal(t, hosts[s].MachineID, onDisk.MachineID)

	require.NoError(t, d.Stop(), d.Out.String())

	log := proctest.Git(t, d.Cluster, "log", "--format=%an|%s")
	for _, m := range []string{"host created", "updated with predefined settings", "updated host InternalAddr",
		"updated host profile and metadata", "set default etcd discovery token", "collected host mac addresses",
		"updated host connected nic", "updated host state to installing", "updated state to installed",
		"updated state to running", "updated host state", "host flagged as fresh", "updated host cabinet"} {
		assert.Contains(t, log, "mayu commiter|"+s+": "+m)
	}
	assert.Contains(t, log, "mayu commiter|Set default etcd cluster to '")
	assert.Contains(t, log, "|initial commit")
	proctest.Git(t, d.Cluster, "fsck", "--full")
	assert.Empty(t, proctest.Git(t, d.Cluster, "status", "--porcelain"), "the working tree matches the last commit")
}

func TestProcessConcurrentRegistration(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--no-tls")
	d.WaitReady()
	const machines = 64
	var wg sync.WaitGroup
	codes := make(chan string, machines)
	for i := 0; i < machines; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := fmt.Sprintf("storm-%02d", i)
			resp, err := d.Client.Get(d.Base + "/first-stage-script/" + s)
			if err != nil {
				codes <- err.Error()
				return
			}
			resp.Body.Close()
			facts := fmt.Sprintf(`{"Serial":%q,"NetDevs":[{"Name":"eth0","MacAddress":"52:54:00:00:00:%02x"}]}`, s, i)
			resp, err = d.Client.Post(d.Base+"/final-cloud-config.yaml", "application/json", strings.NewReader(facts))
			if err != nil {
				codes <- err.Error()
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				codes <- fmt.Sprintf("%s: %d", s, resp.StatusCode)
			}
		}(i)
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		t.Error(c)
	}
	hosts := d.Hosts()
	require.Len(t, hosts, machines)
	ips := map[string]bool{}
	profiles := map[string]int{}
	for _, h := range hosts {
		assert.False(t, ips[h.InternalAddr.String()], "duplicate address %s", h.InternalAddr)
		ips[h.InternalAddr.String()] = true
		profiles[h.Profile]++
		assert.Equal(t, host.Installing, h.State)
	}
	assert.Equal(t, 3, profiles["core-services"])
	require.NoError(t, d.Stop(), d.Out.String())
	assert.Equal(t, machines, strings.Count(proctest.Git(t, d.Cluster, "log", "--format=%s"), ": host created"), "one record per serial")
	proctest.Git(t, d.Cluster, "fsck", "--full")
	assert.Empty(t, proctest.Git(t, d.Cluster, "status", "--porcelain"))
}

func TestProcessTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key, pool := proctest.SelfSignedCert(t, dir)
	d := startDaemon(t, dir, "--tls-cert-file="+cert, "--tls-key-file="+key)
	d.Client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	d.WaitReady()
	code, body := d.Do("GET", "/ipxebootscript", "")
	require.Equal(t, 200, code)
	assert.Contains(t, body, "mayu=https://127.0.0.1:")
	// Plain HTTP to the TLS port is refused, not served.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", d.Flags.Port))
	if err == nil {
		assert.Equal(t, 400, resp.StatusCode)
		resp.Body.Close()
	}
}

// runOnce runs mayu to completion and returns its exit code and output.
func runOnce(t *testing.T, args ...string) (int, string) {
	t.Helper()
	r := proctest.Run(t, mayuBinary(t), nil, args...)
	return r.Code, r.Stdout + r.Stderr
}

func TestStartupProblemsAreListedAtOnce(t *testing.T) {
	dir := t.TempDir()
	args := baseArgs(t, dir, proctest.FreePort(t))
	tests := []struct {
		name  string
		extra []string
		want  []string
	}{
		{"tls without cert", nil, []string{"TLS needs --tls-cert-file and --tls-key-file"}},
		{"unreadable cert", []string{"--tls-cert-file=/nonexistent/cert", "--tls-key-file=/nonexistent/key"},
			[]string{"--tls-cert-file: open /nonexistent/cert", "--tls-key-file: open /nonexistent/key"}},
		{"both discoveries", []string{"--no-tls", "--etcd-discovery=http://127.0.0.1:1"}, []string{"exclusive"}},
		{"no discovery", []string{"--no-tls", "--use-internal-etcd-discovery=false"}, []string{"no etcd discovery"}},
		{"several", []string{"--etcd-quorum-size=0", "--use-internal-etcd-discovery=false"},
			[]string{"3 problems", "TLS needs", "no etcd discovery", "--etcd-quorum-size=0"}},
		{"missing template", []string{"--no-tls", "--last-stage-cloudconfig=/nonexistent.yaml"}, []string{"/nonexistent.yaml"}},
		{"bad config", []string{"--no-tls", "--config=" + writeFile(t, dir, "bad.yaml", "network: {bind_addr: x}\nprofilez: []\n")},
			[]string{"profilez"}},
		{"invalid config", []string{"--no-tls", "--config=" + writeFile(t, dir, "invalid.yaml", "network: {bind_addr: x, ip_range: {start: 1.1.1.9, end: 1.1.1.1}}\n")},
			[]string{"default_coreos_version is required", "bind_addr \"x\"", "reversed"}},
		{"stray argument", []string{"--no-tls", "serve"}, []string{"unexpected arguments"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := runOnce(t, append(append([]string{}, args...), tt.extra...)...)
			assert.NotEqual(t, 0, code, out)
			for _, w := range tt.want {
				assert.Contains(t, out, w)
			}
			assert.NotContains(t, out, "panic")
		})
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

func TestShowTemplates(t *testing.T) {
	dir := t.TempDir()
	args := baseArgs(t, dir, proctest.FreePort(t))
	code, out := runOnce(t, append(args, "--show-templates")...)
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "#cloud-config")

	code, out = runOnce(t, append(args, "--show-templates", "--use-ignition",
		"--template-snippets="+proctest.RepoPath(t, "template_snippets", "ignition"))...)
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, `"ignition"`)

	broken := writeFile(t, dir, "broken.yaml", "#cloud-config\nhostname: {{.Host.Hostname\n")
	code, out = runOnce(t, append(args, "--show-templates", "--last-stage-cloudconfig="+broken)...)
	assert.NotEqual(t, 0, code)
	assert.Contains(t, out, "broken.yaml")

	notYAML := writeFile(t, dir, "notyaml.yaml", "#cloud-config\nhostname: [{{.Host.Hostname}}\n")
	code, out = runOnce(t, append(args, "--show-templates", "--last-stage-cloudconfig="+notYAML)...)
	assert.NotEqual(t, 0, code, out)
}

func TestVersion(t *testing.T) {
	code, out := runOnce(t, "--version")
	require.Equal(t, 0, code)
	assert.Contains(t, out, proctest.TestVersion)
}

func TestGracefulStopLeavesNothingRunning(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--no-tls")
	d.WaitReady()
	require.NoError(t, d.Stop())
	assert.True(t, d.Cmd.ProcessState.Success(), d.Out.String())
	assert.Contains(t, d.Out.String(), "mayu stopped")
	_, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", d.Flags.Port), time.Second)
	assert.Error(t, err, "the port is closed")
}
