// Package hostinfo collects the facts a machine reports to mayu while it
// installs (its DMI serial, its NICs and their MACs, the NIC of its default
// route, its BMC address) and defines the JSON the host-info helper POSTs
// to the final-config URL.
//
// Everything is read from sysfs and procfs under configurable roots, so
// tests run against a fake tree; the only command run is ipmitool.
package hostinfo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"mayu/pkg/host"
)

// Info is the body the helper POSTs to /final-cloud-config.yaml (or
// /final-ignition-config.json). Field names and types are those of Mayu
// 0.11's machinedata.HostData, so old helpers and old daemons interoperate.
// A nil IPMIAddress encodes as "" (net.IP's text form), as it always did.
type Info struct {
	Serial       string
	NetDevs      []NetDev
	IPMIAddress  net.IP
	ConnectedNIC string
}

// NetDev is one physical network interface.
type NetDev struct {
	Name       string
	MacAddress string
}

// Errors of Collect.
var (
	// ErrNoSerial: none of the DMI files of the serial rule holds a value
	// that is not a vendor placeholder.
	ErrNoSerial = errors.New("hostinfo: no usable DMI serial")
	// ErrRead: a file every Linux system has could not be read.
	ErrRead = errors.New("hostinfo: cannot read system information")
)

// Config configures a Collector. The zero value reads the real system.
type Config struct {
	// SysRoot is where sysfs is mounted ("/sys").
	SysRoot string
	// ProcRoot is where procfs is mounted ("/proc").
	ProcRoot string
	// IPMITool is the ipmitool binary: a path, or a name looked up in PATH
	// ("ipmitool"). "-" turns the IPMI lookup off.
	IPMITool string
	// IPMITimeout bounds `ipmitool lan print`; a BMC that does not answer
	// must not stall an install (default 20s).
	IPMITimeout time.Duration
	// Serial, when set, is reported instead of the DMI serial, for a script
	// that computed the serial itself (by the same rule, from
	// GET /machine-serial.sh). It is cleaned as a DMI value is (surrounding
	// whitespace removed, inner whitespace "-") and refused when it is a
	// placeholder or an unsubstituted template marker.
	Serial string
	// Logger receives notes (placeholder serials, skipped interfaces, no
	// ipmitool); nil discards them.
	Logger *slog.Logger
}

// Collector reads the facts of the machine it runs on.
type Collector struct {
	cfg Config
	log *slog.Logger
}

// New returns a Collector with cfg's defaults filled in.
func New(cfg Config) *Collector {
	if cfg.SysRoot == "" {
		cfg.SysRoot = "/sys"
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	if cfg.IPMITool == "" {
		cfg.IPMITool = "ipmitool"
	}
	if cfg.IPMITimeout <= 0 {
		cfg.IPMITimeout = 20 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Collector{cfg: cfg, log: log}
}

// Collect gathers everything. A machine without a usable serial, or whose
// /sys/class/net or /proc/net/route cannot be read, is an error: mayu could
// not match or configure it. A missing BMC is not.
func (c *Collector) Collect(ctx context.Context) (Info, error) {
	serial, err := c.Serial()
	if err != nil {
		return Info{}, err
	}
	devs, err := c.NetDevs()
	if err != nil {
		return Info{}, err
	}
	nic, err := c.ConnectedNIC()
	if err != nil {
		return Info{}, err
	}
	return Info{
		Serial:       serial,
		NetDevs:      devs,
		IPMIAddress:  c.IPMIAddress(ctx),
		ConnectedNIC: nic,
	}, nil
}

// Serial returns the machine's serial by mayu's serial rule (host.SerialScript,
// the rule every script that names the machine uses; spec 7.4): the first of
// host.SerialSources() under SysRoot/devices/virtual/dmi/id that can be read
// and is not a vendor placeholder, cleaned by host.CleanSerial. A skipped
// placeholder is noted in the log.
//
// With Config.Serial set (not only whitespace), that value is cleaned the
// same way and reported instead, unless it is a placeholder or an unsubstituted template
// marker (host.CheckSerial): then the error wraps host.ErrInvalidSerial.
//
// When no file holds a usable value the error wraps ErrNoSerial and says
// what each file held: boards that only carry placeholders cannot be told
// apart, and mayu refuses placeholders.
func (c *Collector) Serial() (string, error) {
	if s := host.CleanSerial(c.cfg.Serial); s != "" {
		if err := host.CheckSerial(s); err != nil {
			return "", fmt.Errorf("hostinfo: the serial given by the script: %w", err)
		}
		return s, nil
	}
	dir := filepath.Join(c.cfg.SysRoot, "devices", "virtual", "dmi", "id")
	var seen []string
	for _, name := range host.SerialSources() {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			// Absent on some boards, root-only on others: try the next.
			c.log.Debug("DMI file not readable", "file", name, "err", err)
			seen = append(seen, name+" unreadable")
			continue
		}
		v := host.CleanSerial(string(b))
		if host.IsPlaceholderSerial(v) {
			c.log.Info("DMI value is a vendor placeholder, trying the next", "file", name, "value", v)
			seen = append(seen, fmt.Sprintf("%s %q (a placeholder)", name, v))
			continue
		}
		return v, nil
	}
	return "", fmt.Errorf("%w in %s (%s)", ErrNoSerial, dir, strings.Join(seen, ", "))
}

// NetDevs returns every physical interface with its MAC address, sorted by
// name. An interface is virtual (lo, bridges, bonds, VLANs, veth, tun) when
// /sys/devices/virtual/net/<name> exists or it has no "device" link to a
// bus device. Interfaces whose address is not an Ethernet MAC (InfiniBand's
// 20 bytes) are skipped: mayu's records and dnsmasq take Ethernet MACs only.
func (c *Collector) NetDevs() ([]NetDev, error) {
	classNet := filepath.Join(c.cfg.SysRoot, "class", "net")
	entries, err := os.ReadDir(classNet)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRead, err)
	}
	devs := []NetDev{}
	for _, e := range entries {
		name := e.Name()
		if c.virtual(name) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(classNet, name, "address"))
		if err != nil {
			c.log.Info("interface skipped: no address", "interface", name, "err", err)
			continue
		}
		mac, err := host.NormalizeMAC(strings.TrimSpace(string(b)))
		if err != nil {
			c.log.Info("interface skipped: not an Ethernet MAC", "interface", name, "address", strings.TrimSpace(string(b)))
			continue
		}
		devs = append(devs, NetDev{Name: name, MacAddress: mac})
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].Name < devs[j].Name })
	return devs, nil
}

func (c *Collector) virtual(name string) bool {
	if _, err := os.Lstat(filepath.Join(c.cfg.SysRoot, "devices", "virtual", "net", name)); err == nil {
		return true
	}
	_, err := os.Lstat(filepath.Join(c.cfg.SysRoot, "class", "net", name, "device"))
	return err != nil
}

// Flags of /proc/net/route (linux/route.h).
const rtfUp = 0x0001

// ConnectedNIC returns the interface of the default route (destination and
// mask 0.0.0.0, route up), the one with the lowest metric when there are
// several, or "" when there is none.
func (c *Collector) ConnectedNIC() (string, error) {
	path := filepath.Join(c.cfg.ProcRoot, "net", "route")
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrRead, err)
	}
	best, bestMetric := "", uint64(0)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for first := true; sc.Scan(); first = false {
		f := strings.Fields(sc.Text())
		// Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
		if first || len(f) < 8 {
			continue
		}
		dest, err1 := strconv.ParseUint(f[1], 16, 32)
		flags, err2 := strconv.ParseUint(f[3], 16, 32)
		metric, err3 := strconv.ParseUint(f[6], 10, 32)
		mask, err4 := strconv.ParseUint(f[7], 16, 32)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			continue
		}
		if dest != 0 || mask != 0 || flags&rtfUp == 0 {
			continue
		}
		if best == "" || metric < bestMetric {
			best, bestMetric = f[0], metric
		}
	}
	return best, nil
}

// IPMIAddress returns the BMC's LAN address from `ipmitool lan print`, or
// nil when there is no ipmitool, no BMC, or no address. None of these stops
// an install; each is noted in the log.
func (c *Collector) IPMIAddress(ctx context.Context) net.IP {
	if c.cfg.IPMITool == "-" {
		return nil
	}
	bin, err := exec.LookPath(c.cfg.IPMITool)
	if err != nil {
		c.log.Info("ipmitool not found; IPMI address not reported", "ipmitool", c.cfg.IPMITool)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.IPMITimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "lan", "print")
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		c.log.Info("ipmitool lan print failed; IPMI address not reported", "err", err)
		return nil
	}
	ip := ParseIPMILanPrint(out)
	if ip == nil {
		c.log.Info("ipmitool lan print shows no IP address")
	}
	return ip
}

// ParseIPMILanPrint finds "IP Address : a.b.c.d" in `ipmitool lan print`
// output ("IP Address Source" is a different line). 0.0.0.0 means none.
func ParseIPMILanPrint(out []byte) net.IP {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "IP Address" {
			continue
		}
		ip := net.ParseIP(strings.TrimSpace(value))
		if ip == nil || ip.IsUnspecified() {
			return nil
		}
		if v4 := ip.To4(); v4 != nil {
			return v4
		}
		return ip
	}
	return nil
}
