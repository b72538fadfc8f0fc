//go:build nettest

package netns

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/dnsmasq"
	"mayu/pkg/proctest"
)

// TestNetPXEStorm is the short version of `make bench-storm`'s full-stack
// storm: 50 machines boot through real dnsmasq started by the built mayu
// (PXE DHCP, TFTP of undionly.kpxe, iPXE DHCP with option 175, the boot
// script), walk the HTTP life cycle from their leased addresses, and DHCP
// once more after installation. No timing is asserted: every machine must
// end running, no stage may fail, and no installed machine may get an
// offer. stormbench creates and removes its own two namespaces.
func TestNetPXEStorm(t *testing.T) {
	proctest.RequireRoot(t, "the full-stack storm creates network namespaces")
	proctest.RequireFile(t, dnsmasq.DefaultBinary, "dnsmasq-base")
	proctest.RequireCommand(t, "busybox", "busybox-static")
	bin := proctest.Build(t)
	dir := t.TempDir()
	bench := filepath.Join(dir, "stormbench")
	build := exec.Command("go", "build", "-o", bench, "./tools/stormbench")
	build.Dir = proctest.RepoPath(t)
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res := filepath.Join(dir, "pxe.json")
	cmd := exec.CommandContext(ctx, bench, "-mayu", bin.Mayu, "-repo", proctest.RepoPath(t), "-work", dir,
		"-pxe-only", "-pxe", "50", "-out", res)
	out, err = cmd.CombinedOutput()
	t.Logf("%s", out)
	require.NoError(t, err)

	var r struct {
		PXE []struct {
			Machines int `json:"machines"`
			Result   struct {
				Completed int `json:"completed"`
				Failed    int `json:"failed"`
			} `json:"result"`
			PXE struct {
				Stages map[string]struct {
					Count  int `json:"count"`
					Errors int `json:"errors"`
				} `json:"stages"`
				Errors   map[string]int `json:"errors"`
				Answered int            `json:"answered_after_install"`
			} `json:"pxe"`
			Check struct {
				Problems []string `json:"problems"`
			} `json:"check"`
			Restarts int    `json:"dnsmasq_restarts"`
			Error    string `json:"error"`
		} `json:"pxe"`
	}
	data, err := os.ReadFile(res)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &r))
	require.Len(t, r.PXE, 1)
	s := r.PXE[0]
	assert.Empty(t, s.Error)
	assert.Equal(t, 50, s.Result.Completed, "every machine running")
	assert.Zero(t, s.Result.Failed)
	assert.Empty(t, s.PXE.Errors)
	for _, stage := range []string{"DHCP PXE", "TFTP boot file", "DHCP iPXE", "GET /ipxebootscript", "DHCP ignored"} {
		assert.Equal(t, 50, s.PXE.Stages[stage].Count, stage)
		assert.Zero(t, s.PXE.Stages[stage].Errors, stage)
	}
	assert.Zero(t, s.PXE.Answered, "installed machines must get no offer")
	assert.Empty(t, s.Check.Problems, "end state")
	assert.Zero(t, s.Restarts, "dnsmasq restarts")
}
