package dnsmasq

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"mayu/pkg/config"
)

// ErrStart: dnsmasq cannot start with this configuration on this machine
// (an interface or address the configuration names is not there, the TFTP
// root or a boot file cannot be served, dnsmasq exited or did not bind its
// sockets during start-up). The message names the config key or flag.
var ErrStart = errors.New("dnsmasq: cannot start")

// sysView is what the start-up checks ask of the machine dnsmasq runs on.
// Tests replace it: a fake machine for the fake dnsmasq, or the real checks
// run inside the network namespace the test's dnsmasq runs in.
type sysView interface {
	// Interfaces lists the network interfaces with their addresses.
	Interfaces() ([]netIface, error)
	// Euid is the user dnsmasq runs as: mayu's, since -d keeps dnsmasq
	// from changing user (a user= line in the template is ignored).
	Euid() int
	// HeldUDPPorts returns the local ports of the UDP sockets process pid
	// holds open.
	HeldUDPPorts(pid int) (map[int]bool, error)
}

// netIface is one network interface and its addresses.
type netIface struct {
	Name  string
	Addrs []*net.IPNet
}

// realSys is this machine.
type realSys struct{}

func (realSys) Interfaces() ([]netIface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]netIface, 0, len(ifs))
	for _, ifc := range ifs {
		n := netIface{Name: ifc.Name}
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", ifc.Name, err)
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				n.Addrs = append(n.Addrs, ipn)
			}
		}
		out = append(out, n)
	}
	return out, nil
}

func (realSys) Euid() int { return os.Geteuid() }

func (realSys) HeldUDPPorts(pid int) (map[int]bool, error) { return heldUDPPorts(pid) }

// confFacts is what the start-up checks read from a rendered configuration:
// the facts dnsmasq itself acts on, whether they come from config.yaml, a
// flag or a line written straight into the template.
type confFacts struct {
	interfaces []string // interface=, wildcards left out
	listen     []string // listen-address=
	tftp       bool     // enable-tftp
	tftpRoots  []string // tftp-root=
	bootFiles  []string // dhcp-boot= and pxe-service= files served by our TFTP (no URLs, no other server)
	rangeStart []net.IP // first address of each IPv4 dhcp-range=
}

// parseConf reads the options the checks need from a dnsmasq configuration.
// Everything else is dnsmasq --test's business.
func parseConf(conf []byte) confFacts {
	var f confFacts
	sc := bufio.NewScanner(bytes.NewReader(conf))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, val, _ := strings.Cut(line, "=")
		key, val = strings.TrimSpace(key), strings.Trim(strings.TrimSpace(val), `"`)
		switch key {
		case "interface":
			for _, n := range splitList(val) {
				if !strings.Contains(n, "*") {
					f.interfaces = append(f.interfaces, n)
				}
			}
		case "listen-address":
			f.listen = append(f.listen, splitList(val)...)
		case "enable-tftp":
			f.tftp = true
		case "tftp-root":
			dir, _, _ := strings.Cut(val, ",")
			f.tftpRoots = append(f.tftpRoots, strings.Trim(dir, `"`))
		case "dhcp-boot":
			if file, ok := localBootFile(val); ok {
				f.bootFiles = append(f.bootFiles, file)
			}
		case "pxe-service":
			if file, ok := pxeServiceFile(val); ok {
				f.bootFiles = append(f.bootFiles, file)
			}
		case "dhcp-range":
			for _, field := range splitList(val) {
				if ip := net.ParseIP(field).To4(); ip != nil {
					f.rangeStart = append(f.rangeStart, ip)
					break
				}
			}
		}
	}
	return f
}

// localBootFile picks the file of a dhcp-boot value
// ([tag:x,]file[,server name[,server address]]) if our TFTP serves it: not
// an iPXE URL, not on another TFTP server.
func localBootFile(val string) (string, bool) {
	fields := splitList(val)
	for len(fields) > 0 && (strings.HasPrefix(fields[0], "tag:") || strings.HasPrefix(fields[0], "net:")) {
		fields = fields[1:]
	}
	if len(fields) == 0 || fields[0] == "" || strings.Contains(fields[0], "://") {
		return "", false
	}
	if len(fields) >= 3 && fields[2] != "" {
		return "", false
	}
	return fields[0], true
}

// pxeServiceFile picks the file a PXE client fetches from our TFTP for a
// pxe-service value ([tag:x,]<CSA>,<menu text>[,<basename>|<boot service
// type>][,<server>]). As dnsmasq's manual says, a basename without a suffix
// gets the PXE layer's ".0"; a name with one is sent as it is. A boot
// service type (a number), a local-boot entry (no basename) or another
// server's file is not ours to check.
func pxeServiceFile(val string) (string, bool) {
	fields := splitList(val)
	for len(fields) > 0 && strings.HasPrefix(fields[0], "tag:") {
		fields = fields[1:]
	}
	if len(fields) < 3 || len(fields) > 3 {
		return "", false
	}
	base := strings.Trim(fields[2], `"`)
	if base == "" || strings.Contains(base, "://") {
		return "", false
	}
	if _, err := strconv.Atoi(base); err == nil {
		return "", false
	}
	if !strings.Contains(base, ".") {
		base += ".0"
	}
	return base, true
}

func splitList(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// udpPorts is what a serving dnsmasq with this configuration must hold:
// DHCP (67) when it has a dhcp-range, TFTP (69) when enabled. DNS is left
// out: mayu does not need it, and a DNS socket dnsmasq cannot bind makes it
// exit at the same point of its start-up as the others.
func (f confFacts) udpPorts() []int {
	var ports []int
	if len(f.rangeStart) > 0 {
		ports = append(ports, 67)
	}
	if f.tftp {
		ports = append(ports, 69)
	}
	return ports
}

// Preflight checks what the rendered configuration needs of this machine,
// before dnsmasq is started: every interface= exists, every listen-address=
// is an address of an interface, with TFTP enabled every tftp-root= is a
// directory and every boot file dhcp-boot= names is in it and servable.
// It returns all problems at once, each wrapped with ErrStart and naming
// the config key or flag it comes from (errors.Join; nil if none). Doubts
// that are not certain failures (a bootstrap range outside the interface's
// subnets: fine behind a DHCP relay) are logged as warnings.
func (s *Supervisor) Preflight() error {
	conf, err := s.render()
	if err != nil {
		return err
	}
	s.mu.Lock()
	n := s.network
	s.mu.Unlock()
	return s.preflight(conf, n)
}

// preflight is Preflight for a configuration rendered from network n.
func (s *Supervisor) preflight(conf []byte, n config.Network) error {
	problems, warnings := checkConf(parseConf(conf), s.origins(n), s.sys)
	s.mu.Lock()
	for _, w := range warnings {
		if !s.warned[w] {
			s.warned[w] = true
			s.log.Warn("dnsmasq may not serve as meant", "reason", w)
		}
	}
	s.mu.Unlock()
	errs := make([]error, len(problems))
	for i, p := range problems {
		errs[i] = fmt.Errorf("%w: %s", ErrStart, p)
	}
	return errors.Join(errs...)
}

// origins names where a value of the rendered configuration came from, so
// a problem points at what the operator has to change.
type origins struct {
	network  config.Network
	tftpRoot string
	template string
}

func (s *Supervisor) origins(n config.Network) origins {
	return origins{network: n, tftpRoot: s.cfg.TFTPRoot, template: s.cfg.Template}
}

func (o origins) iface(name string) string {
	if name == o.network.Interface {
		return "network.interface"
	}
	return "interface= in the dnsmasq template " + o.template
}

func (o origins) listen(addr string) string {
	if addr == o.network.BindAddr {
		return "network.bind_addr"
	}
	return "listen-address= in the dnsmasq template " + o.template
}

func (o origins) tftp(dir string) string {
	if dir == o.tftpRoot {
		return "--tftproot"
	}
	return "tftp-root= in the dnsmasq template " + o.template
}

func (o origins) rangeStart(ip net.IP) string {
	if ip.Equal(net.ParseIP(o.network.BootstrapRange.Start)) {
		return "network.bootstrap_range"
	}
	return "dhcp-range= in the dnsmasq template " + o.template
}

// checkConf lists what keeps dnsmasq from starting (problems) or from
// serving the provisioning network (warnings) on machine sys.
func checkConf(f confFacts, o origins, sys sysView) (problems, warnings []string) {
	ifs, err := sys.Interfaces()
	if err != nil {
		return []string{fmt.Sprintf("cannot list the network interfaces: %v", err)}, nil
	}
	byName := map[string]netIface{}
	var names []string
	for _, ifc := range ifs {
		byName[ifc.Name] = ifc
		names = append(names, ifc.Name)
	}
	slices.Sort(names)
	// The interfaces dnsmasq serves: those named, else all.
	serving := ifs
	if len(f.interfaces) > 0 {
		serving = nil
	}
	for _, name := range f.interfaces {
		ifc, ok := byName[name]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s %q: no such network interface (this machine has: %s)",
				o.iface(name), name, strings.Join(names, ", ")))
			continue
		}
		serving = append(serving, ifc)
	}
	known := serving
	if len(known) == 0 {
		known = ifs // the named interfaces are missing: show what there is
	}
	for _, a := range f.listen {
		ip := net.ParseIP(a)
		if ip == nil {
			continue // dnsmasq --test reports it
		}
		owner := ifaceOf(ifs, ip)
		switch {
		case owner == "":
			problems = append(problems, fmt.Sprintf("%s %s: not an address of any network interface (%s)",
				o.listen(a), a, describeAddrs(known)))
		case len(f.interfaces) > 0 && !slices.Contains(f.interfaces, owner) && owner != "lo":
			warnings = append(warnings, fmt.Sprintf("%s %s is an address of %s, not of %s: machines are told to fetch their boot script from it",
				o.listen(a), a, owner, strings.Join(f.interfaces, ", ")))
		}
	}
	for _, start := range f.rangeStart {
		if len(serving) > 0 && !inSubnets(serving, start) {
			warnings = append(warnings, fmt.Sprintf("%s %s is in no subnet of %s (%s): dnsmasq answers no DHCP request arriving there directly",
				o.rangeStart(start), start, ifaceNames(serving), describeAddrs(serving)))
		}
	}
	if f.tftp {
		problems = append(problems, checkTFTP(f, o, sys.Euid())...)
	}
	return problems, warnings
}

// checkTFTP checks that every TFTP root is a directory dnsmasq can read and
// that every boot file the configuration hands out is in it and servable.
// dnsmasq runs as root here (see sysView.Euid) and then serves only files
// readable by others, whatever the directory modes; as another user it
// needs to read them itself.
func checkTFTP(f confFacts, o origins, euid int) []string {
	var problems []string
	if len(f.tftpRoots) == 0 {
		return nil // files relative to dnsmasq's working directory: nothing to check against
	}
	for _, dir := range f.tftpRoots {
		fi, err := os.Stat(dir)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s %s: %v", o.tftp(dir), dir, unwrapPathError(err)))
			continue
		case !fi.IsDir():
			problems = append(problems, fmt.Sprintf("%s %s: not a directory", o.tftp(dir), dir))
			continue
		case euid != 0 && unix.Faccessat(unix.AT_FDCWD, dir, unix.R_OK|unix.X_OK, unix.AT_EACCESS) != nil:
			problems = append(problems, fmt.Sprintf("%s %s: not readable by uid %d, which dnsmasq runs as", o.tftp(dir), dir, euid))
			continue
		}
		seen := map[string]bool{}
		for _, name := range f.bootFiles {
			if seen[name] {
				continue // named by dhcp-boot and pxe-service alike: one problem
			}
			seen[name] = true
			p := name
			if !filepath.IsAbs(p) {
				p = filepath.Join(dir, name)
			}
			if msg := servable(p, euid); msg != "" {
				problems = append(problems, fmt.Sprintf("%s %s: boot file %s: %s", o.tftp(dir), dir, name, msg))
			}
		}
	}
	return problems
}

// servable says why dnsmasq, running as euid, cannot serve file p ("" if
// it can).
func servable(p string, euid int) string {
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return unwrapPathError(err).Error()
	case !fi.Mode().IsRegular():
		return "not a regular file"
	case euid == 0 && fi.Mode().Perm()&0o004 == 0:
		return fmt.Sprintf("mode %04o, not readable by others; dnsmasq running as root serves only world-readable files: chmod o+r", fi.Mode().Perm())
	case euid != 0 && unix.Faccessat(unix.AT_FDCWD, p, unix.R_OK, unix.AT_EACCESS) != nil:
		return fmt.Sprintf("not readable by uid %d, which dnsmasq runs as", euid)
	}
	return ""
}

// unwrapPathError drops the path from an *os.PathError: the message names
// it already.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func ifaceOf(ifs []netIface, ip net.IP) string {
	for _, ifc := range ifs {
		for _, a := range ifc.Addrs {
			if a.IP.Equal(ip) {
				return ifc.Name
			}
		}
	}
	return ""
}

func inSubnets(ifs []netIface, ip net.IP) bool {
	for _, ifc := range ifs {
		for _, a := range ifc.Addrs {
			if a.Contains(ip) {
				return true
			}
		}
	}
	return false
}

func ifaceNames(ifs []netIface) string {
	names := make([]string, len(ifs))
	for i, ifc := range ifs {
		names[i] = ifc.Name
	}
	return strings.Join(names, ", ")
}

// describeAddrs lists the IPv4 addresses of ifs: "br0 has 192.168.2.2/24".
func describeAddrs(ifs []netIface) string {
	var parts []string
	for _, ifc := range ifs {
		var addrs []string
		for _, a := range ifc.Addrs {
			if a.IP.To4() != nil {
				addrs = append(addrs, a.String())
			}
		}
		if len(addrs) == 0 {
			parts = append(parts, ifc.Name+" has no IPv4 address")
		} else {
			parts = append(parts, ifc.Name+" has "+strings.Join(addrs, ", "))
		}
	}
	if len(parts) == 0 {
		return "no interfaces"
	}
	return strings.Join(parts, "; ")
}
