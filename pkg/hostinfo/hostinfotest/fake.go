// Package hostinfotest builds fake sysfs and procfs trees shaped like the
// kernel's, for tests of the host-info helper: class/net entries are
// symlinks into devices/, physical NICs have a "device" link to their bus
// device, virtual ones live under devices/virtual/net.
package hostinfotest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// NIC is one interface of the fake machine.
type NIC struct {
	Name    string
	Address string // content of the address file ("" = no address file)
	Virtual bool   // under devices/virtual/net (lo, bridges, bonds, veth)
	// NoDevice makes a non-virtual interface without a device link, as some
	// odd drivers (and the virtual ones) have.
	NoDevice bool
}

// System is the fake machine.
type System struct {
	// DMI maps product_serial, chassis_serial, board_serial to their
	// content; a missing key means no such file.
	DMI  map[string]string
	NICs []NIC
	// Route is /proc/net/route's content; "" means no such file.
	Route string
}

// Write creates the trees under dir and returns the sysfs and procfs roots.
func Write(t testing.TB, dir string, s System) (sysRoot, procRoot string) {
	t.Helper()
	sysRoot = filepath.Join(dir, "sys")
	procRoot = filepath.Join(dir, "proc")
	dmi := filepath.Join(sysRoot, "devices", "virtual", "dmi", "id")
	mkdir(t, dmi)
	for name, v := range s.DMI {
		write(t, filepath.Join(dmi, name), v)
	}
	classNet := filepath.Join(sysRoot, "class", "net")
	mkdir(t, classNet)
	for i, n := range s.NICs {
		var devDir string
		switch {
		case n.Virtual:
			devDir = filepath.Join(sysRoot, "devices", "virtual", "net", n.Name)
		default:
			pci := filepath.Join(sysRoot, "devices", "pci0000:00", fmt.Sprintf("0000:00:%02x.0", 3+i))
			devDir = filepath.Join(pci, "net", n.Name)
			mkdir(t, devDir)
			if !n.NoDevice {
				link(t, "../../../"+filepath.Base(pci), filepath.Join(devDir, "device"))
			}
		}
		mkdir(t, devDir)
		if n.Address != "" {
			write(t, filepath.Join(devDir, "address"), n.Address+"\n")
		}
		rel, err := filepath.Rel(classNet, devDir)
		if err != nil {
			t.Fatal(err)
		}
		link(t, rel, filepath.Join(classNet, n.Name))
	}
	mkdir(t, filepath.Join(procRoot, "net"))
	if s.Route != "" {
		write(t, filepath.Join(procRoot, "net", "route"), s.Route)
	}
	return sysRoot, procRoot
}

// RouteHeader is the first line of /proc/net/route.
const RouteHeader = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"

func mkdir(t testing.TB, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func write(t testing.TB, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func link(t testing.TB, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}
