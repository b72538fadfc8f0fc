package dnsmasq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// badLine finds the line number in dnsmasq's "bad option at line 3 of
// /path" complaints.
var badLine = regexp.MustCompile(`at line (\d+) of `)

// testOnce runs dnsmasq --test unless it already accepted this exact
// configuration (Check before Run, restarts after a crash).
func (s *Supervisor) testOnce(conf []byte) error {
	s.mu.Lock()
	done := bytes.Equal(conf, s.testedConf)
	s.mu.Unlock()
	if done {
		return nil
	}
	if err := s.test(conf); err != nil {
		return err
	}
	s.mu.Lock()
	s.testedConf = conf
	s.mu.Unlock()
	return nil
}

// test runs dnsmasq --test on a rendered configuration.
func (s *Supervisor) test(conf []byte) error {
	f, err := os.CreateTemp(s.cfg.RuntimeDir, ".dnsmasq-check-*.conf")
	if err != nil {
		return fmt.Errorf("dnsmasq: check: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(conf); err != nil {
		f.Close()
		return fmt.Errorf("dnsmasq: check: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("dnsmasq: check: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.cfg.Binary, s.args(f.Name(), false)...).CombinedOutput()
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("dnsmasq: run %s --test: %w", s.cfg.Binary, err)
	}
	msg := strings.TrimSpace(string(out))
	if m := badLine.FindStringSubmatch(msg); m != nil {
		if n, _ := strconv.Atoi(m[1]); n > 0 {
			lines := strings.Split(string(conf), "\n")
			if n <= len(lines) {
				msg += fmt.Sprintf(" (rendered line %d: %q)", n, lines[n-1])
			}
		}
	}
	return fmt.Errorf("%w: template %s: %s", ErrConfigRejected, s.cfg.Template, msg)
}
