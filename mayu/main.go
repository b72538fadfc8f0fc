// Command mayu is the provisioning daemon: it runs dnsmasq for DHCP, PXE and
// TFTP, and serves the boot scripts, images, final configs, etcd discovery
// and the admin API over HTTP.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"mayu/pkg/auth"
	"mayu/pkg/discovery"
	"mayu/pkg/machineauth"
)

// Set with -ldflags -X at build time.
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	app := newApp(os.Stdout, os.Stderr)
	if err := app.Run(os.Args); err != nil {
		// cli.Exit errors have printed themselves.
		if _, ok := err.(cli.ExitCoder); !ok {
			fmt.Fprintln(os.Stderr, "mayu:", err)
		}
		os.Exit(1)
	}
}

// newApp builds the command line: every flag of Mayu 0.11 with its name and
// default, each also settable as MAYU_<NAME> in the environment.
func newApp(stdout, stderr io.Writer) *cli.App {
	env := func(name string) []string { return []string{"MAYU_" + envName(name)} }
	return &cli.App{
		Name:        "mayu",
		Usage:       "provision bare-metal machines over PXE",
		Version:     version,
		HideVersion: true,
		Writer:      stdout,
		ErrWriter:   stderr,
		Commands:    []*cli.Command{migrateCommand(stdout, env)},
		Flags: append(append([]cli.Flag{
			&cli.BoolFlag{Name: "version", Usage: "print the version and exit"},
			&cli.StringFlag{Name: "config", Value: "/etc/mayu/config.yaml", Usage: "configuration file", EnvVars: env("config")},
			&cli.StringFlag{Name: "cluster-directory", Value: "cluster", Usage: "cluster state directory (a git repository)", EnvVars: env("cluster-directory")},
			&cli.BoolFlag{Name: "show-templates", Usage: "render the final templates for a placeholder host, validate, print and exit", EnvVars: env("show-templates")},
			&cli.BoolFlag{Name: "no-git", Usage: "do not commit changes of the cluster directory to git", EnvVars: env("no-git")},
			&cli.BoolFlag{Name: "no-tls", Usage: "serve plain HTTP", EnvVars: env("no-tls")},
			&cli.StringFlag{Name: "tls-cert-file", Usage: "TLS certificate (required unless --no-tls)", EnvVars: env("tls-cert-file")},
			&cli.StringFlag{Name: "tls-key-file", Usage: "TLS key (required unless --no-tls)", EnvVars: env("tls-key-file")},
			&cli.StringFlag{Name: "tftproot", Value: "./tftproot", Usage: "TFTP root directory", EnvVars: env("tftproot")},
			&cli.StringFlag{Name: "yochu-path", Value: "./yochu", Usage: "directory served under /yochu", EnvVars: env("yochu-path")},
			&cli.StringFlag{Name: "static-html-path", Value: "./static_html", Usage: "directory served under /", EnvVars: env("static-html-path")},
			&cli.StringFlag{Name: "first-stage-script", Value: "./templates/first_stage_script.sh", Usage: "install script template", EnvVars: env("first-stage-script")},
			&cli.StringFlag{Name: "last-stage-cloudconfig", Value: "./templates/last_stage_cloudconfig.yaml", Usage: "final cloud-config template", EnvVars: env("last-stage-cloudconfig")},
			&cli.StringFlag{Name: "ignition-config", Value: "./templates/ignition/gs_install.yaml", Usage: "final Ignition template (YAML)", EnvVars: env("ignition-config")},
			&cli.BoolFlag{Name: "use-ignition", Usage: "serve Ignition instead of cloud-config", EnvVars: env("use-ignition")},
			&cli.StringFlag{Name: "dnsmasq-template", Value: "./templates/dnsmasq_template.conf", Usage: "dnsmasq configuration template", EnvVars: env("dnsmasq-template")},
			&cli.StringFlag{Name: "template-snippets", Value: "./template_snippets/cloudconfig", Usage: "snippets directory (./template_snippets/ignition with --use-ignition)", EnvVars: env("template-snippets")},
			&cli.StringFlag{Name: "dnsmasq", Value: "/usr/sbin/dnsmasq", Usage: "dnsmasq binary", EnvVars: env("dnsmasq")},
			&cli.BoolFlag{Name: "no-dnsmasq", Usage: "do not run dnsmasq (DHCP/PXE/TFTP come from elsewhere)", EnvVars: env("no-dnsmasq")},
			&cli.StringFlag{Name: "runtime-dir", Usage: "directory for dnsmasq's rendered config, hosts file and leases (default /run/mayu as root, else a temporary directory)", EnvVars: env("runtime-dir")},
			&cli.StringFlag{Name: "images-cache-dir", Value: "./images", Usage: "OS images directory", EnvVars: env("images-cache-dir")},
			&cli.IntFlag{Name: "http-port", Value: 4080, Usage: "HTTP(S) port", EnvVars: env("http-port")},
			&cli.StringFlag{Name: "http-bind-address", Value: "0.0.0.0", Usage: "HTTP(S) bind address", EnvVars: env("http-bind-address")},
			&cli.BoolFlag{Name: "use-internal-etcd-discovery", Value: true, Usage: "serve the etcd discovery protocol under /etcd", EnvVars: env("use-internal-etcd-discovery")},
			&cli.IntFlag{Name: "etcd-quorum-size", Value: 3, Usage: "default size of new etcd discovery tokens", EnvVars: env("etcd-quorum-size")},
			&cli.StringFlag{Name: "etcd-discovery", Usage: "external etcd discovery base URL (exclusive with the internal one)", EnvVars: env("etcd-discovery")},
			&cli.StringFlag{Name: "etcd-endpoint", Value: "127.0.0.1:2379", Usage: "when given explicitly: keep discovery tokens in this etcd's v2 keys API and proxy /etcd to it", EnvVars: env("etcd-endpoint")},
			// Where Mayu 0.11 kept its registries by default: imported once on a first start (tests point it elsewhere; "" skips it).
			&cli.StringFlag{Name: "legacy-etcd-endpoint", Value: discovery.LegacyEtcdEndpoint, Hidden: true, EnvVars: env("legacy-etcd-endpoint")},
			&cli.StringFlag{Name: "machine-auth", Value: string(machineauth.ModeLease), EnvVars: env("machine-auth"),
				Usage: "how machines prove who they are on machine routes: lease (their DHCP lease, address or credential), credential (the credential only; needs the shipped templates) or off (anyone may act as any machine, as Mayu 0.11)"},
			&cli.StringFlag{Name: "dhcp-leases-file", EnvVars: env("dhcp-leases-file"),
				Usage: "dnsmasq lease file that binds addresses to MACs (default: the one of the dnsmasq mayu runs; none with --no-dnsmasq)"},
			&cli.IntFlag{Name: "anonymous-limit", Value: 30, EnvVars: env("anonymous-limit"),
				Usage: "registrations of unknown serials and PUT /etcd/new allowed per source address and minute; 0: no limit"},
			&cli.StringSliceFlag{Name: "etcd-member-sources", EnvVars: env("etcd-member-sources"),
				Usage: "addresses or CIDR networks that may register etcd discovery members besides provisioned machines (0.0.0.0/0: any)"},
			&cli.IntFlag{Name: "boot-http-port", EnvVars: env("boot-http-port"),
				Usage: "also serve the iPXE boot script, PXE kernel and initrd over plain HTTP on this port (for an iPXE that cannot check mayu's certificate); 0: off"},
			&cli.StringFlag{Name: "tls-ca-file", EnvVars: env("tls-ca-file"),
				Usage: "PEM bundle machines trust mayu's certificate by (default: the certificate of --tls-cert-file itself)"},
			&cli.StringFlag{Name: "admin-token-file", Usage: "bearer tokens of the admin API, one \"<name> <admin|read-only> <token>\" per line, mode 0600; created with one admin token if missing (default <cluster-directory>/" + auth.DefaultFileName + ")", EnvVars: env("admin-token-file")},
			&cli.StringFlag{Name: "client-ca-file", Usage: "PEM CA bundle: a client certificate it signed is an admin credential (read-only with OU=read-only); needs TLS", EnvVars: env("client-ca-file")},
			&cli.BoolFlag{Name: "static-index", Usage: "serve /index.html from --static-html-path as Mayu 0.11 did (an operator's own page); the built-in dashboard stays at /dashboard.html", EnvVars: env("static-index")},
			&cli.BoolFlag{Name: "metrics-no-auth", Usage: "serve GET /metrics to anyone who reaches the port (a Prometheus without a token); the admin API keeps its credential", EnvVars: env("metrics-no-auth")},
			&cli.BoolFlag{Name: "no-admin-auth", Usage: "serve the admin API to anyone, as Mayu 0.11 did (insecure; warns at every start)", EnvVars: env("no-admin-auth")},
			&cli.StringSliceFlag{Name: "trusted-proxies", Usage: "addresses or CIDRs of reverse proxies whose X-Forwarded-For is believed (comma-separated)", EnvVars: env("trusted-proxies")},
			&cli.StringSliceFlag{Name: "allowed-hosts", Usage: "names or addresses a request's Host header may carry besides this machine's addresses, localhost, network.bind_addr and the host of templates_env.mayu_http_endpoint (comma-separated)", EnvVars: env("allowed-hosts")},
			&cli.DurationFlag{Name: "shutdown-timeout", Value: defaultShutdownTimeout, Usage: "how long in-flight requests get to finish on SIGTERM", EnvVars: env("shutdown-timeout")},
		}, storeFlags(env, true)...), []cli.Flag{
			&cli.BoolFlag{Name: "debug", Aliases: []string{"d"}, Usage: "debug logging", EnvVars: env("debug")},
			&cli.IntFlag{Name: "v", Usage: "log verbosity (glog style; 1 and above log every request)", EnvVars: env("verbosity")},
		}...),
		Action: func(c *cli.Context) error {
			if c.Bool("version") {
				fmt.Fprintf(stdout, "mayu version %s (commit %s)\n", version, commit)
				return nil
			}
			if c.NArg() > 0 {
				return cli.Exit(fmt.Sprintf("mayu: unexpected arguments %q (flags only; see --help)", c.Args().Slice()), 2)
			}
			opts, err := optionsFrom(c)
			if err != nil {
				return cli.Exit("mayu: "+err.Error(), 2)
			}
			log := newLogger(stderr, opts.debug)
			if opts.showTemplates {
				if err := showTemplates(stdout, opts, log); err != nil {
					return cli.Exit("mayu: "+err.Error(), 1)
				}
				return nil
			}
			if err := run(c.Context, opts, log); err != nil {
				return cli.Exit("mayu: "+err.Error(), 1)
			}
			return nil
		},
	}
}

func envName(flag string) string {
	b := []byte(flag)
	for i, c := range b {
		switch {
		case c == '-':
			b[i] = '_'
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
