package dnsmasq

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"mayu/pkg/timeline"
)

// child is one dnsmasq process.
type child struct {
	cmd     *exec.Cmd
	pid     int
	started time.Time
	out     *outputLog
	exited  chan struct{} // closed once Wait returned
	err     error         // Wait's result, readable after exited is closed
}

// start runs `dnsmasq -k -d` in its own process group (a Ctrl-C meant for
// mayu must not kill it behind the supervisor's back) and with a parent
// death signal (it must not outlive a killed mayu).
func (s *Supervisor) start() (*child, error) {
	out := &outputLog{log: s.log, tail: lastLines{n: 20},
		parser: LogParser{TFTPRoot: s.cfg.TFTPRoot}, onEvent: s.cfg.OnEvent}
	// Our own pipe rather than exec's copying goroutine: Wait then returns
	// as soon as dnsmasq exits, even if a helper it forked still holds the
	// pipe.
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("dnsmasq: output pipe: %w", err)
	}
	cmd := exec.Command(s.cfg.Binary, s.args(s.confPath, true)...)
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("dnsmasq: start %s: %w", s.cfg.Binary, err)
	}
	ch := &child{cmd: cmd, pid: cmd.Process.Pid, started: time.Now(), out: out, exited: make(chan struct{})}
	out.setPID(ch.pid)
	s.mu.Lock()
	s.starts++
	s.mu.Unlock()
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(out, r)
		r.Close()
		out.flush()
		close(copied)
	}()
	go func() {
		ch.err = cmd.Wait()
		// Whatever is left of its process group (a dhcp-script helper)
		// goes with it; the group id stays reserved while members live.
		_ = syscall.Kill(-ch.pid, syscall.SIGKILL)
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
		close(ch.exited)
	}()
	s.log.Info("dnsmasq started", "pid", ch.pid, "conf", s.confPath, "hosts", s.hostsPath, "leases", s.leasePath)
	return ch, nil
}

// stop ends the child: SIGTERM to its process group, SIGKILL after
// StopTimeout, and always waits for it.
func (s *Supervisor) stop(ch *child) {
	_ = syscall.Kill(-ch.pid, syscall.SIGTERM)
	t := time.NewTimer(s.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-ch.exited:
	case <-t.C:
		s.log.Warn("dnsmasq did not stop after SIGTERM; killing it", "pid", ch.pid, "waited", s.cfg.StopTimeout)
		_ = syscall.Kill(-ch.pid, syscall.SIGKILL)
		<-ch.exited
	}
	s.forget(ch)
	s.log.Info("dnsmasq stopped", "pid", ch.pid, "status", exitStatus(ch.err))
}

// serving makes ch the dnsmasq PID reports, unless it exited already.
func (s *Supervisor) serving(ch *child) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-ch.exited:
	default:
		s.pid = ch.pid
	}
}

// forget stops reporting ch, which has exited.
func (s *Supervisor) forget(ch *child) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pid == ch.pid {
		s.pid = 0
	}
}

// hup tells dnsmasq to re-read the hosts file. A child that has not yet
// installed its SIGHUP handler would be killed by the signal, so wait
// (bounded) until it has.
func (s *Supervisor) hup(ctx context.Context, ch *child) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		ok, err := catchesSIGHUP(ch.pid)
		if err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			// Signal anyway: at worst it dies and the restart reads the
			// new hosts file.
			s.log.Warn("dnsmasq does not seem to handle SIGHUP yet; signalling anyway", "pid", ch.pid)
			break
		}
		select {
		case <-ch.exited:
			return nil // restarted with the new file by Run
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := syscall.Kill(ch.pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("dnsmasq: signal pid %d: %w", ch.pid, err)
	}
	return nil
}

// args is dnsmasq's command line. -k -d keeps it in the foreground as our
// child (-d also keeps it root, so it can read the runtime directory and
// tftproot whatever their modes); --log-facility=- sends its log to
// stderr only, which we read, instead of also to syslog; --log-dhcp adds
// the transaction and the details of each DHCP packet, which the timeline
// keys by MAC (LogParser).
func (s *Supervisor) args(conf string, run bool) []string {
	a := []string{}
	if run {
		a = append(a, "-k", "-d")
	} else {
		a = append(a, "--test")
	}
	return append(a,
		"--conf-file="+conf,
		"--dhcp-hostsfile="+s.hostsPath,
		"--dhcp-leasefile="+s.leasePath,
		"--log-facility=-",
		"--log-dhcp",
	)
}

// exitStatus describes how a process ended: "exit status 2", "signal:
// killed".
func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// outputLog sends each line dnsmasq prints to the logger and keeps the last
// ones for the report of an unexpected exit. exec calls Write from one
// goroutine (stdout and stderr share it); the mutex orders it against
// last().
type outputLog struct {
	log     *slog.Logger
	parser  LogParser
	onEvent func(timeline.Event) // nil: no events

	mu      sync.Mutex
	pid     int
	partial []byte
	tail    lastLines
}

func (o *outputLog) setPID(pid int) {
	o.mu.Lock()
	o.pid = pid
	o.mu.Unlock()
}

func (o *outputLog) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.partial = append(o.partial, p...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		o.emitLocked(string(o.partial[:i]))
		o.partial = o.partial[i+1:]
	}
	return len(p), nil
}

func (o *outputLog) flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.partial) > 0 {
		o.emitLocked(string(o.partial))
		o.partial = nil
	}
}

func (o *outputLog) emitLocked(line string) {
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return
	}
	o.tail.add(line)
	level := slog.LevelInfo
	if looksLikeTrouble(line) {
		level = slog.LevelWarn
	} else if isDHCPDetail(line) {
		level = slog.LevelDebug
	}
	o.log.Log(context.Background(), level, line, "pid", o.pid)
	if o.onEvent != nil {
		if e, ok := o.parser.Parse(line); ok {
			o.onEvent(e)
		}
	}
}

func (o *outputLog) last() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.tail.String()
}

// looksLikeTrouble raises the level of dnsmasq lines that report a
// problem, so they stand out among the DHCP chatter.
func looksLikeTrouble(line string) bool {
	l := strings.ToLower(line)
	for _, w := range []string{"fail", "error", "cannot", "bad ", "warning", "illegal", "unknown interface"} {
		if strings.Contains(l, w) {
			return true
		}
	}
	return false
}

// lastLines keeps the last n lines of dnsmasq's output so an unexpected
// exit can be reported with its reason.
type lastLines struct {
	n     int
	lines []string
}

func (l *lastLines) add(s string) {
	l.lines = append(l.lines, s)
	if len(l.lines) > l.n {
		l.lines = l.lines[len(l.lines)-l.n:]
	}
}

func (l *lastLines) String() string { return strings.Join(l.lines, "\n") }
