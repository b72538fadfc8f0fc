package main

// Process tests: the real mayu binary, started on loopback with a temporary
// cluster directory, driven over HTTP the way machines and mayuctl drive it.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
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

	"mayu/pkg/host"
	"mayu/pkg/proctest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// mayuBinary builds the daemon once per test run.
func mayuBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mayu-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "mayu")
		out, err := exec.Command("go", "build", "-ldflags", "-X main.version=9.9.9-test", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binPath
}

func repoPath(parts ...string) string {
	abs, _ := filepath.Abs(filepath.Join(append([]string{".."}, parts...)...))
	return abs
}

var processConfig = proctest.Config(proctest.LoopConfig{
	IPStart: "10.9.0.21", IPEnd: "10.9.0.99",
	Profiles: []proctest.Profile{
		{Name: "core-services", Quantity: 3, Tags: []string{"role-core=true"}},
		{Name: "default", Tags: []string{"role-worker=true"}},
	},
})

type daemon struct {
	t       *testing.T
	cmd     *exec.Cmd
	port    int
	base    string
	cluster string
	out     *proctest.Output
	done    chan error
	client  *http.Client
}

// baseArgs are the flags of a loopback daemon using the repository's
// templates.
func baseArgs(t *testing.T, dir string, port int) []string {
	cfg := filepath.Join(dir, "config.yaml")
	if _, err := os.Stat(cfg); os.IsNotExist(err) {
		require.NoError(t, os.WriteFile(cfg, []byte(processConfig), 0o644))
	}
	static := filepath.Join(dir, "static_html")
	require.NoError(t, os.MkdirAll(static, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(static, "infopusher"), []byte("#!/bin/sh\necho helper\n"), 0o755))
	return []string{
		"--config=" + cfg,
		"--cluster-directory=" + filepath.Join(dir, "cluster"),
		"--http-bind-address=127.0.0.1",
		fmt.Sprintf("--http-port=%d", port),
		"--no-dnsmasq",
		"--first-stage-script=" + repoPath("templates", "first_stage_script.sh"),
		"--last-stage-cloudconfig=" + repoPath("templates", "last_stage_cloudconfig.yaml"),
		"--ignition-config=" + repoPath("templates", "ignition", "gs_install.yaml"),
		"--dnsmasq-template=" + repoPath("templates", "dnsmasq_template.conf"),
		"--template-snippets=" + repoPath("template_snippets", "cloudconfig"),
		"--static-html-path=" + static,
		"--images-cache-dir=" + filepath.Join(dir, "images"),
		"--yochu-path=" + filepath.Join(dir, "yochu"),
		"--tftproot=" + repoPath("tftproot"),
	}
}

// startDaemon runs mayu and waits until it answers. It is stopped (SIGTERM,
// then SIGKILL) when the test ends.
func startDaemon(t *testing.T, dir string, extra ...string) *daemon {
	t.Helper()
	port := proctest.FreePort(t)
	args := append(baseArgs(t, dir, port), extra...)
	d := &daemon{t: t, port: port, cluster: filepath.Join(dir, "cluster"), out: &proctest.Output{}, done: make(chan error, 1),
		client: &http.Client{Timeout: 10 * time.Second}}
	scheme := "http"
	if !contains(extra, "--no-tls") {
		scheme = "https"
	}
	d.base = fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)
	d.cmd = exec.Command(mayuBinary(t), args...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	require.NoError(t, d.cmd.Start())
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() { d.stop() })
	return d
}

func (d *daemon) waitReady(client *http.Client) {
	d.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-d.done:
			d.done <- err
			d.t.Fatalf("mayu exited early (%v):\n%s", err, d.out.String())
		default:
		}
		resp, err := client.Get(d.base + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Fatalf("mayu did not answer within 30s:\n%s", d.out.String())
}

// stop sends SIGTERM and waits (bounded) for a clean exit.
func (d *daemon) stop() error {
	if d.cmd.ProcessState != nil {
		return nil
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
		return err
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		return fmt.Errorf("mayu did not stop within 20s after SIGTERM")
	}
}

func (d *daemon) req(method, path, body string) (int, string) {
	d.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, d.base+path, r)
	require.NoError(d.t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client.Do(req)
	require.NoError(d.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (d *daemon) hosts() map[string]host.Host {
	d.t.Helper()
	code, body := d.req("GET", "/admin/hosts", "")
	require.Equal(d.t, 200, code, body)
	var list []host.Host
	require.NoError(d.t, json.Unmarshal([]byte(body), &list))
	m := map[string]host.Host{}
	for _, h := range list {
		m[h.Serial] = h
	}
	return m
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "git %v: %s", args, out)
	return string(out)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestProcessLifeCycle(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--no-tls")
	d.waitReady(d.client)

	serials := []string{"0800278e158a-0", "0800278e158b-1", "0800278e158c-2", "0800278e158d-3"}
	for i, s := range serials {
		code, body := d.req("GET", "/first-stage-script/"+strings.ToUpper(s), "")
		require.Equal(t, 200, code, body)
		assert.Contains(t, body, d.base+"/images/"+s+"/install_image.bin.bz2")
		facts := fmt.Sprintf(`{"Serial":%q,"NetDevs":[{"Name":"eth0","MacAddress":"08:00:27:8e:15:%02x"}],"IPMIAddress":"","ConnectedNIC":"eth0"}`, s, 0x8a+i)
		code, body = d.req("POST", "/final-cloud-config.yaml", facts)
		require.Equal(t, 200, code, body)
		assert.True(t, strings.HasPrefix(body, "#cloud-config"), body)
		assert.Contains(t, body, d.base+"/admin/host/"+s+"/boot_complete")
	}
	hosts := d.hosts()
	require.Len(t, hosts, 4)
	for i, s := range serials[:3] {
		assert.Equal(t, "core-services", hosts[s].Profile)
		assert.Equal(t, fmt.Sprintf("10.9.0.%d", 21+i), hosts[s].InternalAddr.String())
		assert.Equal(t, host.Installing, hosts[s].State)
	}
	assert.Equal(t, "default", hosts[serials[3]].Profile)

	for _, s := range serials {
		code, body := d.req("PUT", "/admin/host/"+s+"/set_installed", "")
		require.Equal(t, 202, code, body)
		code, body = d.req("PUT", "/admin/host/"+s+"/boot_complete", `{"CoreOSVersion":"1068.6.0","MayuVersion":"9.9.9-test"}`)
		require.Equal(t, 202, code, body)
	}
	s := serials[0]
	code, body := d.req("PUT", "/admin/host/"+s+"/set_state", `{"State":"configured"}`)
	require.Equal(t, 202, code, body)
	code, body = d.req("PUT", "/admin/host/"+s+"/mark_fresh", "")
	require.Equal(t, 202, code, body)
	code, body = d.req("PUT", "/admin/host/"+s+"/set_cabinet", `{"Cabinet":4}`)
	require.Equal(t, 202, code, body)
	code, _ = d.req("PUT", "/admin/host/"+s+"/boot_complete", `{}`)
	assert.Equal(t, 409, code, "a configured machine cannot report running")

	hosts = d.hosts()
	assert.Equal(t, host.Running, hosts[serials[1]].State)
	assert.Equal(t, "9.9.9-test", hosts[serials[1]].MayuVersion)
	assert.False(t, hosts[serials[1]].LastBoot.IsZero())
	assert.Equal(t, host.Configured, hosts[s].State)
	assert.EqualValues(t, 4, hosts[s].Cabinet)

	// The files on disk are what the API says.
	b, err := os.ReadFile(filepath.Join(d.cluster, s, "conf.json"))
	require.NoError(t, err)
	onDisk, err := host.Unmarshal(b)
	require.NoError(t, err)
	assert.Equal(t, hosts[s].MachineID, onDisk.MachineID)

	require.NoError(t, d.stop(), d.out.String())

	log := git(t, d.cluster, "log", "--format=%an|%s")
	for _, m := range []string{"host created", "updated with predefined settings", "updated host InternalAddr",
		"updated host profile and metadata", "set default etcd discovery token", "collected host mac addresses",
		"updated host connected nic", "updated host state to installing", "updated state to installed",
		"updated state to running", "updated host state", "host flagged as fresh", "updated host cabinet"} {
		assert.Contains(t, log, "mayu commiter|"+s+": "+m)
	}
	assert.Contains(t, log, "mayu commiter|Set default etcd cluster to '")
	assert.Contains(t, log, "|initial commit")
	git(t, d.cluster, "fsck", "--full")
	assert.Empty(t, git(t, d.cluster, "status", "--porcelain"), "the working tree matches the last commit")
}

func TestProcessConcurrentRegistration(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--no-tls")
	d.waitReady(d.client)
	const machines = 64
	var wg sync.WaitGroup
	codes := make(chan string, machines)
	for i := 0; i < machines; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := fmt.Sprintf("storm-%02d", i)
			resp, err := d.client.Get(d.base + "/first-stage-script/" + s)
			if err != nil {
				codes <- err.Error()
				return
			}
			resp.Body.Close()
			facts := fmt.Sprintf(`{"Serial":%q,"NetDevs":[{"Name":"eth0","MacAddress":"52:54:00:00:00:%02x"}]}`, s, i)
			resp, err = d.client.Post(d.base+"/final-cloud-config.yaml", "application/json", strings.NewReader(facts))
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
	hosts := d.hosts()
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
	require.NoError(t, d.stop(), d.out.String())
	assert.Equal(t, machines, strings.Count(git(t, d.cluster, "log", "--format=%s"), ": host created"), "one record per serial")
	git(t, d.cluster, "fsck", "--full")
	assert.Empty(t, git(t, d.cluster, "status", "--porcelain"))
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mayu-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestProcessTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir)
	d := startDaemon(t, dir, "--tls-cert-file="+cert, "--tls-key-file="+key)
	d.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	d.waitReady(d.client)
	code, body := d.req("GET", "/ipxebootscript", "")
	require.Equal(t, 200, code)
	assert.Contains(t, body, "mayu=https://127.0.0.1:")
	// Plain HTTP to the TLS port is refused, not served.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", d.port))
	if err == nil {
		assert.Equal(t, 400, resp.StatusCode)
		resp.Body.Close()
	}
}

// runOnce runs mayu to completion and returns its exit code and output.
func runOnce(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, mayuBinary(t), args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	require.NoError(t, err, string(out))
	return 0, string(out)
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
		"--template-snippets="+repoPath("template_snippets", "ignition"))...)
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
	assert.Contains(t, out, "9.9.9-test")
}

func TestGracefulStopLeavesNothingRunning(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--no-tls")
	d.waitReady(d.client)
	require.NoError(t, d.stop())
	assert.True(t, d.cmd.ProcessState.Success(), d.out.String())
	assert.Contains(t, d.out.String(), "mayu stopped")
	_, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", d.port), time.Second)
	assert.Error(t, err, "the port is closed")
}
