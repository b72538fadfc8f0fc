package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"mayu/pkg/config"
)

// Start-up checks of the set-up around mayu: the mounts, capability and
// ports a container (or a host) gives it. Each turns a failure that would
// otherwise show up late and obscurely (dnsmasq restarted forever, the
// first registration failing, an example config silently used) into one
// line at start that names the fix.

// capNetAdmin is CAP_NET_ADMIN's bit in /proc/self/status's CapEff.
const capNetAdmin = 12

// inContainer tells whether mayu runs in a Docker (or Podman) container,
// where the fixes are docker run flags.
func inContainer() bool {
	for _, f := range []string{"/.dockerenv", "/run/.containerenv"} {
		if _, err := os.Stat(f); err == nil {
			return true
		}
	}
	return false
}

// hint returns " (text)" in a container and "" elsewhere.
func hint(text string) string {
	if !inContainer() {
		return ""
	}
	return " (" + text + ")"
}

// explainConfigError rewords config.Load's error for the two set-up
// mistakes: no file at the path, or a directory there (what docker mounts
// when the host file of -v does not exist).
func explainConfigError(path string, err error) string {
	fi, statErr := os.Stat(path)
	switch {
	case errors.Is(statErr, fs.ErrNotExist):
		return fmt.Sprintf("config %s does not exist%s", path,
			hint("mount yours exactly there: -v $(pwd)/config.yaml:"+path+":ro; a config mounted at another path is not read"))
	case statErr == nil && fi.IsDir():
		return fmt.Sprintf("config %s is a directory, not a file%s", path,
			hint("docker mounts an empty directory when the host file of -v ...:"+path+" does not exist: check the host path"))
	}
	return err.Error()
}

// setupProblems lists what would stop mayu from working: a cluster
// directory it cannot write, dnsmasq without CAP_NET_ADMIN, UDP port 67
// taken. Missing OS images and an anonymous cluster volume are logged as
// warnings. The capability and port checks apply only as root (in a
// container, or a host's root), where dnsmasq would fail on them.
func setupProblems(o options, cfg *config.Config, log *slog.Logger) []string {
	var problems []string
	if o.showTemplates {
		return nil
	}
	if p := clusterDirProblem(o.clusterDir); p != "" {
		problems = append(problems, p)
	}
	warnAnonymousVolume(o.clusterDir, log)
	if cfg != nil {
		warnMissingImages(o.imagesDir, cfg.DefaultCoreOSVersion, log)
	}
	if o.noDnsmasq || os.Geteuid() != 0 {
		return problems
	}
	if ok, err := hasCapability(capNetAdmin); err == nil && !ok {
		problems = append(problems, "dnsmasq needs the capability NET_ADMIN, which mayu's process does not have"+
			hint("run the container with --cap-add=NET_ADMIN"))
	}
	if cfg != nil && (cfg.Network.PXE || cfg.Network.BootstrapRange.Start != "") {
		if err := udpPortFree(67); err != nil {
			problems = append(problems, fmt.Sprintf("UDP port 67 (DHCP) is already taken in this network namespace: %v; "+
				"another DHCP server (or another mayu) runs here: stop it, or run mayu where it is the only one", err))
		}
	}
	return problems
}

// clusterDirProblem checks that the cluster directory, when it exists, takes
// a new file.
func clusterDirProblem(dir string) string {
	if _, err := os.Stat(dir); err != nil {
		return "" // the store creates it, or reports why it cannot
	}
	f, err := os.CreateTemp(dir, ".mayu-write-check-*")
	if err == nil {
		name := f.Name()
		_ = f.Close()
		_ = os.Remove(name)
		return ""
	}
	switch {
	case errors.Is(err, syscall.EROFS):
		return fmt.Sprintf("cluster directory %s is read-only: mayu records every host change there%s", dir,
			hint("mount the volume read-write: -v <dir>:"+dir+" without :ro"))
	case errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf("cluster directory %s is not writable by uid %d: %v", dir, os.Geteuid(), err)
	}
	return fmt.Sprintf("cluster directory %s: %v", dir, err)
}

// anonymousVolume matches the source of a mount that is one of docker's
// anonymous volumes (a 64-hex-digit name).
var anonymousVolume = regexp.MustCompile(`/volumes/[0-9a-f]{64}/_data$`)

// warnAnonymousVolume warns when the cluster directory is an anonymous
// docker volume: the image's VOLUME made one because no -v named it, and
// the records go with the container.
func warnAnonymousVolume(dir string, log *slog.Logger) {
	if !inContainer() {
		return
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		// ID parent major:minor root mountpoint ...
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == abs && anonymousVolume.MatchString(f[3]) {
			log.Warn("the cluster directory is an anonymous docker volume: no -v names it, and the host records go when the container is removed; mount a directory: -v $(pwd)/cluster:"+abs, "dir", abs)
			return
		}
	}
}

// warnMissingImages warns when the default OS version's PXE kernel is not in
// the images directory: machines would fail to boot.
func warnMissingImages(imagesDir, version string, log *slog.Logger) {
	if version == "" {
		return
	}
	kernel := filepath.Join(imagesDir, version, "coreos_production_pxe.vmlinuz")
	if _, err := os.Stat(kernel); err == nil {
		return
	}
	abs, _ := filepath.Abs(imagesDir)
	log.Warn("no images for default_coreos_version: machines cannot PXE-boot until they are there"+
		hint("mount the images directory: -v $(pwd)/images:"+abs), "missing", kernel)
}

// hasCapability reads the effective capability set of this process.
func hasCapability(bit uint) (bool, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, err
			}
			return mask&(1<<bit) != 0, nil
		}
	}
	return false, errors.New("no CapEff in /proc/self/status")
}

// udpPortFree binds 0.0.0.0:port with SO_REUSEADDR, as dnsmasq's DHCP
// socket does: it fails exactly when dnsmasq's bind would.
func udpPortFree(port int) error {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return errors.New("address already in use")
		}
		return err
	}
	return pc.Close()
}
