package hostinfo_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/hostinfo"
	"mayu/pkg/hostinfo/hostinfotest"
)

// serialVector is one fake machine of testdata/serial-vectors.json: the
// content of its DMI files and the serial the rule must give it, or Error
// when no serial is usable.
type serialVector struct {
	Name   string            `json:"name"`
	DMI    map[string]string `json:"dmi"`
	Serial string            `json:"serial"`
	Error  bool              `json:"error"`
}

// serialShell is a shell the scripts that source machine-serial.sh run
// under: the stand-in PXE image's busybox, Debian's sh, and the bash of the
// first-stage script with its set -Eeuo pipefail and ERR trap.
type serialShell struct {
	name    string
	argv    []string
	prelude string
}

func serialShells(t *testing.T) []serialShell {
	t.Helper()
	shells := []serialShell{
		{"busybox sh", []string{"busybox", "sh"}, "set -eu"},
		{"dash", []string{"dash"}, "set -eu"},
		{"bash strict", []string{"bash"}, "set -Eeuo pipefail; trap 'echo ERR trap fired >&2; exit 99' ERR"},
	}
	for _, sh := range shells {
		if _, err := exec.LookPath(sh.argv[0]); err != nil {
			// The stand-in PXE image is busybox and Debian's /bin/sh is dash:
			// the rule must be tested under both (.ci/packages installs them).
			t.Fatalf("%s is needed to test machine-serial.sh (apt-get install busybox-static dash bash): %v", sh.argv[0], err)
		}
	}
	return shells
}

// TestSerialRuleSharedVectors runs mayu's serial rule in its two
// implementations, machine-serial.sh under every shell the scripts use and
// the helper's Go code, on the same fake /sys trees, and checks both give
// the vector's serial, that mayu accepts it, and that mayu refuses each
// placeholder the rule skipped.
func TestSerialRuleSharedVectors(t *testing.T) {
	b, err := os.ReadFile("testdata/serial-vectors.json")
	require.NoError(t, err)
	var vectors []serialVector
	require.NoError(t, json.Unmarshal(b, &vectors))
	require.NotEmpty(t, vectors)

	script := filepath.Join(t.TempDir(), "machine-serial.sh")
	require.NoError(t, os.WriteFile(script, []byte(host.SerialScript), 0o644))
	shells := serialShells(t)

	for _, v := range vectors {
		t.Run(v.Name, func(t *testing.T) {
			sys, _ := hostinfotest.Write(t, t.TempDir(), hostinfotest.System{DMI: v.DMI})

			got, err := hostinfo.New(hostinfo.Config{SysRoot: sys, IPMITool: "-"}).Serial()
			if v.Error {
				require.ErrorIs(t, err, hostinfo.ErrNoSerial, "Go: got %q", got)
			} else {
				require.NoError(t, err, "Go")
				assert.Equal(t, v.Serial, got, "Go")
			}

			for _, sh := range shells {
				out, stderr, code := runSerialScript(t, sh, script, sys)
				if v.Error {
					assert.NotEqual(t, 0, code, "%s: exit status; stdout %q", sh.name, out)
					assert.Empty(t, out, "%s: stdout", sh.name)
					assert.Contains(t, stderr, "machine-serial: no usable serial in "+sys, sh.name)
					continue
				}
				assert.Equal(t, 0, code, "%s: exit status; stderr %q", sh.name, stderr)
				assert.Equal(t, v.Serial+"\n", out, "%s: stdout", sh.name)
			}

			// The server's side of the same rule.
			if !v.Error {
				assert.NoError(t, host.CheckSerial(v.Serial), "mayu must accept the serial the rule gives")
				_, err := host.NormalizeSerial(v.Serial)
				assert.NoError(t, err)
			}
			for _, name := range host.SerialSources() {
				raw, ok := v.DMI[name]
				if !ok {
					continue
				}
				clean := host.CleanSerial(raw)
				if !v.Error && clean == v.Serial {
					break
				}
				assert.True(t, host.IsPlaceholderSerial(clean), "%s %q was skipped, so it must be a placeholder", name, raw)
				assert.ErrorIs(t, host.CheckSerial(clean), host.ErrInvalidSerial, "mayu must refuse %s %q", name, clean)
			}
		})
	}
}

// runSerialScript sources script in sh and runs mayu_machine_serial against
// the fake sysfs root as the scripts do (a plain assignment under set -e),
// returning stdout, stderr and the exit status.
func runSerialScript(t *testing.T, sh serialShell, script, sys string) (string, string, int) {
	t.Helper()
	body := sh.prelude + `
. "$1"
serial=$(mayu_machine_serial)
printf '%s\n' "$serial"
`
	args := append(append([]string{}, sh.argv[1:]...), "-c", body, "sh", script)
	cmd := exec.Command(sh.argv[0], args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "MAYU_SYSFS_ROOT=" + sys, "LC_ALL=C"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "%s did not run", sh.name)
		code = ee.ExitCode()
	}
	if code == 0 {
		// The first-stage script runs under set -E and an ERR trap: one
		// failing command inside the rule, outside a condition, would
		// abort an install that has a serial.
		assert.NotContains(t, stderr.String(), "ERR trap fired", "%s: a command inside the rule failed outside a condition", sh.name)
	}
	return stdout.String(), strings.TrimSpace(stderr.String()), code
}
