// Command mayuctl is the command-line client of the mayu admin API.
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
	fmt.Printf("mayuctl %s (%s)\n", version, commit)
	os.Exit(0)
}
