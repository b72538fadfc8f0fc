package proctest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// RepoRoot returns the repository root: the nearest directory at or above
// the working directory that holds go.work (go test runs in the package's
// directory, so every module's tests find it).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("proctest: no go.work above the working directory")
		}
		dir = parent
	}
}

// RepoPath joins parts to the repository root, failing t if there is none.
func RepoPath(t testing.TB, parts ...string) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(append([]string{root}, parts...)...)
}

// TestVersion is the version the binaries Build makes report.
const TestVersion = "9.9.9-test"

// Binaries are the paths of the built mayu, mayuctl and infopusher.
type Binaries struct{ Mayu, Mayuctl, Infopusher string }

var (
	buildOnce sync.Once
	built     Binaries
	buildErr  error
)

// Build builds mayu, mayuctl and infopusher from the working tree with
// version TestVersion, once per test binary, into a temporary directory.
// It keeps the environment's CGO_ENABLED, as the process tests always
// built them (make build's static binaries are bin/*). With -short it skips t instead: building and
// running the real binaries is what -short leaves out.
func Build(t testing.TB) Binaries {
	t.Helper()
	if testing.Short() {
		t.Skip("process test: skipped with -short (builds and runs the real binaries)")
	}
	buildOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "mayu-bin-")
		if err != nil {
			buildErr = err
			return
		}
		built = Binaries{filepath.Join(dir, "mayu"), filepath.Join(dir, "mayuctl"), filepath.Join(dir, "infopusher")}
		// -o dir/ with several main packages writes each under its name.
		cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+TestVersion, "-o", dir+"/",
			"./mayu", "./mayuctl", "./mayuctl/cmd/infopusher")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}
