package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// nsTag is a name part no other run on this machine uses: this process's
// PID and 3 random bytes in hex.
func nsTag() string {
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	return fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(suffix))
}

// runIP runs ip(8) with args, bounded to 30 s; the error carries its
// output.
func runIP(ctx context.Context, args ...string) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(cctx, "ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// addNetns creates network namespace ns and returns what removes it:
// whatever still runs in it is ours and is killed by PID, then the
// namespace is deleted (a failure is printed, not returned).
func addNetns(ctx context.Context, ns string) (remove func(), err error) {
	if err := runIP(ctx, "netns", "add", ns); err != nil {
		return nil, err
	}
	return func() {
		if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if err := runIP(context.Background(), "netns", "del", ns); err != nil {
			fmt.Fprintln(os.Stderr, "stormbench:", err)
		}
	}, nil
}
