package dnsmasq

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// startSettle is how long a fresh dnsmasq must stay up after it bound its
// sockets and installed its SIGHUP handler before it counts as serving.
// dnsmasq binds its sockets first and only then checks the TFTP directory
// and the lease file, exiting within milliseconds if one fails; in the
// foreground mode mayu runs it in, nothing else tells that it got past
// those checks. A quarter of a second is hundreds of times what they take.
const startSettle = 250 * time.Millisecond

// waitServing waits until the fresh child serves: it holds a UDP socket on
// every port in ports (and nobody else's socket counts), handles SIGHUP and
// has stayed up startSettle since. If it exits first, or gets nowhere within
// StartTimeout, the error (ErrStart) carries dnsmasq's own reason and a
// hint naming the config key or flag to look at; the caller stops the
// child.
func (s *Supervisor) waitServing(ctx context.Context, ch *child, ports []int, o origins) error {
	deadline := time.NewTimer(s.cfg.StartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var (
		boundAt time.Time
		held    map[int]bool
		heldErr error
	)
	for {
		select {
		case <-ch.exited:
			return exitedAtStart(ch, o)
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			what := "did not bind UDP port(s) " + portList(ports)
			if !boundAt.IsZero() || holdsAll(held, ports) {
				what = "did not install its SIGHUP handler"
			}
			if heldErr != nil {
				what += fmt.Sprintf(" (its sockets cannot be read: %v)", heldErr)
			}
			return fmt.Errorf("%w: dnsmasq (pid %d) %s within %s; its last output: %s",
				ErrStart, ch.pid, what, s.cfg.StartTimeout, ch.out.last())
		case <-tick.C:
		}
		if !boundAt.IsZero() {
			if time.Since(boundAt) >= startSettle {
				return nil
			}
			continue
		}
		held, heldErr = s.sys.HeldUDPPorts(ch.pid)
		bound := heldErr == nil && holdsAll(held, ports)
		if errors.Is(heldErr, errors.ErrUnsupported) {
			bound, heldErr = true, nil // no /proc: the settle time is all there is
		}
		if !bound {
			continue
		}
		if ok, err := catchesSIGHUP(ch.pid); err == nil && ok {
			boundAt = time.Now()
		}
	}
}

func holdsAll(held map[int]bool, ports []int) bool {
	for _, p := range ports {
		if !held[p] {
			return false
		}
	}
	return true
}

func portList(ports []int) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ", ")
}

// exitedAtStart is the error of a child that exited before it served: its
// exit status, the lines it printed that report a problem (all it printed
// if none does) and hints.
func exitedAtStart(ch *child, o origins) error {
	out := ch.out.last()
	var reasons []string
	for _, l := range strings.Split(out, "\n") {
		if looksLikeTrouble(l) {
			reasons = append(reasons, l)
		}
	}
	if len(reasons) == 0 {
		reasons = strings.Split(out, "\n")
	}
	msg := fmt.Sprintf("%s: dnsmasq exited during start-up (%s): %s", ErrStart.Error(), exitStatus(ch.err), strings.Join(reasons, " / "))
	if hints := startHints(out, o); len(hints) > 0 {
		msg += "; hint: " + strings.Join(hints, "; ")
	}
	return &startError{msg: msg}
}

// startError is an ErrStart whose message is written out in full.
type startError struct{ msg string }

func (e *startError) Error() string        { return e.msg }
func (e *startError) Is(target error) bool { return target == ErrStart }

var (
	reUnknownIface = regexp.MustCompile(`unknown interface (\S+)`)
	reNoAddr       = regexp.MustCompile(`failed to create listening socket for (\S+): Cannot assign requested address`)
	reAddrInUse    = regexp.MustCompile(`failed to create listening socket for (\S+): Address (?:already )?in use`)
	reDHCPInUse    = regexp.MustCompile(`failed to bind DHCP server socket: Address (?:already )?in use`)
	reTFTPDir      = regexp.MustCompile(`TFTP directory (\S+) inaccessible`)
	reLeaseFile    = regexp.MustCompile(`(?i)cannot (?:open or create|read) lease`)
	rePermission   = regexp.MustCompile(`failed to .*(?:socket|bind).*: Permission denied`)
)

// startHints turns dnsmasq's start-up complaints into what to change.
func startHints(out string, o origins) []string {
	var hints []string
	for _, m := range reUnknownIface.FindAllStringSubmatch(out, -1) {
		hints = append(hints, fmt.Sprintf("%s %q is not a network interface of this machine (see `ip link`)", o.iface(m[1]), m[1]))
	}
	for _, m := range reNoAddr.FindAllStringSubmatch(out, -1) {
		hints = append(hints, fmt.Sprintf("%s %s is not an address of this machine: it must be an address of network.interface (see `ip addr`)", o.listen(m[1]), m[1]))
	}
	for _, m := range reAddrInUse.FindAllStringSubmatch(out, -1) {
		// dnsmasq also listens on every address of the interfaces it
		// serves, so the address need not be one the configuration names.
		on := m[1]
		if on == o.network.BindAddr {
			on += " (network.bind_addr)"
		}
		hints = append(hints, fmt.Sprintf("another process already holds port 53 (DNS) or 69 (TFTP) on %s: another dnsmasq, DNS or TFTP server? (see `ss -lunp`)", on))
	}
	if reDHCPInUse.MatchString(out) {
		hints = append(hints, "another process already holds UDP port 67 (DHCP): another DHCP server runs here; stop it, or run mayu with --no-dnsmasq (see `ss -lunp 'sport = :67'`)")
	}
	for _, m := range reTFTPDir.FindAllStringSubmatch(out, -1) {
		hints = append(hints, fmt.Sprintf("%s %s must be an existing directory dnsmasq can read", o.tftp(m[1]), m[1]))
	}
	if reLeaseFile.MatchString(out) {
		hints = append(hints, "--runtime-dir must be writable: dnsmasq keeps its lease file there")
	}
	if rePermission.MatchString(out) {
		hints = append(hints, "dnsmasq needs root (or CAP_NET_BIND_SERVICE, CAP_NET_RAW and CAP_NET_ADMIN) to bind its ports: run mayu as root")
	}
	return slices.Compact(hints)
}
