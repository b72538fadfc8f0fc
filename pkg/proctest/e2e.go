package proctest

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// RequireE2E stops t for a reason outside the code under test (not root, a
// Debian package missing, a mount refused): it skips loudly, or fails
// when MAYU_E2E=required, as CI (.ci/run) sets it, so that nothing is
// skipped there unseen.
func RequireE2E(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("MAYU_E2E") == "required" {
		t.Fatalf("MAYU_E2E=required but %s", reason)
	}
	t.Skipf("SKIPPED: %s (set up the machine to run it; MAYU_E2E=required makes this a failure)", reason)
}

// RequireRoot is RequireE2E unless the test runs as root; why says what
// the test needs root for.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		RequireE2E(t, "not root (uid "+strconv.Itoa(os.Geteuid())+"), cannot "+why)
	}
}

// RequireCommand returns the path of the command name from PATH, or is
// RequireE2E naming the Debian package that installs it.
func RequireCommand(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		RequireE2E(t, name+" is not in PATH (Debian package "+debianPackage+")")
	}
	return p
}

// RequireFile is RequireE2E when path (a binary at a fixed place, such as
// /usr/sbin/dnsmasq) does not exist, naming the Debian package.
func RequireFile(t testing.TB, path, debianPackage string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		RequireE2E(t, path+" is missing (Debian package "+debianPackage+"): "+err.Error())
	}
}
