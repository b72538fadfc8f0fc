// Command mayu is the provisioning daemon.
package main

import (
	"fmt"
	"os"
)

// Set with -ldflags -X at build time.
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	fmt.Printf("mayu %s (%s)\n", version, commit)
	os.Exit(0)
}
