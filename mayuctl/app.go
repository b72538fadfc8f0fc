package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"mayu/pkg/auth"
	"mayu/pkg/client"
)

// Exit codes: 1 when the operation failed, 2 when the command line was wrong.
const (
	exitFailure = 1
	exitUsage   = 2
)

// run executes one mayuctl command line and returns the process exit code.
// Every failure ends up here as an error and is printed as exactly one line
// on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	args, err := hoistFlags(app, args)
	if err == nil {
		err = app.RunContext(ctx, args)
	}
	if err == nil {
		return 0
	}
	msg := strings.TrimSpace(err.Error())
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i] // one line, whatever a library put into its message
	}
	// The reason may quote a value mayu got from a machine.
	fmt.Fprintln(stderr, "mayuctl: "+printable(msg))
	var ec cli.ExitCoder
	if errors.As(err, &ec) && ec.ExitCode() != 0 {
		return ec.ExitCode()
	}
	return exitFailure
}

// newApp builds the command-line application. All state lives in the
// returned value, so tests run it as often as they like.
func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "mayuctl",
		Usage: "manage the machines of a mayu cluster",
		UsageText: `mayuctl [global options] command [command options] [arguments...]

Global options may also follow the command, anywhere among its options and
arguments (as in Mayu 0.11): mayuctl list --no-tls. Given twice, the last one
wins, so one after the command beats one before it; an option beats its
$MAYU_ variable.

Examples:
   mayuctl --no-tls list
   mayuctl --host=192.168.2.2 status 0800278e158a-0
   mayuctl boot-complete --host=192.168.2.2 --port=4080 --no-tls --update-versions
   mayuctl set 0800278e158a-0 state configured
   mayuctl --token-file=/var/lib/mayu/.admin-tokens list
   MAYU_HOST=192.168.2.2 MAYU_NO_TLS=true mayuctl list --fields=ip,serial,state`,
		// No --version flag: -v is --verbose, as in Mayu's mayuctl; the
		// version command prints it.
		HideVersion: true,
		// -dv is -d -v, as with Mayu 0.11's mayuctl.
		UseShortOptionHandling: true,
		Writer:                 stdout,
		ErrWriter:              stderr,
		Flags:                  globalFlags(),
		Commands:               commands(),
		OnUsageError:           usageError,
		ExitErrHandler:         func(*cli.Context, error) {}, // run prints and exits
		Action: func(cCtx *cli.Context) error {
			if cCtx.Args().Present() {
				return cli.Exit(fmt.Sprintf("unknown command %q (see 'mayuctl --help')", cCtx.Args().First()), exitUsage)
			}
			return cli.ShowAppHelp(cCtx)
		},
	}
	return app
}

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "host", Value: client.DefaultHost, EnvVars: []string{"MAYU_HOST"},
			Usage: "host name or address of mayu"},
		&cli.IntFlag{Name: "port", Value: client.DefaultPort, EnvVars: []string{"MAYU_PORT"},
			Usage: "HTTP port of mayu"},
		&cli.BoolFlag{Name: "no-tls", EnvVars: []string{"MAYU_NO_TLS"},
			Usage: "talk plain HTTP (for a mayu started with --no-tls)"},
		&cli.StringFlag{Name: "ca-file", EnvVars: []string{"MAYU_CA_FILE"},
			Usage: "PEM file of a CA to trust besides the system's, for mayu's certificate"},
		&cli.BoolFlag{Name: "insecure", EnvVars: []string{"MAYU_INSECURE"},
			Usage: "do not verify mayu's TLS certificate (self-signed test setups only)"},
		&cli.StringFlag{Name: "token", EnvVars: []string{"MAYU_TOKEN"},
			Usage: "bearer token of mayu's admin API (beats --token-file)"},
		&cli.StringFlag{Name: "token-file", Value: defaultTokenFile, EnvVars: []string{"MAYU_TOKEN_FILE"},
			Usage: "file holding the token, or mayu's token file (its first admin credential is used); the default is where mayu --cluster-directory=cluster writes it, and is skipped if missing"},
		&cli.DurationFlag{Name: "timeout", Value: client.DefaultTimeout, EnvVars: []string{"MAYU_TIMEOUT"},
			Usage: "give up on a request after this long"},
		&cli.BoolFlag{Name: "debug", Aliases: []string{"d"}, EnvVars: []string{"MAYU_DEBUG"},
			Usage: "log every request and answer body on stderr"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, EnvVars: []string{"MAYU_VERBOSE"},
			Usage: "log every request on stderr"},
	}
}

func commands() []*cli.Command {
	cmds := []*cli.Command{
		versionCommand(),
		listCommand(),
		statusCommand(),
		setCommand(),
		overrideCommand(),
		markFreshCommand(),
		bootCompleteCommand(),
		eventsCommand(),
		historyCommand(),
	}
	globalHelp := cli.CommandHelpTemplate + globalOptionsHelp(globalFlags())
	for _, c := range cmds {
		c.OnUsageError = usageError
		c.CustomHelpTemplate = globalHelp
	}
	return cmds
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:      "version",
		Usage:     "print mayuctl's version",
		UsageText: "mayuctl version",
		Action: func(cCtx *cli.Context) error {
			if err := wantArgs(cCtx, 0, ""); err != nil {
				return err
			}
			_, err := fmt.Fprintf(cCtx.App.Writer, "mayuctl %s (commit %s)\n", version, commit)
			return err
		},
	}
}

// usageError turns urfave's flag errors (printed with the whole help text by
// default) into one line.
func usageError(cCtx *cli.Context, err error, isSubcommand bool) error {
	where := "mayuctl"
	if isSubcommand && cCtx.Command != nil && cCtx.Command.Name != "" {
		where += " " + cCtx.Command.Name
	}
	return cli.Exit(fmt.Sprintf("%v (see '%s --help')", err, where), exitUsage)
}

// wantArgs checks the number of positional arguments.
func wantArgs(cCtx *cli.Context, n int, names string) error {
	got := cCtx.Args().Len()
	if got == n {
		return nil
	}
	name := cCtx.Command.Name
	switch {
	case n == 0:
		return cli.Exit(fmt.Sprintf("%s: takes no arguments, got %d (see 'mayuctl %s --help')", name, got, name), exitUsage)
	case n == 1:
		return cli.Exit(fmt.Sprintf("%s: want 1 argument %s, got %d (see 'mayuctl %s --help')", name, names, got, name), exitUsage)
	default:
		return cli.Exit(fmt.Sprintf("%s: want %d arguments %s, got %d (see 'mayuctl %s --help')", name, n, names, got, name), exitUsage)
	}
}

// usagef is a wrong value on the command line.
func usagef(format string, a ...any) error {
	return cli.Exit(fmt.Sprintf(format, a...), exitUsage)
}

// newClient builds the admin API client from the global flags.
func newClient(cCtx *cli.Context) (*client.Client, error) { return newMachineClient(cCtx, "") }

// newMachineClient is newClient for a machine reporting about itself: it
// sends machineToken, the machine's credential, with every request (and
// the admin token, if one is given: the machine routes ignore it).
func newMachineClient(cCtx *cli.Context, machineToken string) (*client.Client, error) {
	level := slog.LevelWarn
	if cCtx.Bool("verbose") {
		level = slog.LevelInfo
	}
	if cCtx.Bool("debug") {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(cCtx.App.ErrWriter, &slog.HandlerOptions{Level: level}))
	token, err := adminToken(cCtx)
	if err != nil {
		return nil, err
	}
	c, err := client.New(client.Config{
		Token:        token,
		MachineToken: machineToken,
		Host:         cCtx.String("host"),
		Port:         cCtx.Int("port"),
		NoTLS:        cCtx.Bool("no-tls"),
		CAFile:       cCtx.String("ca-file"),
		Insecure:     cCtx.Bool("insecure"),
		Timeout:      cCtx.Duration("timeout"),
		Logger:       logger,
		UserAgent:    "mayuctl/" + version,
	})
	if err != nil {
		return nil, failure("", err)
	}
	return c, nil
}

// defaultTokenFile is where mayu writes its token file when it runs with
// its default --cluster-directory=cluster from the same directory.
var defaultTokenFile = filepath.Join("cluster", auth.DefaultFileName)

// adminToken is the token to send: --token ($MAYU_TOKEN), else the one in
// --token-file ($MAYU_TOKEN_FILE). A missing file is skipped (mayu
// --no-admin-auth, boot-complete on a machine, an image whose environment
// names the file) unless --token-file named it on the command line, where
// it is a mistake to report.
func adminToken(cCtx *cli.Context) (string, error) {
	if t := strings.TrimSpace(cCtx.String("token")); t != "" {
		return t, nil
	}
	path := cCtx.String("token-file")
	if path == "" {
		return "", nil
	}
	t, err := auth.ClientToken(path)
	switch {
	case err == nil:
		return t, nil
	case errors.Is(err, fs.ErrNotExist) && (!cCtx.IsSet("token-file") || os.Getenv("MAYU_TOKEN_FILE") == path):
		// The default, or the environment's (urfave's IsSet cannot tell
		// it from the command line's).
		return "", nil
	default:
		return "", cli.Exit(fmt.Sprintf("--token-file: %v", strings.TrimPrefix(err.Error(), "auth: ")), exitUsage)
	}
}

// failure turns a client error into the one line an operator reads, with a
// hint where the fix is a flag away.
func failure(what string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "client: ")
	if what != "" {
		msg = what + ": " + msg
	}
	var unknownCA x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	switch {
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		msg += " (mayu runs without TLS: add --no-tls)"
	case errors.As(err, &unknownCA) || errors.As(err, &verify):
		msg += " (trust its CA with --ca-file, or use --insecure for a self-signed test setup)"
	case errors.Is(err, client.ErrUnauthorized):
		msg += " (give mayuctl an admin token: --token, $MAYU_TOKEN or --token-file; mayu writes one to " +
			"<cluster-directory>/" + auth.DefaultFileName + " on its first start)"
	case errors.Is(err, client.ErrForbidden):
		msg += " (this credential may not do that: use an admin token)"
	case errors.Is(err, client.ErrUnreachable) && errors.Is(err, context.DeadlineExceeded):
		msg += " (raise --timeout if mayu is just slow)"
	}
	code := exitFailure
	if errors.Is(err, client.ErrInvalidArgument) {
		code = exitUsage
	}
	return cli.Exit(msg, code)
}

// requestContext is the command's context; the client adds its timeout.
func requestContext(cCtx *cli.Context) context.Context {
	if cCtx.Context != nil {
		return cCtx.Context
	}
	return context.Background()
}
