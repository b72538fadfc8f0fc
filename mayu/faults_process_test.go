package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
)

// dirSize is the bytes of the regular files under dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	require.NoError(t, filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	}))
	return n
}

// TestProcessFailedRequestsChangeNothing: on the real daemon and its git
// cluster directory, a final-config request whose template fails answers
// 500 and leaves conf.json and the git history as they were; twenty
// override PUTs of 900 KB each are refused with 413 at the record cap, so
// neither conf.json nor .git grows.
func TestProcessFailedRequestsChangeNothing(t *testing.T) {
	dir := t.TempDir()
	// The shipped template, plus a branch that fails at render time for a
	// host with the override boom set.
	b, err := os.ReadFile(proctest.RepoPath(t, "templates", "last_stage_cloudconfig.yaml"))
	require.NoError(t, err)
	broken := filepath.Join(dir, "last_stage_cloudconfig.yaml")
	require.NoError(t, os.WriteFile(broken, append(b, []byte("{{if index .TemplatesEnv \"boom\"}}{{index .TemplatesEnv.boom 99}}{{end}}\n")...), 0o644))
	d := startDaemon(t, dir, "--no-tls", "--last-stage-cloudconfig="+broken)
	d.WaitReady()

	const s = "0800278e158a-0"
	facts := `{"Serial":"` + s + `","NetDevs":[{"Name":"eth0","MacAddress":"08:00:27:8e:15:8a"}],"IPMIAddress":"10.0.0.9","ConnectedNIC":"eth0"}`
	code, body := d.Do("GET", "/first-stage-script/"+s, "")
	require.Equal(t, 200, code, body)
	code, body = d.Do("PUT", "/admin/host/"+s+"/override", `{"Overrides":{"boom":"yes"}}`)
	require.Equal(t, 202, code, body)

	conf := filepath.Join(d.Cluster, s, "conf.json")
	confBefore, err := os.ReadFile(conf)
	require.NoError(t, err)
	logBefore := proctest.Git(t, d.Cluster, "log", "--format=%H %s")
	code, body = d.Do("POST", "/final-cloud-config.yaml", facts)
	assert.Equal(t, 500, code, body)
	assert.Contains(t, body, "index out of range")
	t.Logf("POST /final-cloud-config.yaml (template fails) -> %d %s", code, strings.TrimSpace(body))
	confAfter, err := os.ReadFile(conf)
	require.NoError(t, err)
	assert.Equal(t, string(confBefore), string(confAfter), "conf.json untouched")
	assert.Equal(t, logBefore, proctest.Git(t, d.Cluster, "log", "--format=%H %s"), "nothing committed")
	assert.Equal(t, host.Configured, d.Hosts()[s].State)

	// Without the failing branch the same request goes through, once.
	code, body = d.Do("PUT", "/admin/host/"+s+"/override", `{"Overrides":{"boom":""}}`)
	require.Equal(t, 202, code, body)
	code, body = d.Do("POST", "/final-cloud-config.yaml", facts)
	require.Equal(t, 200, code, body)
	assert.Equal(t, host.Installing, d.Hosts()[s].State)

	gitBefore, confSizeBefore := dirSize(t, filepath.Join(d.Cluster, ".git")), len(confAfter)
	logBefore = proctest.Git(t, d.Cluster, "log", "--format=%H %s")
	big := strings.Repeat("v", 900<<10)
	for i := 0; i < 20; i++ {
		code, body = d.Do("PUT", "/admin/host/"+s+"/override", fmt.Sprintf(`{"Overrides":{"k%d":%q}}`, i, big))
		require.Equal(t, 413, code, body)
	}
	t.Logf("PUT override of 900 KB -> %d %s", code, strings.TrimSpace(body))
	assert.Contains(t, body, "over the cap of 65536 (64 KiB)")
	assert.Equal(t, logBefore, proctest.Git(t, d.Cluster, "log", "--format=%H %s"))
	conf20, err := os.ReadFile(conf)
	require.NoError(t, err)
	gitAfter := dirSize(t, filepath.Join(d.Cluster, ".git"))
	t.Logf("after 20 refused PUTs: conf.json %d bytes (before the installing write %d), .git %d bytes (was %d)",
		len(conf20), confSizeBefore, gitAfter, gitBefore)
	assert.Less(t, len(conf20), 4096)
	assert.Less(t, gitAfter-gitBefore, int64(64<<10), ".git did not grow with the refused records")
}
