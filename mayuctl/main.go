// Command mayuctl is the command-line client of mayu's admin API: list the
// machines, show one, change their records, and (on an installed machine)
// report boot-complete. The commands live in app.go; main only wires the
// process to them.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// Set with -ldflags -X at build time.
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
