package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"mayu/pkg/client"
)

func bootCompleteCommand() *cli.Command {
	return &cli.Command{
		Name:      "boot-complete",
		Usage:     "report that this installed machine booted (run on the machine itself)",
		UsageText: "mayuctl boot-complete [--update-versions]",
		Description: `Reads SERIAL from /etc/mayu-env and tells mayu the machine is running;
mayu stamps its LastBoot. The machine's credential, MAYU_MACHINE_TOKEN in
/etc/mayu-env (written by the first-stage script), goes with the request. With --update-versions it also reports the
installed versions: VERSION (CoreOS) from /etc/os-release, MAYU_VERSION from
/etc/mayu-env, and DOCKER_VERSION, ETCD_VERSION, FLEET_VERSION,
YOCHU_VERSION, RKT_VERSION, K8S_VERSION from /etc/yochu-env. A missing
/etc/os-release or /etc/yochu-env (no Yochu installed) leaves those versions
empty; a missing /etc/mayu-env is an error.

Examples:
   mayuctl --host=192.168.2.2 --no-tls boot-complete --update-versions
   mayuctl --host=192.168.2.2 --ca-file=/etc/ssl/certs/mayu-ca.pem boot-complete
   mayuctl boot-complete --mayu-env=/mnt/root/etc/mayu-env`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "update-versions", Usage: "also report the installed software versions"},
			&cli.StringFlag{Name: "mayu-env", Value: "/etc/mayu-env", EnvVars: []string{"MAYU_ENV_FILE"},
				Usage: "file with SERIAL=, MAYU_VERSION= and MAYU_MACHINE_TOKEN=, written by the installer"},
			&cli.StringFlag{Name: "os-release", Value: "/etc/os-release", EnvVars: []string{"MAYU_OS_RELEASE_FILE"},
				Usage: "os-release file with VERSION="},
			&cli.StringFlag{Name: "yochu-env", Value: "/etc/yochu-env", EnvVars: []string{"MAYU_YOCHU_ENV_FILE"},
				Usage: "file with the *_VERSION= lines Yochu writes"},
		},
		Action: func(cCtx *cli.Context) error {
			if err := wantArgs(cCtx, 0, ""); err != nil {
				return err
			}
			mayuEnv, err := readEnvFile(cCtx.String("mayu-env"))
			if err != nil {
				return cli.Exit("boot-complete: "+err.Error(), exitFailure)
			}
			serial := mayuEnv["SERIAL"]
			if serial == "" {
				return cli.Exit(fmt.Sprintf("boot-complete: no SERIAL= in %s", cCtx.String("mayu-env")), exitFailure)
			}
			var v client.Versions
			if cCtx.Bool("update-versions") {
				osRelease, err := readOptionalEnvFile(cCtx.String("os-release"))
				if err != nil {
					return cli.Exit("boot-complete: "+err.Error(), exitFailure)
				}
				yochuEnv, err := readOptionalEnvFile(cCtx.String("yochu-env"))
				if err != nil {
					return cli.Exit("boot-complete: "+err.Error(), exitFailure)
				}
				v = client.Versions{
					CoreOSVersion: osRelease["VERSION"],
					MayuVersion:   mayuEnv["MAYU_VERSION"],
					DockerVersion: yochuEnv["DOCKER_VERSION"],
					EtcdVersion:   yochuEnv["ETCD_VERSION"],
					FleetVersion:  yochuEnv["FLEET_VERSION"],
					YochuVersion:  yochuEnv["YOCHU_VERSION"],
					RktVersion:    yochuEnv["RKT_VERSION"],
					K8sVersion:    yochuEnv["K8S_VERSION"],
				}
			}
			// The credential the installer left, when mayu gave one.
			c, err := newMachineClient(cCtx, mayuEnv["MAYU_MACHINE_TOKEN"])
			if err != nil {
				return err
			}
			if err := c.BootComplete(requestContext(cCtx), serial, v); err != nil {
				return failure("boot-complete "+serial, err)
			}
			return nil
		},
	}
}

// maxEnvFile bounds what is read from an env file; these are a few lines.
const maxEnvFile = 1 << 20

// readEnvFile reads a KEY=value file the way systemd's EnvironmentFile and
// os-release(5) write them: blank lines and # comments skipped, an optional
// "export " prefix, values optionally in single or double quotes.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), maxEnvFile)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return nil, fmt.Errorf("%s line %d: want KEY=value", path, n)
		}
		env[key] = unquote(strings.TrimSpace(value))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return env, nil
}

// readOptionalEnvFile is readEnvFile for a file that may be absent.
func readOptionalEnvFile(path string) (map[string]string, error) {
	env, err := readEnvFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	return env, err
}

func unquote(v string) string {
	if len(v) >= 2 {
		switch {
		case v[0] == '"' && v[len(v)-1] == '"':
			if s, err := strconv.Unquote(v); err == nil {
				return s
			}
			return v[1 : len(v)-1]
		case v[0] == '\'' && v[len(v)-1] == '\'':
			return v[1 : len(v)-1]
		}
	}
	return v
}
