package main

import (
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/proctest"
)

// post sends a host-info report as the helper does and returns the status
// and body.
func (d *mayuDaemon) post(t *testing.T, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(d.Base+"/final-cloud-config.yaml", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// TestProcessMACRebind: a report of other MACs for a known serial, and a
// MAC of another host, are refused with 409 naming both sides and logged;
// `mayuctl set <serial> macs ...` re-binds the serial after a board swap,
// `macs ""` unbinds it, `ipmiaddr ""` clears the IPMI address; all of it
// audited in git.
func TestProcessMACRebind(t *testing.T) {
	bin := proctest.Build(t)
	proctest.RequireCommand(t, "git", "git")
	d := startMayu(t, bin, t.TempDir(), nil)
	const s = "0800278e158a-0"
	d.register(t, bin, "0800278e158a 0", "08:00:27:8e:15:8a")
	require.Equal(t, []string{"08:00:27:8e:15:8a"}, d.Hosts()[s].MacAddresses)

	newBoard := `{"Serial":"` + s + `","NetDevs":[{"Name":"eth0","MacAddress":"0c:c4:7a:00:00:01"}],"ConnectedNIC":"eth0"}`
	code, body := d.post(t, newBoard)
	assert.Equal(t, 409, code)
	assert.Contains(t, body, "bound to MACs 08:00:27:8e:15:8a")
	assert.Contains(t, body, "reports 0c:c4:7a:00:00:01")
	t.Logf("report of a new board -> %d %s", code, strings.TrimSpace(body))
	// Logged before the answer, read through a pipe that a busy machine
	// drains a little later.
	assert.Eventually(t, func() bool { return strings.Contains(d.Out.String(), "facts report refused") }, 10*time.Second,
		10*time.Millisecond, "logged")
	assert.Equal(t, []string{"08:00:27:8e:15:8a"}, d.Hosts()[s].MacAddresses, "still bound to the old board")

	r := d.ctl(t, bin, "set", s, "macs", "0C-C4-7A-00-00-01")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, []string{"0c:c4:7a:00:00:01"}, d.Hosts()[s].MacAddresses)
	code, body = d.post(t, newBoard)
	require.Equal(t, 200, code, body)

	clone := `{"Serial":"other-1","NetDevs":[{"Name":"eth0","MacAddress":"0c:c4:7a:00:00:01"}]}`
	code, body = d.post(t, clone)
	assert.Equal(t, 409, code)
	assert.Contains(t, body, "recorded on host "+s)
	t.Logf("another serial with its MAC -> %d %s", code, strings.TrimSpace(body))

	r = d.ctl(t, bin, "set", s, "macs", "")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, d.Hosts()[s].MacAddresses, "unbound: the next report binds")
	code, body = d.post(t, clone)
	require.Equal(t, 200, code, "the MAC is free again: %s", body)

	r = d.ctl(t, bin, "set", s, "macs", "zz")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, `invalid MAC address "zz"`)

	r = d.ctl(t, bin, "set", s, "ipmiaddr", "10.0.0.5")
	require.Equal(t, 0, r.code, r.stderr)
	r = d.ctl(t, bin, "set", s, "ipmiaddr", "")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Nil(t, d.Hosts()[s].IPMIAddr)

	out, err := exec.Command("git", "-C", d.Cluster, "log", "--format=%s").Output()
	require.NoError(t, err)
	assert.Equal(t, 2, strings.Count(string(out), s+": updated host mac addresses\n"))
	assert.Contains(t, string(out), s+": updated host ipmi address\n")
}
