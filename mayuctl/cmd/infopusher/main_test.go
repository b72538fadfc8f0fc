package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/hostinfo"
	"mayu/pkg/hostinfo/hostinfotest"
)

const finalConfig = "#cloud-config\nhostname: 0103a1b2c3d4e5f6\n"

// fakeSystem is a machine with a serial containing spaces, two physical and
// two virtual NICs, and a default route.
func fakeSystem(t *testing.T) (sysRoot, procRoot string) {
	return hostinfotest.Write(t, t.TempDir(), hostinfotest.System{
		DMI: map[string]string{"product_serial": "0800278e158a 0\n"},
		NICs: []hostinfotest.NIC{
			{Name: "lo", Address: "00:00:00:00:00:00", Virtual: true},
			{Name: "enp0s3", Address: "08:00:27:8e:15:8a"},
			{Name: "enp0s8", Address: "08:00:27:8e:15:8b"},
			{Name: "docker0", Address: "02:42:ac:11:00:01", Virtual: true},
		},
		Route: hostinfotest.RouteHeader + "enp0s8\t00000000\t0202A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
	})
}

type exec struct {
	stdout, stderr string
	code           int
}

func infopusher(t *testing.T, env map[string]string, args ...string) exec {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := run(ctx, append([]string{"infopusher"}, args...), func(k string) string { return env[k] }, &out, &errOut)
	return exec{out.String(), errOut.String(), code}
}

func TestPostsFactsAndPrintsAnswer(t *testing.T) {
	var got hostinfo.Info
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, "/final-cloud-config.yaml", r.URL.Path)
		b, _ := io.ReadAll(r.Body)
		assert.NoError(t, json.Unmarshal(b, &got))
		_, _ = io.WriteString(w, finalConfig)
	}))
	defer srv.Close()
	sys, proc := fakeSystem(t)
	want := hostinfo.Info{
		Serial: "0800278e158a-0",
		NetDevs: []hostinfo.NetDev{
			{Name: "enp0s3", MacAddress: "08:00:27:8e:15:8a"},
			{Name: "enp0s8", MacAddress: "08:00:27:8e:15:8b"},
		},
		ConnectedNIC: "enp0s8",
	}

	t.Run("roots from flags", func(t *testing.T) {
		r := infopusher(t, nil, "-post-url="+srv.URL+"/final-cloud-config.yaml",
			"-sysfs-root="+sys, "-procfs-root="+proc, "-ipmitool=-")
		require.Equal(t, 0, r.code, r.stderr)
		assert.Equal(t, finalConfig, r.stdout, "stdout is exactly the answer")
		assert.Empty(t, r.stderr)
		assert.Equal(t, want, got)
	})
	t.Run("roots from the environment", func(t *testing.T) {
		got = hostinfo.Info{}
		r := infopusher(t, map[string]string{"INFOPUSHER_SYSFS_ROOT": sys, "INFOPUSHER_PROCFS_ROOT": proc,
			"INFOPUSHER_IPMITOOL": "/nonexistent/ipmitool"}, "--post-url", srv.URL+"/final-cloud-config.yaml")
		require.Equal(t, 0, r.code, r.stderr)
		assert.Equal(t, finalConfig, r.stdout)
		assert.Equal(t, want, got)
	})
	t.Run("serial given by the script", func(t *testing.T) {
		r := infopusher(t, nil, "-post-url="+srv.URL+"/final-cloud-config.yaml",
			"-sysfs-root="+sys, "-procfs-root="+proc, "-ipmitool=-", "-serial=ABC 1")
		require.Equal(t, 0, r.code, r.stderr)
		assert.Equal(t, "ABC-1", got.Serial)
	})
	t.Run("verbose notes go to stderr only", func(t *testing.T) {
		r := infopusher(t, nil, "-v", "-post-url="+srv.URL+"/final-cloud-config.yaml",
			"-sysfs-root="+sys, "-procfs-root="+proc, "-ipmitool=/nonexistent/ipmitool")
		require.Equal(t, 0, r.code, r.stderr)
		assert.Equal(t, finalConfig, r.stdout)
		assert.Contains(t, r.stderr, "ipmitool not found")
	})
}

func TestFailures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no free address left in network.ip_range", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	sys, proc := fakeSystem(t)
	empty := t.TempDir()
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no URL", []string{"-sysfs-root=" + sys}, 2, "infopusher: -post-url is required (see infopusher -h)\n"},
		{"not a URL", []string{"-post-url=mayu:4080"}, 2, "infopusher: -post-url \"mayu:4080\": want an http:// or https:// URL\n"},
		{"stray argument", []string{"-post-url=http://x", "now"}, 2, "infopusher: unexpected argument \"now\" (see infopusher -h)\n"},
		{"server refuses", []string{"-post-url=" + srv.URL, "-sysfs-root=" + sys, "-procfs-root=" + proc, "-ipmitool=-"}, 1,
			"infopusher: hostinfo: post failed: " + srv.URL + " answered 503 Service Unavailable: no free address left in network.ip_range\n"},
		{"no sysfs", []string{"-post-url=" + srv.URL, "-sysfs-root=" + empty, "-procfs-root=" + proc, "-ipmitool=-"}, 1,
			"infopusher: hostinfo: no usable DMI serial in " + empty + "/devices/virtual/dmi/id (product_serial unreadable, chassis_serial unreadable, board_serial unreadable, product_uuid unreadable)\n"},
		{"placeholder given by the script", []string{"-post-url=" + srv.URL, "-sysfs-root=" + sys, "-procfs-root=" + proc, "-ipmitool=-",
			"-serial= To be filled by O.E.M. "}, 1,
			"infopusher: hostinfo: the serial given by the script: host: invalid serial \"To-be-filled-by-O.E.M.\": a vendor placeholder that every board of a model shares, not a serial " +
				"(mayu's serial rule, GET /machine-serial.sh, takes the chassis or board serial or the system UUID instead)\n"},
		{"marker given by the script", []string{"-post-url=" + srv.URL, "-sysfs-root=" + sys, "-procfs-root=" + proc, "-ipmitool=-",
			"-serial=__SERIAL__"}, 1,
			"infopusher: hostinfo: the serial given by the script: host: invalid serial \"__SERIAL__\": an unsubstituted template marker, not a serial (the machine's script did not put its serial in)\n"},
		{"no procfs", []string{"-post-url=" + srv.URL, "-sysfs-root=" + sys, "-procfs-root=" + empty, "-ipmitool=-"}, 1,
			"infopusher: hostinfo: cannot read system information: open " + empty + "/net/route: no such file or directory\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := infopusher(t, nil, tc.args...)
			assert.Equal(t, tc.code, r.code)
			assert.Empty(t, r.stdout, "no partial config on stdout")
			assert.Equal(t, tc.stderr, r.stderr)
		})
	}

	t.Run("unreachable", func(t *testing.T) {
		srv.Close()
		r := infopusher(t, nil, "-post-url="+srv.URL, "-sysfs-root="+sys, "-procfs-root="+proc, "-ipmitool=-")
		assert.Equal(t, 1, r.code)
		assert.Empty(t, r.stdout)
		assert.True(t, strings.HasPrefix(r.stderr, "infopusher: hostinfo: post failed: Post "), r.stderr)
		assert.Contains(t, r.stderr, "connection refused")
	})
}

func TestHelpAndVersion(t *testing.T) {
	r := infopusher(t, nil, "-h")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stderr, "Usage: infopusher -post-url=URL")
	assert.Contains(t, r.stderr, "-sysfs-root")

	for _, args := range [][]string{{"-version"}, {"version"}} {
		r = infopusher(t, nil, args...)
		assert.Equal(t, 0, r.code)
		assert.Equal(t, "infopusher dev (commit unknown)\n", r.stdout)
	}
}

// With -ca-file the helper checks mayu's certificate against it (and fails
// without it), and it sends the machine's credential from
// $MAYU_MACHINE_TOKEN.
func TestCAFileAndCredential(t *testing.T) {
	var token string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token = r.Header.Get("Mayu-Machine-Token")
		_, _ = io.WriteString(w, finalConfig)
	}))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644))
	sys, proc := fakeSystem(t)
	args := []string{"-post-url=" + srv.URL + "/final-cloud-config.yaml", "-sysfs-root=" + sys, "-procfs-root=" + proc, "-ipmitool=-"}

	r := infopusher(t, nil, args...)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "certificate")

	r = infopusher(t, map[string]string{"MAYU_MACHINE_TOKEN": "tok-123"}, append(args, "-ca-file="+caFile)...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, finalConfig, r.stdout)
	assert.Equal(t, "tok-123", token)

	r = infopusher(t, nil, append(args, "-ca-file="+filepath.Join(t.TempDir(), "missing.pem"))...)
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "-ca-file")
}
