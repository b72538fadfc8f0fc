package main

// Drop-in upgrade from Mayu 0.11: its mayuctl took global options anywhere
// on the line, and its final templates run
// `mayuctl boot-complete --host=<h> --port=<p> --no-tls --update-versions`.

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"

	"mayu/pkg/client"
	"mayu/pkg/client/clienttest"
	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/pkg/store"
)

// upgradeCase is one command with its own arguments and options.
type upgradeCase struct {
	name    string
	args    []string // after the command name
	prepare func(t *testing.T, f fakeMayu)
}

func upgradeCases(t *testing.T) []upgradeCase {
	dir := t.TempDir()
	mayuEnv := filepath.Join(dir, "mayu-env")
	require.NoError(t, os.WriteFile(mayuEnv, []byte("SERIAL=s-0042\nMAYU_VERSION=0.11.1\n"), 0o644))
	osRelease := filepath.Join(dir, "os-release")
	require.NoError(t, os.WriteFile(osRelease, []byte("ID=coreos\nVERSION=1068.6.0\n"), 0o644))
	installed := func(t *testing.T, f fakeMayu) {
		_, err := f.store.Update("s-0042", store.Step{Message: "installed", Apply: func(h *host.Host) error {
			h.State = host.Installed
			return nil
		}})
		require.NoError(t, err)
	}
	const s = "0800278e158a-0"
	return []upgradeCase{
		{name: "version"},
		{name: "list"},
		{name: "list", args: []string{"--fields=serial,state", "--no-legend"}},
		{name: "status", args: []string{s}},
		{name: "set", args: []string{s, "state", "configured"}},
		{name: "set", args: []string{s, "metadata", "role-core=true,rack=7"}},
		{name: "override", args: []string{s, "CoreOSVersion", "1122.2.0"}},
		{name: "mark-fresh", args: []string{s}},
		{name: "boot-complete", args: []string{"--update-versions", "--mayu-env=" + mayuEnv, "--os-release=" + osRelease,
			"--yochu-env=" + filepath.Join(dir, "absent")}, prepare: installed},
	}
}

// orders places the global options gf (each "--name=value") around the
// command cmd and its arguments in every way Mayu 0.11 accepted.
func orders(gf []string, cmd string, args []string) map[string][]string {
	after := append(append([]string{cmd}, args...), gf...)
	// Separate values ("--host 127.0.0.1"), one option after each argument.
	var separate []string
	for _, f := range gf {
		name, value, _ := strings.Cut(f, "=")
		if value == "true" {
			separate = append(separate, name) // bool flags take no separate value
		} else {
			separate = append(separate, name, value)
		}
	}
	inter := []string{cmd}
	rest := args
	for i := 0; i < len(separate); i++ {
		inter = append(inter, separate[i])
		if i+1 < len(separate) && !strings.HasPrefix(separate[i+1], "-") {
			i++
			inter = append(inter, separate[i])
		}
		if len(rest) > 0 {
			inter = append(inter, rest[0])
			rest = rest[1:]
		}
	}
	inter = append(inter, rest...)
	split := append(append(append([]string{gf[0]}, cmd), args...), gf[1:]...)
	return map[string][]string{"after the command (0.11 templates)": after, "among the arguments": inter, "split around the command": split}
}

// TestGlobalOptionsAfterTheCommand runs every command with the global
// options after it, as 0.11's templates and scripts do, and checks it does
// exactly what the same line with the options in front does.
func TestGlobalOptionsAfterTheCommand(t *testing.T) {
	type outcome struct {
		r    result
		reqs []clienttest.Request
	}
	runCase := func(t *testing.T, tc upgradeCase, line func(f fakeMayu) []string) outcome {
		f := startFake(t, fixtureHosts()...)
		if tc.prepare != nil {
			tc.prepare(t, f)
		}
		return outcome{mayuctl(t, line(f)...), f.fake.Requests()}
	}
	for _, tc := range upgradeCases(t) {
		t.Run(tc.name+" "+strings.Join(tc.args, " "), func(t *testing.T) {
			want := runCase(t, tc, func(f fakeMayu) []string { return f.args(append([]string{tc.name}, tc.args...)...) })
			require.Equal(t, 0, want.r.code, want.r.stderr)
			if tc.name != "version" {
				require.NotEmpty(t, want.reqs, "the command talks to mayu")
			}
			for order := range orders([]string{"--no-tls=true", "--host=x", "--port=x", "--token=x"}, tc.name, tc.args) {
				t.Run(order, func(t *testing.T) {
					got := runCase(t, tc, func(f fakeMayu) []string {
						host, port := strings.TrimPrefix(f.flags[1], "--host="), f.port()
						gf := []string{"--no-tls=true", "--host=" + host, "--port=" + port, "--token=" + clienttest.AdminToken}
						return orders(gf, tc.name, tc.args)[order]
					})
					assert.Equal(t, want.r, got.r)
					assert.Equal(t, want.reqs, got.reqs)
				})
			}
		})
	}
}

// TestFinalTemplateLine is the exact line of 0.11's final cloud-config,
// with the env files the installer wrote.
func TestFinalTemplateLine(t *testing.T) {
	f := startFake(t, fixtureHosts()...)
	_, err := f.store.Update("s-0042", store.Step{Message: "installed", Apply: func(h *host.Host) error {
		h.State = host.Installed
		return nil
	}})
	require.NoError(t, err)
	dir := t.TempDir()
	mayuEnv := filepath.Join(dir, "mayu-env")
	require.NoError(t, os.WriteFile(mayuEnv, []byte("SERIAL=s-0042\nMAYU_VERSION=0.11.1\n"), 0o644))
	t.Setenv("MAYU_ENV_FILE", mayuEnv)
	t.Setenv("MAYU_OS_RELEASE_FILE", filepath.Join(dir, "absent"))
	t.Setenv("MAYU_YOCHU_ENV_FILE", filepath.Join(dir, "absent"))

	r := mayuctl(t, "boot-complete", "--host=127.0.0.1", "--port="+f.port(), "--no-tls", "--update-versions")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stdout+r.stderr)
	h, err := f.store.Get("s-0042")
	require.NoError(t, err)
	assert.Equal(t, host.Running, h.State)
	assert.Equal(t, "0.11.1", h.MayuVersion, "--update-versions after the global options still counts")
}

// TestEveryGlobalOptionMoves checks the mechanism for every option the app
// defines, in every spelling, not just the ones the other tests use.
func TestEveryGlobalOptionMoves(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	require.NotEmpty(t, app.Flags)
	for _, f := range app.Flags {
		takesValue := f.(cli.DocGenerationFlag).TakesValue()
		for _, n := range f.Names() {
			spellings := [][]string{{"-" + n, "v"}, {"--" + n, "v"}, {"-" + n + "=v"}, {"--" + n + "=v"}}
			if !takesValue {
				spellings = [][]string{{"-" + n}, {"--" + n}, {"-" + n + "=true"}, {"--" + n + "=false"}}
			}
			for _, sp := range spellings {
				// Among set's arguments, next to one of its options.
				args := append(append([]string{"mayuctl", "--timeout=5s", "set", "s1"}, sp...), "state", "--help", "running")
				want := append(append([]string{"mayuctl", "--timeout=5s"}, sp...), "set", "--help")
				assert.Equal(t, want, hoisted(t, app, args), "%v", sp)

				args = append(append([]string{"mayuctl", "list", "--fields=ip"}, sp...), "--no-legend")
				want = append(append([]string{"mayuctl"}, sp...), "list", "--fields=ip", "--no-legend")
				assert.Equal(t, want, hoisted(t, app, args), "%v", sp)
			}
		}
	}
}

func TestHoistLeavesTheRestAlone(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	for _, tc := range []struct{ in, want []string }{
		{[]string{"mayuctl"}, []string{"mayuctl"}},
		{[]string{"mayuctl", "--no-tls"}, []string{"mayuctl", "--no-tls"}},
		// A global option's separate value is not the command.
		{[]string{"mayuctl", "--host", "list", "status", "x", "--port", "1"}, []string{"mayuctl", "--host", "list", "--port", "1", "status", "x"}},
		// Unknown flags stay where they are, for urfave to report.
		{[]string{"mayuctl", "--colour", "list", "--no-tls"}, []string{"mayuctl", "--colour", "list", "--no-tls"}},
		{[]string{"mayuctl", "list", "--colour", "--no-tls"}, []string{"mayuctl", "--no-tls", "list", "--colour"}},
		// A negative number is an argument.
		{[]string{"mayuctl", "set", "s", "cabinet", "-1", "--no-tls"}, []string{"mayuctl", "--no-tls", "set", "s", "cabinet", "-1"}},
		// Everything after "--" is an argument: "--" goes where Go's flag
		// package takes it as the end of the options.
		{[]string{"mayuctl", "set", "s", "providerid", "--", "--no-tls"}, []string{"mayuctl", "set", "--", "s", "providerid", "--no-tls"}},
		{[]string{"mayuctl", "set", "s", "--no-tls", "providerid", "--", "-x"}, []string{"mayuctl", "--no-tls", "set", "--", "s", "providerid", "-x"}},
		// One-letter switches together.
		{[]string{"mayuctl", "list", "-dv"}, []string{"mayuctl", "-dv", "list"}},
		{[]string{"mayuctl", "list", "-dx"}, []string{"mayuctl", "list", "-dx"}},
		{[]string{"mayuctl", "list", "--dv"}, []string{"mayuctl", "list", "--dv"}},
		{[]string{"mayuctl", "--", "list", "--no-tls"}, []string{"mayuctl", "--", "list", "--no-tls"}},
		// Not flags: "-", "---x".
		{[]string{"mayuctl", "set", "s", "providerid", "-", "---no-tls"}, []string{"mayuctl", "set", "s", "providerid", "-", "---no-tls"}},
		// Unknown commands and help get their global options moved too.
		{[]string{"mayuctl", "lsit", "--no-tls"}, []string{"mayuctl", "--no-tls", "lsit"}},
		{[]string{"mayuctl", "help", "list", "-v"}, []string{"mayuctl", "-v", "help", "list"}},
	} {
		got, err := hoistFlags(app, tc.in)
		require.NoError(t, err, "%v", tc.in)
		assert.Equal(t, tc.want, got, "%v", tc.in)
	}
	// A trailing option without its value would take the command name.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--host"}, "mayuctl: flag needs an argument: -host (see 'mayuctl --help')"}, // urfave's own
		{[]string{"list", "--host"}, "mayuctl: flag needs an argument: -host (see 'mayuctl --help')"},
		{[]string{"status", "s1", "-port"}, "mayuctl: flag needs an argument: -port (see 'mayuctl --help')"},
		{[]string{"list", "--fields"}, "mayuctl: flag needs an argument: -fields (see 'mayuctl list --help')"},
	} {
		r := mayuctl(t, tc.args...)
		assert.Equal(t, 2, r.code, tc.args)
		assert.Equal(t, tc.want+"\n", r.stderr, tc.args)
		assert.Empty(t, r.stdout, tc.args)
	}
}

func TestArgumentsAfterDashes(t *testing.T) {
	f := startFake(t, fixtureHosts()...)
	const s = "0800278e158a-0"
	r := mayuctl(t, "set", s, "providerid", "--no-tls", "--host=127.0.0.1", "--port="+f.port(), "--token", clienttest.AdminToken, "--", "-rack-7")
	require.Equal(t, 0, r.code, r.stderr)
	h, err := f.store.Get(s)
	require.NoError(t, err)
	assert.Equal(t, "-rack-7", h.ProviderId)
}

func TestCombinedSwitches(t *testing.T) {
	f := startFake(t, seedHosts()...)
	for _, args := range [][]string{f.args("-dv", "list"), f.args("list", "-vd"), append([]string{"list"}, append(f.flags, "-dv")...)} {
		r := mayuctl(t, args...)
		require.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
		assert.Equal(t, seedList, r.stdout, args)
		assert.Contains(t, r.stderr, "url=http://127.0.0.1:"+f.port()+"/admin/hosts", args)
		assert.Contains(t, r.stderr, "level=DEBUG", args)
	}
	r := mayuctl(t, f.args("list", "-dx")...)
	assert.Equal(t, 2, r.code)
	assert.Equal(t, "mayuctl: flag provided but not defined: -dx (see 'mayuctl list --help')\n", r.stderr)
}

// TestNoFlagNameClash keeps hoisting unambiguous: no command defines an
// option named like a global one.
func TestNoFlagNameClash(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	global := map[string]bool{}
	for _, f := range app.Flags {
		for _, n := range f.Names() {
			global[n] = true
		}
	}
	for _, c := range app.Commands {
		for _, f := range c.Flags {
			for _, n := range f.Names() {
				assert.False(t, global[n], "%s --%s shadows the global option", c.Name, n)
			}
		}
	}
}

func TestGlobalOptionPrecedence(t *testing.T) {
	f := startFake(t, seedHosts()...)
	port := f.port()
	t.Setenv("MAYU_TOKEN", clienttest.AdminToken)
	// The later option wins: after the command beats before it.
	r := mayuctl(t, "--no-tls", "--host=127.0.0.1", "--port=1", "list", "--port="+port)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, seedList, r.stdout)
	r = mayuctl(t, "--no-tls", "--host=127.0.0.1", "--port="+port, "list", "--port=1")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "cannot reach mayu at http://127.0.0.1:1:")
	// An option after the command beats its environment variable.
	t.Setenv("MAYU_PORT", "1")
	t.Setenv("MAYU_HOST", "127.0.0.1")
	r = mayuctl(t, "list", "--no-tls", "--port", port)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, seedList, r.stdout)
	t.Setenv("MAYU_NO_TLS", "true")
	r = mayuctl(t, "list", "--no-tls=false", "--port", port)
	assert.Equal(t, 1, r.code, "--no-tls=false after the command beats MAYU_NO_TLS")
	assert.Contains(t, r.stderr, "https://127.0.0.1:"+port)
}

func TestHelpNamesGlobalOptions(t *testing.T) {
	r := mayuctl(t, "--help")
	require.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "Global options may also follow the command")
	for _, cmd := range []string{"version", "list", "status", "set", "override", "mark-fresh", "boot-complete"} {
		for _, args := range [][]string{{cmd, "--help"}, {"help", cmd}, {cmd, "--no-tls", "--help"}} {
			r := mayuctl(t, args...)
			require.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
			assert.Contains(t, r.stdout, "USAGE:\n   mayuctl "+cmd, args)
			assert.Contains(t, r.stdout, "GLOBAL OPTIONS (before or after the command, see 'mayuctl --help'):\n"+
				"   --host, --port, --no-tls, --ca-file, --insecure, --token, --token-file, --timeout, --debug/-d, --verbose/-v\n", args)
		}
	}
	// --help among a command's arguments explains the command.
	r = mayuctl(t, "set", "0800278e158a-0", "state", "--help")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "USAGE:\n   mayuctl set <serial> <key> <value>")
}

// TestProcessUpgradeFrom011 runs the real mayuctl binary against the real
// mayu the way a machine installed with 0.11's templates and an operator's
// 0.11 scripts do.
func TestProcessUpgradeFrom011(t *testing.T) {
	bin := proctest.Build(t)
	d := startMayu(t, bin, t.TempDir(), nil)
	port := strconv.Itoa(d.Flags.Port)
	const serial = "0800278e158a-0"
	d.register(t, bin, "0800278e158a 0", "08:00:27:8e:15:8a")
	c, err := client.New(client.Config{BaseURL: d.Base})
	require.NoError(t, err)
	require.NoError(t, c.SetInstalled(context.Background(), serial))

	// The files the installer leaves on the machine.
	etc := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(etc, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	machineEnv := []string{
		"MAYU_ENV_FILE=" + write("mayu-env", "SERIAL="+serial+"\nMAYU_VERSION=0.11.1\n"),
		"MAYU_OS_RELEASE_FILE=" + write("os-release", "ID=coreos\nVERSION=1068.6.0\n"),
		"MAYU_YOCHU_ENV_FILE=" + write("yochu-env", "DOCKER_VERSION=1.10.3\nYOCHU_VERSION=0.19.1\n"),
	}
	r := runBinary(t, bin.Mayuctl, machineEnv,
		"boot-complete", "--host=127.0.0.1", "--port="+port, "--no-tls", "--update-versions")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stdout+r.stderr)
	h := d.Hosts()[serial]
	assert.Equal(t, host.Running, h.State, "the machine reaches running")
	assert.Equal(t, "1068.6.0", h.CoreOSVersion)
	assert.Equal(t, "0.19.1", h.YochuVersion)
	assert.Equal(t, "0.11.1", h.MayuVersion)
	assert.False(t, h.LastBoot.IsZero())

	// An operator's scripts: the address from the environment, --no-tls
	// after the command. The admin API wants a credential now: one more
	// variable (see README, "What is different").
	opEnv := []string{"MAYU_HOST=127.0.0.1", "MAYU_PORT=" + port, "MAYU_TOKEN=" + d.Token}
	r = runBinary(t, bin.Mayuctl, opEnv, "list", "--no-tls")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 2, r.stdout)
	assert.Contains(t, lines[1], serial)
	assert.Contains(t, lines[1], `"running"`)

	for _, args := range [][]string{
		{"status", serial, "--no-tls"},
		{"set", serial, "--no-tls", "providerid", "rack-7/u12"},
		{"override", serial, "yochu_version", "0.19.2", "--no-tls"},
		{"set", serial, "state", "configured", "--no-tls", "-v"},
	} {
		r = runBinary(t, bin.Mayuctl, opEnv, args...)
		require.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
	}
	h = d.Hosts()[serial]
	assert.Equal(t, "rack-7/u12", h.ProviderId)
	assert.Equal(t, "0.19.2", h.Overrides["yochu_version"])
	assert.Equal(t, host.Configured, h.State)
	assert.Contains(t, r.stderr, "/admin/host/"+serial+"/set_state", "-v after the command logs the request")
}

func hoisted(t *testing.T, app *cli.App, args []string) []string {
	t.Helper()
	out, err := hoistFlags(app, args)
	require.NoError(t, err, "%v", args)
	return out
}
