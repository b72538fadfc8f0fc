package proctest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"mayu/pkg/auth"
)

// Flags describes the command line of a mayu run for a test or a tool:
// every path it reads or writes is given, so nothing depends on the
// working directory.
type Flags struct {
	Repo string // repository root (templates, template_snippets, tftproot); RepoRoot() if empty
	Dir  string // run directory; the paths below default to entries in it
	// ConfigText, when set, is written to Config before the flags are
	// returned.
	ConfigText string
	Config     string // --config; Dir/config.yaml if empty
	Cluster    string // --cluster-directory; Dir/cluster if empty
	Images     string // --images-cache-dir; Dir/images if empty
	Static     string // --static-html-path; Dir/static_html if empty, holding a stand-in infopusher
	TFTPRoot   string // --tftproot; Repo/tftproot if empty
	Host       string // --http-bind-address; 127.0.0.1 if empty
	Port       int    // --http-port; a PickPort port if 0
	Dnsmasq    string // --dnsmasq; --no-dnsmasq if empty
	// TokenFile is --admin-token-file; Dir/admin-tokens if empty. Args
	// writes it (mode 0600) unless it exists: an admin credential "test"
	// and a read-only one "viewer", with fresh random tokens, so a
	// restarted daemon keeps its tokens.
	TokenFile string
	// NoAdminAuth passes --no-admin-auth instead of a token file: for the
	// tests of Mayu 0.11's open admin API only.
	NoAdminAuth bool
}

// Credential names of the token file Args writes.
const (
	AdminName    = "test"
	ReadOnlyName = "viewer"
)

// resolve fills the defaults of f.
func (f Flags) resolve() (Flags, error) {
	var err error
	if f.Repo == "" {
		if f.Repo, err = RepoRoot(); err != nil {
			return f, err
		}
	}
	if f.Dir == "" {
		return f, errors.New("proctest: Flags.Dir is required")
	}
	setDefault(&f.Config, filepath.Join(f.Dir, "config.yaml"))
	setDefault(&f.Cluster, filepath.Join(f.Dir, "cluster"))
	setDefault(&f.Images, filepath.Join(f.Dir, "images"))
	setDefault(&f.Static, filepath.Join(f.Dir, "static_html"))
	setDefault(&f.TFTPRoot, filepath.Join(f.Repo, "tftproot"))
	setDefault(&f.Host, "127.0.0.1")
	setDefault(&f.TokenFile, filepath.Join(f.Dir, "admin-tokens"))
	if f.Port == 0 {
		if f.Port, err = PickPort(); err != nil {
			return f, err
		}
	}
	return f, nil
}

// Args resolves f's defaults, writes ConfigText and the static directory
// (with a stand-in infopusher), and returns the resolved flags and mayu's
// arguments. TLS is left to the caller (--no-tls, or the certificate
// flags).
func (f Flags) Args() (Flags, []string, error) {
	f, err := f.resolve()
	if err != nil {
		return f, nil, err
	}
	if f.ConfigText != "" {
		if err := os.WriteFile(f.Config, []byte(f.ConfigText), 0o644); err != nil {
			return f, nil, err
		}
	}
	if err := os.MkdirAll(f.Static, 0o755); err != nil {
		return f, nil, err
	}
	if err := os.WriteFile(filepath.Join(f.Static, "infopusher"), []byte("#!/bin/sh\necho helper\n"), 0o755); err != nil {
		return f, nil, err
	}
	tmpl := func(parts ...string) string { return filepath.Join(append([]string{f.Repo}, parts...)...) }
	args := []string{
		"--config=" + f.Config,
		"--cluster-directory=" + f.Cluster,
		"--http-bind-address=" + f.Host,
		"--http-port=" + strconv.Itoa(f.Port),
		"--first-stage-script=" + tmpl("templates", "first_stage_script.sh"),
		"--last-stage-cloudconfig=" + tmpl("templates", "last_stage_cloudconfig.yaml"),
		"--ignition-config=" + tmpl("templates", "ignition", "gs_install.yaml"),
		"--dnsmasq-template=" + tmpl("templates", "dnsmasq_template.conf"),
		"--template-snippets=" + tmpl("template_snippets", "cloudconfig"),
		"--static-html-path=" + f.Static,
		"--images-cache-dir=" + f.Images,
		"--yochu-path=" + filepath.Join(f.Dir, "yochu"),
		"--tftproot=" + f.TFTPRoot,
		// Tests and storms play many machines from one loopback address:
		// no limit on registrations per address, unless a test gives its
		// own --anonymous-limit (the last one given counts).
		"--anonymous-limit=0",
	}
	if f.NoAdminAuth {
		args = append(args, "--no-admin-auth")
	} else {
		if err := writeTokenFile(f.TokenFile); err != nil {
			return f, nil, err
		}
		args = append(args, "--admin-token-file="+f.TokenFile)
	}
	if f.Dnsmasq == "" {
		args = append(args, "--no-dnsmasq")
	} else {
		args = append(args, "--dnsmasq="+f.Dnsmasq)
	}
	return f, args, nil
}

// writeTokenFile writes a token file with an admin and a read-only
// credential at path, unless there is one.
func writeTokenFile(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	admin, err := auth.NewToken()
	if err != nil {
		return err
	}
	viewer, err := auth.NewToken()
	if err != nil {
		return err
	}
	content := AdminName + " admin " + admin + "\n" + ReadOnlyName + " read-only " + viewer + "\n"
	return os.WriteFile(path, []byte(content), 0o600)
}

// Tokens returns the admin and the read-only token of a token file that
// Args wrote.
func Tokens(t testing.TB, path string) (admin, readOnly string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("proctest: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 3 && f[0] == AdminName:
			admin = f[2]
		case len(f) == 3 && f[0] == ReadOnlyName:
			readOnly = f[2]
		}
	}
	if admin == "" || readOnly == "" {
		t.Fatalf("proctest: %s has no %s and %s credentials", path, AdminName, ReadOnlyName)
	}
	return admin, readOnly
}

// Proc is a started child process.
type Proc struct {
	Cmd  *exec.Cmd
	Out  *Output // its stdout and stderr, unless Start was given a writer
	done chan struct{}
	err  error
}

// Start starts cmd with its stdout and stderr going to out, or to the
// Proc's Out if out is nil (a long run logs to a file instead of memory),
// and reaps it in the background.
func Start(cmd *exec.Cmd, out io.Writer) (*Proc, error) {
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	if out == nil {
		p.Out = &Output{}
		out = p.Out
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the exit error (nil for exit status 0) once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Stop sends SIGTERM to the process (by PID) and waits up to grace for it
// to exit, then sends SIGKILL. It returns the exit error, or an error
// saying it had to be killed. Stopping an exited process returns its exit
// error again.
func (p *Proc) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(grace):
		_ = p.Cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %v of SIGTERM (killed): %v", filepath.Base(p.Cmd.Path), grace, p.err)
	}
}

// Kill sends SIGKILL (to this process only, by PID) and waits up to
// timeout for it to be reaped; it returns an error if it was not.
func (p *Proc) Kill(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.Cmd.Process.Kill()
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("pid %d did not die within %v of SIGKILL", p.Cmd.Process.Pid, timeout)
	}
}

// WaitHTTP polls GET url with client (every 20ms, each bounded by the
// client's timeout) until it answers 200. It returns an error when the
// process exits first or ctx ends; the caller adds the process's output.
func (p *Proc) WaitHTTP(ctx context.Context, client *http.Client, url string) error {
	for {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it answered: %v", filepath.Base(p.Cmd.Path), p.err)
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer GET %s: %w", filepath.Base(p.Cmd.Path), url, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
