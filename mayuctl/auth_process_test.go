package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/auth"
	"mayu/pkg/proctest"
)

// TestProcessTokenSources runs the real mayuctl against the real mayu with
// the admin token from each place it may come from, and without one.
func TestProcessTokenSources(t *testing.T) {
	bin := proctest.Build(t)
	dir := t.TempDir()
	// The token file where mayu --cluster-directory=cluster puts it, so
	// that mayuctl's default finds it from dir.
	d := proctest.StartMayu(t, bin.Mayu, proctest.Flags{Dir: dir, ConfigText: daemonConfig,
		TokenFile: filepath.Join(dir, "cluster", auth.DefaultFileName)}, "--no-tls")
	d.WaitReady()
	admin, viewer := proctest.Tokens(t, d.Flags.TokenFile)
	own := filepath.Join(t.TempDir(), "my-token")
	require.NoError(t, os.WriteFile(own, []byte(admin+"\n"), 0o600))

	run := func(env []string, args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		all := append([]string{"--no-tls", "--host=127.0.0.1", "--port=" + strconv.Itoa(d.Flags.Port)}, args...)
		cmd := exec.CommandContext(ctx, bin.Mayuctl, all...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			require.NoError(t, err)
		}
		return result{out.String(), errOut.String(), code}
	}
	noDefault := "--token-file=" // an empty path: no file at all

	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"--token", nil, []string{noDefault, "--token=" + admin}},
		{"$MAYU_TOKEN", []string{"MAYU_TOKEN=" + admin}, []string{noDefault}},
		{"--token-file, mayu's file", nil, []string{"--token-file=" + d.Flags.TokenFile}},
		{"--token-file, a bare token", nil, []string{"--token-file=" + own}},
		{"$MAYU_TOKEN_FILE", []string{"MAYU_TOKEN_FILE=" + own}, nil},
		{"the default file", nil, nil},
		{"--token beats a wrong file", nil, []string{"--token-file=" + filepath.Join(dir, "config.yaml"), "--token=" + admin}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(tc.env, append(tc.args, "set", "s-1", "providerid", "r7")...)
			if !assert.Contains(t, r.stderr, "host not found", "past the credential check") {
				return
			}
			r = run(tc.env, append(tc.args, "list", "--no-legend")...)
			assert.Equal(t, 0, r.code, r.stderr)
			assert.Empty(t, r.stdout)
		})
	}

	r := run(nil, noDefault, "list")
	assert.Equal(t, 1, r.code)
	assert.Equal(t, "mayuctl: list: mayu answered 401 Unauthorized: the admin API needs a credential (Authorization: Bearer <token>) "+
		"(give mayuctl an admin token: --token, $MAYU_TOKEN or --token-file; mayu writes one to <cluster-directory>/.admin-tokens on its first start)\n", r.stderr)
	r = run([]string{"MAYU_TOKEN=" + strings.Repeat("z", 43)}, "list")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "401 Unauthorized: the admin API does not know this token")

	r = run(nil, "--token="+viewer, "list", "--no-legend")
	assert.Equal(t, 0, r.code, "a read-only token lists: %s", r.stderr)
	r = run(nil, "--token="+viewer, "mark-fresh", "s-1")
	assert.Equal(t, 1, r.code)
	assert.Equal(t, "mayuctl: mark-fresh s-1: mayu answered 403 Forbidden: read-only:viewer may only read: this change needs an admin credential "+
		"(this credential may not do that: use an admin token)\n", r.stderr)

	r = run(nil, "--token-file="+filepath.Join(dir, "nonexistent"), "list")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "mayuctl: --token-file: open "+filepath.Join(dir, "nonexistent"))
	// The same path from the environment (an image's ENV, for a mayu that
	// may run --no-admin-auth) is skipped: the answer says what is missing.
	r = run([]string{"MAYU_TOKEN_FILE=" + filepath.Join(dir, "nonexistent")}, "list")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "401 Unauthorized")
	assert.NotContains(t, r.stderr+r.stdout, admin, "a token is never printed")
}
