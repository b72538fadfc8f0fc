package dnsmasq

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// sysProcAttr puts dnsmasq in its own process group and has the kernel kill
// it if mayu dies without stopping it (SIGKILL, OOM): an orphaned dnsmasq
// would keep answering DHCP with stale host state. Pdeathsig fires when the
// OS thread that started the child exits; the Go runtime only ends threads
// of goroutines that exit while locked to them, which the supervisor never
// does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// catchesSIGHUP reports whether the process has installed a handler for
// SIGHUP, from the SigCgt mask in /proc/<pid>/status.
func catchesSIGHUP(pid int) (bool, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "SigCgt:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return false, fmt.Errorf("dnsmasq: parse SigCgt of pid %d: %w", pid, err)
		}
		return mask&(1<<(uint(syscall.SIGHUP)-1)) != 0, nil
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	return false, fmt.Errorf("dnsmasq: no SigCgt in /proc/%d/status", pid)
}

// heldUDPPorts returns the local ports of the UDP sockets (IPv4 and IPv6)
// among pid's open files: the sockets are matched by inode between
// /proc/<pid>/fd and the pid's own network namespace's /proc/<pid>/net/udp*,
// so another process's socket on the same port does not count.
func heldUDPPorts(pid int) (map[int]bool, error) {
	base := "/proc/" + strconv.Itoa(pid)
	fds, err := os.ReadDir(base + "/fd")
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(base + "/fd/" + fd.Name())
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := strings.CutPrefix(target, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	ports := map[int]bool{}
	for _, table := range []string{"/net/udp", "/net/udp6"} {
		f, err := os.Open(base + table)
		if err != nil {
			if os.IsNotExist(err) && table == "/net/udp6" {
				continue // no IPv6
			}
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !inodes[fields[9]] {
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if !ok {
				continue
			}
			if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil {
				ports[int(p)] = true
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return ports, nil
}
