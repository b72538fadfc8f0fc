// Command infopusher collects machine facts and posts them to mayu.
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
	fmt.Printf("infopusher %s (%s)\n", version, commit)
	os.Exit(0)
}
