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
