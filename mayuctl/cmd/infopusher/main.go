// Command infopusher is the host-info helper: the first-stage install script
// downloads it from mayu's /hostinfo-helper and runs
//
//	infopusher -post-url=<base>/final-cloud-config.yaml > user_data
//
// It collects the machine's facts (pkg/hostinfo), POSTs them, and prints
// mayu's answer (the machine's final config) on stdout. Notes and errors go
// to stderr, so stdout is only ever the config; any failure exits non-zero.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"mayu/pkg/host"
	"mayu/pkg/hostinfo"
)

// Set with -ldflags -X at build time.
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("infopusher", flag.ContinueOnError)
	fs.SetOutput(stderr)
	postURL := fs.String("post-url", "", "URL to POST the machine's facts to (mayu's final-config URL); required")
	sysRoot := fs.String("sysfs-root", envOr(getenv, "INFOPUSHER_SYSFS_ROOT", "/sys"), "where sysfs is mounted [$INFOPUSHER_SYSFS_ROOT]")
	procRoot := fs.String("procfs-root", envOr(getenv, "INFOPUSHER_PROCFS_ROOT", "/proc"), "where procfs is mounted [$INFOPUSHER_PROCFS_ROOT]")
	ipmitool := fs.String("ipmitool", envOr(getenv, "INFOPUSHER_IPMITOOL", "ipmitool"), "ipmitool binary, or - to skip IPMI [$INFOPUSHER_IPMITOOL]")
	serial := fs.String("serial", "", "report this serial instead of the DMI one (cleaned as a DMI value: whitespace around removed, inside -; placeholders refused)")
	caFile := fs.String("ca-file", "", "PEM bundle to check mayu's certificate by, besides the system's CAs (the first-stage script's copy of mayu's CA)")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up on the POST after this long")
	verbose := fs.Bool("v", false, "log what is collected on stderr")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: infopusher -post-url=URL [options]

Collects this machine's serial (mayu's serial rule: the first of the DMI
product, chassis and board serial and system UUID that is not a vendor
placeholder), physical NICs and MACs, the NIC of the default route and the
IPMI address, POSTs them as JSON to URL and prints the answer on stdout.

The machine's credential, from $MAYU_MACHINE_TOKEN (the first-stage script
sets it), is sent in the Mayu-Machine-Token header.

Example:
  infopusher -post-url=http://192.168.2.2:4080/final-cloud-config.yaml > /tmp/user_data
  MAYU_MACHINE_TOKEN=... infopusher -ca-file=/tmp/mayu-ca.pem -post-url=https://192.168.2.2:4080/final-cloud-config.yaml

Options:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2 // flag has printed the problem and the usage
	}
	if *showVersion || fs.Arg(0) == "version" {
		fmt.Fprintf(stdout, "infopusher %s (commit %s)\n", version, commit)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "infopusher: unexpected argument %q (see infopusher -h)\n", fs.Arg(0))
		return 2
	}
	if *postURL == "" {
		fmt.Fprintln(stderr, "infopusher: -post-url is required (see infopusher -h)")
		return 2
	}
	if !strings.HasPrefix(*postURL, "http://") && !strings.HasPrefix(*postURL, "https://") {
		fmt.Fprintf(stderr, "infopusher: -post-url %q: want an http:// or https:// URL\n", *postURL)
		return 2
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	c := hostinfo.New(hostinfo.Config{SysRoot: *sysRoot, ProcRoot: *procRoot, IPMITool: *ipmitool,
		Serial: *serial, Logger: logger})

	info, err := c.Collect(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "infopusher: "+err.Error())
		return 1
	}
	logger.Debug("collected", "serial", info.Serial, "netdevs", info.NetDevs, "connected_nic", info.ConnectedNIC, "ipmi", info.IPMIAddress)

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	hc, err := httpClient(*caFile, getenv("MAYU_MACHINE_TOKEN"))
	if err != nil {
		fmt.Fprintln(stderr, "infopusher: "+err.Error())
		return 2
	}
	answer, err := hostinfo.Post(ctx, hc, *postURL, info)
	if err != nil {
		fmt.Fprintln(stderr, "infopusher: "+err.Error())
		return 1
	}
	if _, err := stdout.Write(answer); err != nil {
		fmt.Fprintln(stderr, "infopusher: writing the answer: "+err.Error())
		return 1
	}
	return 0
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// httpClient is the client the facts are posted with: no proxies (the
// installer talks to mayu on the provisioning segment), TLS 1.2 or later
// checked against the system's CAs and caFile, and the machine's
// credential on every request when there is one.
func httpClient(caFile, token string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("-ca-file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-ca-file %s: no PEM certificate in it", caFile)
		}
		conf.RootCAs = pool
	}
	tr.TLSClientConfig = conf
	var rt http.RoundTripper = tr
	if token != "" {
		rt = credential{token: token, next: tr}
	}
	return &http.Client{Transport: rt}, nil
}

// credential adds the machine's credential to every request.
type credential struct {
	token string
	next  http.RoundTripper
}

func (c credential) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(host.MachineTokenHeader, c.token)
	return c.next.RoundTrip(r)
}
