//go:build !linux

package dnsmasq

import (
	"errors"
	"syscall"
)

// sysProcAttr puts dnsmasq in its own process group. Only Linux has a parent
// death signal; elsewhere a killed mayu can leave dnsmasq behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// catchesSIGHUP cannot be told without /proc; assume the handler is there.
func catchesSIGHUP(pid int) (bool, error) { return true, nil }

// heldUDPPorts cannot be told without /proc.
func heldUDPPorts(pid int) (map[int]bool, error) { return nil, errors.ErrUnsupported }
