package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"mayu/pkg/proctest"
)

// TestProcessMemoryLimit: without GOMEMLIMIT mayu sets a limit from its
// live heap and says so; with it, the environment's limit (a size or off)
// is the one the log names and mayu leaves it alone.
func TestProcessMemoryLimit(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"", `msg="memory limit follows the live heap (set GOMEMLIMIT to fix one)" limit_mib=`},
		{"GOMEMLIMIT=300MiB", `msg="memory limit from GOMEMLIMIT" limit_mib=300`},
		{"GOMEMLIMIT=off", `msg="memory limit: none (GOMEMLIMIT=off)"`},
	} {
		t.Run(tc.env, func(t *testing.T) {
			dir := t.TempDir()
			f, args := proctest.MayuArgs(t, loopFlags(dir, 0), "--no-tls")
			cmd := exec.Command(mayuBinary(t), args...)
			var env []string
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GOMEMLIMIT=") {
					env = append(env, kv)
				}
			}
			if tc.env != "" {
				env = append(env, tc.env)
			}
			cmd.Env = env
			d := proctest.StartDaemon(t, cmd, "http://127.0.0.1:"+strconv.Itoa(f.Port))
			d.WaitReady()
			waitOutput(t, d, "mayu started")
			assert.Contains(t, d.Out.String(), tc.want)
			assert.NoError(t, d.Stop())
		})
	}
}
