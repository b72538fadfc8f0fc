package proctest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"mayu/pkg/auth"
	"mayu/pkg/host"
)

// Daemon is a mayu (or a command that runs one, such as ip netns exec)
// started for a test. It is stopped by PID when the test ends, and its
// output is logged if the test failed.
type Daemon struct {
	*Proc
	T       testing.TB
	Flags   Flags        // the resolved flags it was started with (zero for StartDaemon)
	Base    string       // URL of its HTTP server, without a trailing slash
	Cluster string       // its cluster directory
	Client  *http.Client // used by WaitReady, Do and Hosts; 10s timeout, no TLS trust
	// Token is the admin token Do, Hosts and AdminClient send: the first
	// admin credential of the --admin-token-file it was started with
	// (empty with --no-admin-auth).
	Token string
}

// StopGrace is how long Stop and the end of a test wait after SIGTERM
// before SIGKILL.
const StopGrace = 30 * time.Second

// StartDaemon starts cmd, whose HTTP server will be at base, for t.
func StartDaemon(t testing.TB, cmd *exec.Cmd, base string) *Daemon {
	t.Helper()
	p, err := Start(cmd, nil)
	if err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	d := &Daemon{Proc: p, T: t, Base: base, Client: &http.Client{Timeout: 10 * time.Second}, Token: tokenOf(t, cmd.Args)}
	t.Cleanup(func() {
		_ = d.Proc.Stop(StopGrace)
		if t.Failed() {
			t.Logf("%s output (last 6000 bytes):\n%s", filepath.Base(cmd.Path), d.Out.Tail(6000))
		}
	})
	return d
}

// MayuArgs resolves f (Repo defaults to the repository, Port to a free
// one) and returns it with the binary's arguments, followed by extra.
func MayuArgs(t testing.TB, f Flags, extra ...string) (Flags, []string) {
	t.Helper()
	f, args, err := f.Args()
	if err != nil {
		t.Fatal(err)
	}
	return f, append(args, extra...)
}

// StartMayu starts the mayu binary bin with f's flags and extra on
// loopback. It serves HTTPS unless extra holds --no-tls. It does not wait:
// call WaitReady (after giving Client the trust TLS needs).
func StartMayu(t testing.TB, bin string, f Flags, extra ...string) *Daemon {
	t.Helper()
	f, args := MayuArgs(t, f, extra...)
	scheme := "https"
	if slices.Contains(extra, "--no-tls") {
		scheme = "http"
	}
	d := StartDaemon(t, exec.Command(bin, args...), fmt.Sprintf("%s://%s", scheme, net.JoinHostPort(f.Host, fmt.Sprint(f.Port))))
	d.Flags, d.Cluster = f, f.Cluster
	return d
}

// WaitReady waits (60s at most) until GET / answers 200, and fails the
// test with the daemon's output if it exits or does not answer.
func (d *Daemon) WaitReady() {
	d.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := d.WaitHTTP(ctx, d.Client, d.Base+"/"); err != nil {
		d.T.Fatalf("%v\n%s", err, d.Out.String())
	}
}

// Stop is Proc.Stop with StopGrace.
func (d *Daemon) Stop() error { return d.Proc.Stop(StopGrace) }

// Kill sends SIGKILL and fails the test if the process is not reaped
// within 20s.
func (d *Daemon) Kill() {
	if err := d.Proc.Kill(20 * time.Second); err != nil {
		d.T.Error(err)
	}
}

// tokenOf reads the admin token of the --admin-token-file among args
// (written by Flags.Args before the daemon starts); "" if there is none.
func tokenOf(t testing.TB, args []string) string {
	t.Helper()
	for _, a := range args {
		if p, ok := strings.CutPrefix(a, "--admin-token-file="); ok {
			tok, err := auth.ClientToken(p)
			if err != nil {
				t.Fatalf("proctest: %v", err)
			}
			return tok
		}
	}
	return ""
}

// Do sends one request to the daemon (path is below Base) as mayuctl
// does: with the admin token and, on a PUT or POST, a JSON content type.
// It returns the status and body.
func (d *Daemon) Do(method, path, body string) (int, string) {
	d.T.Helper()
	h := http.Header{}
	if d.Token != "" {
		h.Set("Authorization", "Bearer "+d.Token)
	}
	if method == http.MethodPut || method == http.MethodPost {
		h.Set("Content-Type", "application/json")
	}
	return DoWith(d.T, d.Client, h, method, d.Base+path, body)
}

// AdminClient is d.Client sending the admin token with every request, for
// code that takes an *http.Client (the storm tools).
func (d *Daemon) AdminClient() *http.Client {
	return WithToken(d.Client, d.Token)
}

// WithToken returns a copy of c (a 30s-timeout client if nil) whose
// requests carry "Authorization: Bearer <token>".
func WithToken(c *http.Client, token string) *http.Client {
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	cp := *c
	cp.Transport = auth.WithToken(c.Transport, token)
	return &cp
}

// Hosts lists the daemon's hosts (GET /admin/hosts) by serial.
func (d *Daemon) Hosts() map[string]host.Host {
	d.T.Helper()
	code, body := d.Do(http.MethodGet, "/admin/hosts", "")
	if code != http.StatusOK {
		d.T.Fatalf("GET /admin/hosts: %d %s", code, body)
	}
	var list []host.Host
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		d.T.Fatalf("GET /admin/hosts: %v", err)
	}
	m := map[string]host.Host{}
	for _, h := range list {
		m[h.Serial] = h
	}
	return m
}

// Do sends one request with client (a 30s-timeout client if nil) and
// returns the status and body; a non-empty body is sent as JSON. It sends
// no credential. A transport error fails the test.
func Do(t testing.TB, client *http.Client, method, url, body string) (int, string) {
	t.Helper()
	return DoWith(t, client, nil, method, url, body)
}

// DoWith is Do with extra request headers (which win over Do's content
// type).
func DoWith(t testing.TB, client *http.Client, header http.Header, method, url, body string) (int, string) {
	t.Helper()
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %.200s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %.200s: reading the body: %v", method, url, err)
	}
	return resp.StatusCode, string(b)
}

// Git runs the stock git CLI as git -C dir args... and returns its
// combined output; it fails the test on a non-zero exit, and is
// RequireE2E when git is not installed.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	bin := RequireCommand(t, "git", "git")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-C", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// SelfSignedCert writes a self-signed CA certificate for 127.0.0.1 and its
// key into dir, and returns their paths and a pool that trusts it.
func SelfSignedCert(t testing.TB, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mayu test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(err)
	kb, err := x509.MarshalECPrivateKey(key)
	must(err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	must(os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	must(os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	cert, err := x509.ParseCertificate(der)
	must(err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// Result is a finished run of a binary.
type Result struct {
	Stdout, Stderr string
	Code           int // exit status
}

// Run runs bin with args to completion (one minute at most), with env
// added to the test's environment. An exit status is returned in Code; a
// binary that cannot be started or does not finish fails the test.
func Run(t testing.TB, bin string, env []string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %s: did not finish within a minute: %s%s", bin, strings.Join(args, " "), out.String(), errOut.String())
	case errors.As(err, &ee):
		return Result{out.String(), errOut.String(), ee.ExitCode()}
	case err != nil:
		t.Fatalf("running %s: %v", bin, err)
	}
	return Result{out.String(), errOut.String(), 0}
}
