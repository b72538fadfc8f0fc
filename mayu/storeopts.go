package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/urfave/cli/v2"

	"mayu/pkg/store"
	"mayu/pkg/store/etcdv3"
	"mayu/pkg/store/gitaudit"
	"mayu/pkg/store/gitdir"
)

// Store kinds of --store.
const (
	storeGit  = "git"
	storeEtcd = "etcd"
)

// storeOptions say where the host records live.
type storeOptions struct {
	kind      string // storeGit or storeEtcd
	endpoints []string
	prefix    string
	tls       etcdv3.TLSFiles
	instance  string // --instance-name; the daemon's default (host:port) is set by optionsFrom
}

// storeFlags are the flags of the store, shared by the daemon and mayu
// migrate (which names the kind with --from and --to instead of --store).
func storeFlags(env func(string) []string, withKind bool) []cli.Flag {
	flags := []cli.Flag{
		&cli.StringSliceFlag{Name: "store-endpoints", EnvVars: env("store-endpoints"),
			Usage: "etcd v3 client endpoints, host:port or http(s)://host:port (comma-separated)"},
		&cli.StringFlag{Name: "store-prefix", Value: etcdv3.DefaultPrefix, EnvVars: env("store-prefix"),
			Usage: "key prefix of mayu's records in etcd; instances serving one fleet share it"},
		&cli.StringFlag{Name: "store-cert-file", EnvVars: env("store-cert-file"), Usage: "PEM client certificate for etcd (with --store-key-file)"},
		&cli.StringFlag{Name: "store-key-file", EnvVars: env("store-key-file"), Usage: "PEM key of --store-cert-file"},
		&cli.StringFlag{Name: "store-ca-file", EnvVars: env("store-ca-file"), Usage: "PEM CA bundle etcd's certificate is checked against (TLS to etcd)"},
	}
	if withKind {
		flags = append([]cli.Flag{&cli.StringFlag{Name: "store", Value: storeGit, EnvVars: env("store"),
			Usage: "where host records live: git (the cluster directory, a git repository) or etcd (an etcd v3 cluster shared by several mayu instances)"}}, flags...)
		flags = append(flags, &cli.StringFlag{Name: "instance-name", EnvVars: env("instance-name"),
			Usage: "this instance's name among those sharing the etcd store, recorded in every host record it writes and shown by mayuctl (default: host name:--http-port)"})
	}
	return flags
}

// readStoreOptions reads the store flags for a store of kind and lists
// their problems: every etcd flag needs the etcd kind, which needs an
// endpoint.
func readStoreOptions(c *cli.Context, kind string) (storeOptions, []string) {
	so := storeOptions{
		kind:      kind,
		endpoints: splitList(c.StringSlice("store-endpoints")),
		prefix:    c.String("store-prefix"),
		tls: etcdv3.TLSFiles{CertFile: c.String("store-cert-file"), KeyFile: c.String("store-key-file"),
			CAFile: c.String("store-ca-file")},
	}
	if c.IsSet("instance-name") {
		so.instance = c.String("instance-name")
	}
	var problems []string
	switch kind {
	case storeGit:
		for _, f := range []string{"store-endpoints", "store-prefix", "store-cert-file", "store-key-file", "store-ca-file", "instance-name"} {
			if c.IsSet(f) {
				problems = append(problems, fmt.Sprintf("--%s is a setting of the etcd store: it needs --store=etcd", f))
			}
		}
		return so, problems
	case storeEtcd:
	default:
		return so, []string{fmt.Sprintf("--store=%q: want git or etcd", kind)}
	}
	if len(so.endpoints) == 0 {
		problems = append(problems, "--store=etcd needs --store-endpoints=host:port,... (the etcd v3 members' client addresses)")
	}
	for _, ep := range so.endpoints {
		if err := checkEndpoint(ep); err != nil {
			problems = append(problems, "--store-endpoints: "+err.Error())
		}
	}
	if so.prefix == "" || strings.IndexFunc(so.prefix, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) >= 0 {
		problems = append(problems, fmt.Sprintf("--store-prefix=%q: want a non-empty key prefix of printable characters without spaces, such as /mayu/", so.prefix))
	}
	if c.IsSet("instance-name") {
		if err := checkInstanceName(so.instance); err != nil {
			problems = append(problems, "--instance-name: "+err.Error())
		}
	}
	if (so.tls.CertFile == "") != (so.tls.KeyFile == "") {
		problems = append(problems, "--store-cert-file and --store-key-file go together: a client certificate needs its key")
	}
	for _, f := range []struct{ flag, path string }{
		{"--store-cert-file", so.tls.CertFile}, {"--store-key-file", so.tls.KeyFile}, {"--store-ca-file", so.tls.CAFile}} {
		if f.path == "" {
			continue
		}
		if err := readable(f.path); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", f.flag, err))
		}
	}
	return so, problems
}

// maxInstanceName is the longest --instance-name, in bytes.
const maxInstanceName = 64

// checkInstanceName accepts 1 to maxInstanceName ASCII letters, digits
// and ".-_:" (a host name, host:port or a site's label), so the name
// prints as one cell of mayuctl's table and one word of a log line.
func checkInstanceName(name string) error {
	if name == "" || len(name) > maxInstanceName {
		return fmt.Errorf("%q: want 1 to %d characters", name, maxInstanceName)
	}
	for _, r := range name {
		if !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune(".-_:", r))) {
			return fmt.Errorf("%q: %q is not allowed (want ASCII letters, digits and .-_:)", name, r)
		}
	}
	return nil
}

// defaultInstanceName is the machine's host name and the HTTP port
// ("mayu" when the host name is unknown), cut to a valid instance name.
func defaultInstanceName(port int) string {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "mayu"
	}
	name = strings.Map(func(r rune) rune {
		if r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune(".-_", r)) {
			return r
		}
		return '-'
	}, name)
	suffix := fmt.Sprintf(":%d", port)
	if len(name)+len(suffix) > maxInstanceName {
		name = name[:maxInstanceName-len(suffix)]
	}
	return name + suffix
}

// checkEndpoint accepts host:port and http(s)://host:port.
func checkEndpoint(ep string) error {
	hostPort := ep
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("%q is not http(s)://host:port", ep)
		}
		hostPort = u.Host
	}
	h, p, err := net.SplitHostPort(hostPort)
	if err != nil || h == "" {
		return fmt.Errorf("%q is not host:port", ep)
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: %q is not a port", ep, p)
	}
	return nil
}

// useTLS tells whether the etcd client speaks TLS: with a CA, a client
// certificate or an https:// endpoint.
func (so storeOptions) useTLS() bool {
	if so.tls != (etcdv3.TLSFiles{}) {
		return true
	}
	for _, ep := range so.endpoints {
		if strings.HasPrefix(ep, "https://") {
			return true
		}
	}
	return false
}

// openEtcd opens the etcd store of the options.
func (so storeOptions) openEtcd(log *slog.Logger) (*etcdv3.Store, error) {
	o := etcdv3.Options{Endpoints: so.endpoints, Prefix: so.prefix, Instance: so.instance, Logger: log}
	if so.useTLS() {
		t := so.tls
		o.TLS = &t
	}
	return etcdv3.Open(o)
}

// describe names the store in logs and messages.
func (so storeOptions) describe(clusterDir string) string {
	if so.kind == storeEtcd {
		return fmt.Sprintf("etcd %s %s", strings.Join(so.endpoints, ","), so.prefix)
	}
	return "cluster directory " + clusterDir
}

// openStore opens the daemon's store: the cluster directory, or etcd.
func openStore(o options, log *slog.Logger, onBatch func(requests int, took time.Duration)) (store.Store, error) {
	if o.store.kind == storeEtcd {
		st, err := o.store.openEtcd(log.With("component", "store"))
		if err != nil {
			return nil, fmt.Errorf("--store=etcd: %w", err)
		}
		return st, nil
	}
	return gitdir.Open(o.clusterDir, gitdir.Options{NoGit: o.noGit, Logger: log.With("component", "store"), Watch: true, OnBatch: onBatch})
}

// newAuditor prepares the elected auditor of an etcd store: it writes the
// audit records into the cluster directory (a git repository) while this
// instance holds the office. None for the git store, which commits
// itself, or with --no-git.
func newAuditor(o options, st store.Store, log *slog.Logger) (*gitaudit.Config, error) {
	es, ok := st.(*etcdv3.Store)
	if !ok || o.noGit {
		return nil, nil
	}
	d, err := gitdir.Open(o.clusterDir, gitdir.Options{Logger: log.With("component", "audit")})
	if err != nil {
		return nil, fmt.Errorf("cluster directory for the audit trail: %w", err)
	}
	return &gitaudit.Config{Source: es, Target: d, Name: o.store.instance, Logger: log.With("component", "audit")}, nil
}
