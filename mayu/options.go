package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"mayu/pkg/auth"
	"mayu/pkg/config"
	"mayu/pkg/machineauth"
)

const defaultShutdownTimeout = 10 * time.Second

// options are the validated flags.
type options struct {
	configPath       string
	clusterDir       string
	store            storeOptions // where host records live (--store and its flags)
	showTemplates    bool
	noGit            bool
	noTLS            bool
	certFile         string
	keyFile          string
	tftpRoot         string
	yochuPath        string
	staticHTMLPath   string
	firstStageScript string
	lastStageCC      string
	ignitionConfig   string
	useIgnition      bool
	dnsmasqTemplate  string
	snippets         string
	dnsmasqBinary    string
	noDnsmasq        bool
	runtimeDir       string
	imagesDir        string
	httpPort         int
	bindAddress      string

	internalDiscovery bool
	quorumSize        int
	externalDiscovery string
	etcdEndpoint      string // set only when given explicitly: proxy mode
	legacyEtcd        string // Mayu 0.11's default etcd, imported from once by the internal mode

	adminTokenFile string // "" until check: <cluster-directory>/.admin-tokens
	clientCAFile   string
	noAdminAuth    bool
	metricsNoAuth  bool
	staticIndex    bool
	trustedProxies []*net.IPNet
	allowedHosts   []string
	proxyFlags     []string // --trusted-proxies as given, parsed by check

	shutdownTimeout time.Duration
	debug           bool

	// The trust boundary towards machines (see pkg/machineauth).
	machineAuth       machineauth.Mode
	leasesFile        string // --dhcp-leases-file; "" is dnsmasq's own
	anonymousLimit    int
	etcdMemberSources []*net.IPNet
	bootHTTPPort      int
	caFile            string // --tls-ca-file
}

// optionsFrom reads the flags and reports every contradiction at once.
func optionsFrom(c *cli.Context) (options, error) {
	o := readOptions(c)
	problems := o.check()
	problems = append(problems, o.readTrustOptions(c)...)
	var storeProblems []string
	o.store, storeProblems = readStoreOptions(c, c.String("store"))
	problems = append(problems, storeProblems...)
	if o.store.kind == storeEtcd && o.store.instance == "" {
		o.store.instance = defaultInstanceName(o.httpPort)
	}
	if len(problems) > 0 {
		return o, problemsError(problems)
	}
	return o, nil
}

// readOptions copies the flags into options, with the defaults that depend
// on other flags.
func readOptions(c *cli.Context) options {
	o := options{
		configPath:        c.String("config"),
		clusterDir:        c.String("cluster-directory"),
		showTemplates:     c.Bool("show-templates"),
		noGit:             c.Bool("no-git"),
		noTLS:             c.Bool("no-tls"),
		certFile:          c.String("tls-cert-file"),
		keyFile:           c.String("tls-key-file"),
		tftpRoot:          c.String("tftproot"),
		yochuPath:         c.String("yochu-path"),
		staticHTMLPath:    c.String("static-html-path"),
		firstStageScript:  c.String("first-stage-script"),
		lastStageCC:       c.String("last-stage-cloudconfig"),
		ignitionConfig:    c.String("ignition-config"),
		useIgnition:       c.Bool("use-ignition"),
		dnsmasqTemplate:   c.String("dnsmasq-template"),
		snippets:          c.String("template-snippets"),
		dnsmasqBinary:     c.String("dnsmasq"),
		noDnsmasq:         c.Bool("no-dnsmasq"),
		runtimeDir:        c.String("runtime-dir"),
		imagesDir:         c.String("images-cache-dir"),
		httpPort:          c.Int("http-port"),
		bindAddress:       c.String("http-bind-address"),
		internalDiscovery: c.Bool("use-internal-etcd-discovery"),
		quorumSize:        c.Int("etcd-quorum-size"),
		externalDiscovery: c.String("etcd-discovery"),
		legacyEtcd:        c.String("legacy-etcd-endpoint"),
		adminTokenFile:    c.String("admin-token-file"),
		clientCAFile:      c.String("client-ca-file"),
		noAdminAuth:       c.Bool("no-admin-auth"),
		metricsNoAuth:     c.Bool("metrics-no-auth"),
		staticIndex:       c.Bool("static-index"),
		proxyFlags:        splitList(c.StringSlice("trusted-proxies")),
		allowedHosts:      splitList(c.StringSlice("allowed-hosts")),
		shutdownTimeout:   c.Duration("shutdown-timeout"),
		debug:             c.Bool("debug") || c.Int("v") > 0,
		leasesFile:        c.String("dhcp-leases-file"),
		anonymousLimit:    c.Int("anonymous-limit"),
		bootHTTPPort:      c.Int("boot-http-port"),
		caFile:            c.String("tls-ca-file"),
	}
	if c.IsSet("etcd-endpoint") {
		o.etcdEndpoint = c.String("etcd-endpoint")
	}
	if o.useIgnition && !c.IsSet("template-snippets") {
		o.snippets = "./template_snippets/ignition"
	}
	return o
}

// check lists every contradiction and bad value among the flags; it makes
// --tftproot absolute and defaults --shutdown-timeout.
func (o *options) check() []string {
	var problems []string
	if o.internalDiscovery && o.externalDiscovery != "" {
		problems = append(problems, "--etcd-discovery and the internal etcd discovery are exclusive: add --use-internal-etcd-discovery=false to use the external one")
	}
	if !o.internalDiscovery && o.externalDiscovery == "" && o.etcdEndpoint == "" {
		problems = append(problems, "no etcd discovery: --use-internal-etcd-discovery=false needs --etcd-discovery=<url> (or --etcd-endpoint for proxy mode)")
	}
	if o.externalDiscovery != "" && o.etcdEndpoint != "" {
		problems = append(problems, "--etcd-discovery and --etcd-endpoint are exclusive")
	}
	if o.quorumSize < 1 {
		problems = append(problems, fmt.Sprintf("--etcd-quorum-size=%d: must be at least 1", o.quorumSize))
	}
	if !o.noTLS && !o.showTemplates {
		if o.certFile == "" || o.keyFile == "" {
			problems = append(problems, "TLS needs --tls-cert-file and --tls-key-file (or run with --no-tls)")
		}
		for _, f := range []struct{ flag, path string }{{"--tls-cert-file", o.certFile}, {"--tls-key-file", o.keyFile}} {
			if f.path == "" {
				continue
			}
			if err := readable(f.path); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", f.flag, err))
			}
		}
	}
	problems = append(problems, o.checkAccess()...)
	if o.httpPort < 1 || o.httpPort > 65535 {
		problems = append(problems, fmt.Sprintf("--http-port=%d: not a port", o.httpPort))
	}
	if net.ParseIP(o.bindAddress) == nil {
		problems = append(problems, fmt.Sprintf("--http-bind-address=%q: not an IP address", o.bindAddress))
	}
	if o.shutdownTimeout <= 0 {
		o.shutdownTimeout = defaultShutdownTimeout
	}
	abs, err := filepath.Abs(o.tftpRoot)
	if err != nil {
		problems = append(problems, fmt.Sprintf("--tftproot: %v", err))
	}
	o.tftpRoot = abs
	return problems
}

// readTrustOptions reads the flags of the trust boundary towards machines
// and lists their problems.
func (o *options) readTrustOptions(c *cli.Context) []string {
	var problems []string
	mode, err := machineauth.ParseMode(c.String("machine-auth"))
	if err != nil {
		problems = append(problems, "--machine-auth: "+err.Error())
	}
	o.machineAuth = mode
	for _, f := range splitList(c.StringSlice("etcd-member-sources")) {
		n, err := parseNet(f)
		if err != nil {
			problems = append(problems, fmt.Sprintf("--etcd-member-sources: %v", err))
			continue
		}
		o.etcdMemberSources = append(o.etcdMemberSources, n)
	}
	if o.anonymousLimit < 0 {
		problems = append(problems, fmt.Sprintf("--anonymous-limit=%d: a count a minute, 0 for no limit", o.anonymousLimit))
	}
	if o.bootHTTPPort != 0 {
		switch {
		case o.bootHTTPPort < 1 || o.bootHTTPPort > 65535:
			problems = append(problems, fmt.Sprintf("--boot-http-port=%d: not a port", o.bootHTTPPort))
		case o.bootHTTPPort == o.httpPort:
			problems = append(problems, "--boot-http-port must differ from --http-port")
		case o.noTLS:
			problems = append(problems, "--boot-http-port serves the boot files over plain HTTP beside HTTPS: with --no-tls everything is plain HTTP on --http-port already")
		}
	}
	if o.caFile != "" {
		if o.noTLS {
			problems = append(problems, "--tls-ca-file names what machines trust mayu's HTTPS by: it makes no sense with --no-tls")
		} else if err := readable(o.caFile); err != nil {
			problems = append(problems, fmt.Sprintf("--tls-ca-file: %v", err))
		}
	}
	return problems
}

// checkAccess checks the admin API's flags and defaults the token file.
func (o *options) checkAccess() []string {
	var problems []string
	if o.noAdminAuth && (o.adminTokenFile != "" || o.clientCAFile != "") {
		problems = append(problems, "--no-admin-auth opens the admin API: it cannot be given with --admin-token-file or --client-ca-file")
	}
	if o.clientCAFile != "" {
		if o.noTLS {
			problems = append(problems, "--client-ca-file needs TLS: client certificates cannot be sent over plain HTTP (drop --no-tls)")
		} else if err := readable(o.clientCAFile); err != nil {
			problems = append(problems, fmt.Sprintf("--client-ca-file: %v", err))
		}
	}
	if o.adminTokenFile == "" && !o.noAdminAuth {
		o.adminTokenFile = filepath.Join(o.clusterDir, auth.DefaultFileName)
	}
	for _, p := range o.proxyFlags {
		n, err := parseNet(p)
		if err != nil {
			problems = append(problems, fmt.Sprintf("--trusted-proxies: %v", err))
			continue
		}
		o.trustedProxies = append(o.trustedProxies, n)
	}
	for _, h := range o.allowedHosts {
		if strings.ContainsAny(h, "/:@ ") && net.ParseIP(h) == nil {
			problems = append(problems, fmt.Sprintf("--allowed-hosts: %q is not a host name or address (no scheme or port)", h))
		}
	}
	return problems
}

// parseNet reads an address (a /32 or /128) or a CIDR.
func parseNet(s string) (*net.IPNet, error) {
	if ip := net.ParseIP(s); ip != nil {
		bits := 128
		if ip.To4() != nil {
			ip, bits = ip.To4(), 32
		}
		return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, nil
	}
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, fmt.Errorf("%q is neither an IP address nor a CIDR", s)
	}
	return n, nil
}

// splitList splits comma-separated flag values (a list flag given once
// with commas, or several times) and drops empty items.
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}

// problemsError joins start-up problems, one per line. A problem that is a
// list itself (config.yaml's, the templates') is indented under its head.
func problemsError(problems []string) error {
	if len(problems) == 1 {
		return errors.New(problems[0])
	}
	nested := make([]string, len(problems))
	for i, p := range problems {
		nested[i] = strings.ReplaceAll(p, "\n", "\n  ")
	}
	return fmt.Errorf("%d problems:\n  %s", len(problems), strings.Join(nested, "\n  "))
}

// logConfigWarnings logs what config.yaml got accepted with (an ip_range
// overlapping bootstrap_range, reserved addresses inside it), once at
// start, so the operator sees which addresses are never handed out.
func logConfigWarnings(log *slog.Logger, path string, cfg *config.Config) {
	for _, w := range cfg.Warnings {
		log.Warn("config warning", "file", path, "warning", w)
	}
}

func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// newLogger returns the daemon's logger: text to stderr, debug with -d or -v.
func newLogger(w io.Writer, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
