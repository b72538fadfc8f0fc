// Package config reads and validates config.yaml. Decoding is strict (an
// unknown key is an error, usually a typo that would otherwise be silently
// ignored) and Parse reports every problem at once, type errors and semantic
// errors together, with the YAML line where one is known, so an operator
// fixes the file in one pass. Every value that reaches a line-based or
// templated file (dnsmasq's configuration, the final cloud-config or
// Ignition, a URL or a path) is held to what it may contain there, so no
// value can add a line or a path element. The address plan says which
// addresses of ip_range may be handed out (Allocatable).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"mayu/pkg/discovery"
)

// Network models accepted in network.network_model; each names a snippet
// (net_singlenic, net_bond, net_bridge).
var NetworkModels = []string{"singlenic", "bond", "bridge"}

// DefaultProfileName is the profile of every machine beyond the quantities.
const DefaultProfileName = "default"

// Config is config.yaml.
type Config struct {
	DefaultCoreOSVersion string                 `yaml:"default_coreos_version"`
	Network              Network                `yaml:"network"`
	Profiles             []Profile              `yaml:"profiles"`
	TemplatesEnv         map[string]interface{} `yaml:"templates_env"`

	// Warnings are what Parse accepted but an operator should know, each
	// prefixed "line N: " like a problem; the daemon logs them at start.
	Warnings []string `yaml:"-"`

	lines map[string]int // YAML line of each key path, for error messages
	plan  *addrPlan      // set by Parse; Allocatable builds one when nil
}

// Network is the network section. Templates see it as .ClusterNetwork and
// the dnsmasq template as .Network, so field names are part of the template
// interface.
type Network struct {
	PXE            bool     `yaml:"pxe"`
	UEFI           bool     `yaml:"uefi"`
	Interface      string   `yaml:"interface"`
	BindAddr       string   `yaml:"bind_addr"`
	BootstrapRange IPRange  `yaml:"bootstrap_range"`
	IPRange        IPRange  `yaml:"ip_range"`
	DNS            []string `yaml:"dns"`
	NTP            []string `yaml:"ntp"`
	Router         string   `yaml:"router"`
	SubnetSize     string   `yaml:"subnet_size"`
	SubnetGateway  string   `yaml:"subnet_gateway"`
	NetworkModel   string   `yaml:"network_model"`

	// EFIBootFile is the iPXE binary x86-64 UEFI clients (DHCP option 93
	// arch 7 or 9, and HTTP boot clients by URL) are given from tftproot:
	// one of EFIBootFiles, DefaultEFIBootFile when empty.
	EFIBootFile string `yaml:"efi_boot_file"`
	// ProxyDHCP makes mayu's dnsmasq a proxyDHCP server (RFC 4578's PXE
	// "proxy DHCP", dnsmasq's dhcp-range=<net>,proxy): it hands out no
	// addresses, only boot information, beside the site's DHCP server.
	ProxyDHCP bool `yaml:"proxy_dhcp"`
	// InstalledBoot is what DHCP does for installed and running machines:
	// InstalledBootIgnore (the default, as Mayu 0.11) leaves them
	// unanswered; InstalledBootLocal answers them and the boot script tells
	// iPXE to boot the local disk.
	InstalledBoot string `yaml:"installed_boot"`
	// SecureBoot sends every x86-64 UEFI PXE client (DHCP option 93 arch 7
	// or 9) the Secure Boot chain instead of iPXE: ShimBootFile, which
	// loads GRUBBootFile, which reads its configuration and the kernel over
	// TFTP. Firmware does not tell DHCP whether Secure Boot is on, so this
	// is configured, not detected; profiles[].secure_boot picks machines
	// one by one instead.
	SecureBoot bool `yaml:"secure_boot"`
	// ARM64 answers arm64 UEFI PXE clients (DHCP option 93 client
	// architecture 11, "ARM 64-bit UEFI", RFC 4578 and IANA's Processor
	// Architecture Types) with ARM64GRUBBootFile, Debian's GRUB network
	// image for arm64, which reads grub/grub.cfg, the kernel and the
	// initrd over TFTP; the kernel and initrd are the arm64 ones of
	// images/<version>/arm64/ (ARM64ImagesDir). With secure_boot too
	// (network or the machine's profile) they get ARM64ShimBootFile
	// instead, which loads ARM64GRUBBootFile. Off (Mayu 0.11's behaviour)
	// arm64 clients are answered as BIOS ones.
	ARM64 bool `yaml:"arm64"`
}

// The arm64 boot chain's file in tftproot: Debian's grubnetaa64.efi.signed
// (package grub-efi-arm64-signed) under the name its firmware's PXE fetches.
const ARM64GRUBBootFile = "grubaa64.efi"

// ARM64ShimBootFile is the arm64 Secure Boot chain's first stage in
// tftproot: Debian's Microsoft-signed shim for arm64 (package shim-signed
// of arm64, shimaa64.efi.signed), which loads ARM64GRUBBootFile from the
// same TFTP directory (shim's default loader name for aa64).
const ARM64ShimBootFile = "shimaa64.efi"

// ARM64ImagesDir is the subdirectory of images/<version>/ holding the arm64
// files under the x86-64 names (coreos_production_pxe.vmlinuz, ...): the
// 0.11 layout stays the x86-64 one.
const ARM64ImagesDir = "arm64"

// GRUBTree tells whether mayu serves GRUB's TFTP tree (package grubnet):
// for the Secure Boot chain or for arm64 machines.
func (c *Config) GRUBTree() bool { return c.SecureBootAnywhere() || c.Network.ARM64 }

// The Secure Boot chain's files in tftproot (Debian's shim-signed and
// grub-efi-amd64-signed): the Microsoft-signed shim, and the
// Debian-signed GRUB network image under the name shim loads next to
// itself.
const (
	ShimBootFile = "shimx64.efi"
	GRUBBootFile = "grubx64.efi"
)

// SecureBootAnywhere tells whether any machine may get the Secure Boot
// chain: network.secure_boot or a profile's secure_boot.
func (c *Config) SecureBootAnywhere() bool {
	if c.Network.SecureBoot {
		return true
	}
	for _, p := range c.Profiles {
		if p.SecureBoot {
			return true
		}
	}
	return false
}

// The values of network.efi_boot_file: Debian's ipxe package ships both;
// snponly.efi drives the NIC through the firmware's own network stack,
// ipxe.efi carries iPXE's drivers.
const (
	DefaultEFIBootFile = "ipxe.efi"
	SNPOnlyEFIBootFile = "snponly.efi"
)

// EFIBootFiles are the accepted network.efi_boot_file values.
var EFIBootFiles = []string{DefaultEFIBootFile, SNPOnlyEFIBootFile}

// The values of network.installed_boot.
const (
	InstalledBootIgnore = "ignore"
	InstalledBootLocal  = "local"
)

// InstalledBoots are the accepted network.installed_boot values.
var InstalledBoots = []string{InstalledBootIgnore, InstalledBootLocal}

// BootsInstalledLocally tells whether DHCP answers installed and running
// machines and the boot script sends them to their local disk:
// network.installed_boot local, and always with network.proxy_dhcp, since
// a proxyDHCP dnsmasq answers a MAC its hosts file marks "ignore" all the
// same (dnsmasq 2.90, pkg/dnsmasq TestNetInstalledBoot): ignoring cannot
// keep an installed machine from iPXE there, so the boot script must.
func (n Network) BootsInstalledLocally() bool {
	return n.InstalledBoot == InstalledBootLocal || n.ProxyDHCP
}

// BaseURL is the URL machines reach mayu at on the provisioning network,
// http(s)://<bind_addr>:<port> without a trailing slash: port is
// --http-port, noTLS (--no-tls) picks http. Every URL handed to a machine
// (DHCP boot script, install scripts, rendered configs, etcd discovery)
// starts with it, so it is built here and nowhere else.
func (n Network) BaseURL(port int, noTLS bool) string {
	scheme := "https"
	if noTLS {
		scheme = "http"
	}
	return scheme + "://" + net.JoinHostPort(n.BindAddr, strconv.Itoa(port))
}

// IPRange is an inclusive range of IPv4 addresses.
type IPRange struct {
	Start string `yaml:"start"`
	End   string `yaml:"end"`
}

// Profile is a class of machines, assigned in config order to new machines
// until its quantity is reached.
type Profile struct {
	Name             string   `yaml:"name"`
	Quantity         int      `yaml:"quantity"`
	Tags             []string `yaml:"tags"`
	DisableEngine    bool     `yaml:"disable_engine"`
	CoreOSVersion    string   `yaml:"coreos_version"`
	EtcdClusterToken string   `yaml:"etcd_cluster_token"`
	// SecureBoot gives the machines of this profile the Secure Boot chain
	// (see Network.SecureBoot) from their next PXE boot on: DHCP knows a
	// machine's profile only once it has registered, so a new machine
	// needs network.secure_boot for its first boot.
	SecureBoot bool `yaml:"secure_boot"`
}

// Load reads, decodes and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes and validates config.yaml content. A malformed document
// (not YAML at all) is reported alone; otherwise the *ValidationError lists
// every problem, type errors and semantic errors together, one per line in
// the order of the file. On success the returned Config carries Warnings.
func Parse(b []byte) (*Config, error) {
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var typeErrs []problem
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("file is empty")
		}
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, err
		}
		// The decoder went on past each type error and filled in every
		// other value, so the rest of the file can still be checked.
		for _, msg := range te.Errors {
			typeErrs = append(typeErrs, problemFromYAML(msg))
		}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, err
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		// Nothing decoded into the struct; its checks would only repeat
		// "is required" for every key.
		return nil, newValidationError(typeErrs)
	}
	c.lines = map[string]int{}
	collectLines(&root, "", c.lines)
	c.applyDefaults()

	k := &checker{lines: c.lines, skip: map[int]bool{}}
	for _, p := range typeErrs {
		if p.hidesValue && p.line > 0 {
			k.skip[p.line] = true
		}
	}
	plan := c.check(k)
	if problems := append(typeErrs, k.problems...); len(problems) > 0 {
		return nil, newValidationError(problems)
	}
	c.plan = plan
	c.Warnings = formatProblems(k.warnings)
	return c, nil
}

func (c *Config) applyDefaults() {
	if c.Network.NetworkModel == "" {
		c.Network.NetworkModel = "singlenic"
	}
	if c.Network.EFIBootFile == "" {
		c.Network.EFIBootFile = DefaultEFIBootFile
	}
	if c.Network.InstalledBoot == "" {
		c.Network.InstalledBoot = InstalledBootIgnore
	}
	if c.TemplatesEnv == nil {
		c.TemplatesEnv = map[string]interface{}{}
	}
}

// Validate checks the configuration and returns every problem joined, each
// on its own line, prefixed with the YAML line where it is known. It does
// not change c; Parse has already run it and set Warnings.
func (c *Config) Validate() error {
	k := &checker{lines: c.lines}
	c.check(k)
	if len(k.problems) == 0 {
		return nil
	}
	return newValidationError(k.problems)
}

// check records every problem and warning of c in k and returns the address
// plan, nil when the addresses are too broken to plan.
func (c *Config) check(k *checker) *addrPlan {
	if strings.TrimSpace(c.DefaultCoreOSVersion) == "" {
		k.add("default_coreos_version", "default_coreos_version is required")
	} else {
		k.version("default_coreos_version", "default_coreos_version", c.DefaultCoreOSVersion)
	}

	n := c.Network
	if n.Interface != "" && !validIfName(n.Interface) {
		k.add("network.interface", "network.interface %q is not an interface name (1 to 15 letters, digits, '.', '-' or '_', as Linux allows in IFNAMSIZ)", n.Interface)
	}
	if n.BindAddr == "" {
		k.add("network.bind_addr", "network.bind_addr is required")
	} else if ip, ok := k.ipv4("network.bind_addr", "network.bind_addr", n.BindAddr); ok && !routable(ip) {
		k.add("network.bind_addr", "network.bind_addr %s cannot be reached by machines: it is in every URL they are given", n.BindAddr)
	}
	if n.Router != "" {
		k.ip("network.router", "network.router", n.Router)
	}
	if n.SubnetGateway != "" {
		k.ip("network.subnet_gateway", "network.subnet_gateway", n.SubnetGateway)
	}
	for i, d := range n.DNS {
		k.ip(fmt.Sprintf("network.dns.%d", i), fmt.Sprintf("network.dns[%d]", i), d)
	}
	for i, s := range n.NTP {
		k.server(fmt.Sprintf("network.ntp.%d", i), fmt.Sprintf("network.ntp[%d]", i), s)
	}
	if _, ok := prefixLen(n.SubnetSize); !ok {
		k.add("network.subnet_size", "network.subnet_size %q is neither a prefix length 0-32 nor a dotted netmask such as 255.255.255.0", n.SubnetSize)
	}
	// In proxyDHCP mode the site's DHCP server leases the addresses: a
	// bootstrap range is then neither needed nor used.
	boot, bootOK := k.ipRange(n.BootstrapRange, "network.bootstrap_range", n.PXE && !n.ProxyDHCP)
	if n.ProxyDHCP {
		if !n.PXE {
			k.add("network.proxy_dhcp", "network.proxy_dhcp needs network.pxe: true: a proxyDHCP server hands out nothing but boot information")
		}
		if _, explicit := k.lines["network.installed_boot"]; explicit && n.InstalledBoot == InstalledBootIgnore {
			k.warn("network.installed_boot", "network.installed_boot ignore acts as local with network.proxy_dhcp: a proxyDHCP server cannot leave a machine unanswered, so the boot script sends installed machines to their disk")
		}
		if n.BootstrapRange.Start != "" || n.BootstrapRange.End != "" {
			k.warn("network.bootstrap_range", "network.bootstrap_range is not leased with network.proxy_dhcp: the site's DHCP server hands out the addresses")
		}
	}
	if !contains(EFIBootFiles, n.EFIBootFile) {
		k.add("network.efi_boot_file", "network.efi_boot_file %q is not an iPXE EFI binary mayu ships (want one of %s)",
			n.EFIBootFile, strings.Join(EFIBootFiles, ", "))
	}
	if !contains(InstalledBoots, n.InstalledBoot) {
		k.add("network.installed_boot", "network.installed_boot %q is unknown (want one of %s)",
			n.InstalledBoot, strings.Join(InstalledBoots, ", "))
	}
	if c.SecureBootAnywhere() && !n.PXE {
		k.add("network.secure_boot", "secure_boot (network or profile) needs network.pxe: true: the chain is served over TFTP")
	}
	if n.ARM64 && !n.PXE {
		k.add("network.arm64", "network.arm64 needs network.pxe: true: arm64 machines boot GRUB over TFTP")
	}
	if n.SecureBoot && n.ProxyDHCP {
		k.add("network.secure_boot", "network.secure_boot is not supported with network.proxy_dhcp: Debian's signed GRUB looks for grub/grub.cfg on the server of the DHCP answer it booted with, the site's in proxyDHCP mode (in qemu it stops at its prompt)")
	}
	if n.ARM64 && n.ProxyDHCP {
		k.add("network.arm64", "network.arm64 is not supported with network.proxy_dhcp: Debian's GRUB looks for grub/grub.cfg on the server of the DHCP answer it booted with, the site's in proxyDHCP mode (in qemu it stops at its prompt)")
	}
	ips, ipsOK := k.ipRange(n.IPRange, "network.ip_range", true)
	if !contains(NetworkModels, n.NetworkModel) {
		k.add("network.network_model", "network.network_model %q is unknown (want one of %s)",
			n.NetworkModel, strings.Join(NetworkModels, ", "))
	}

	seen := map[string]bool{}
	for i, p := range c.Profiles {
		path := fmt.Sprintf("profiles.%d", i)
		what := fmt.Sprintf("profiles[%d]", i)
		switch {
		case strings.TrimSpace(p.Name) == "":
			k.add(path, "%s has no name", what)
		case seen[p.Name]:
			k.add(path, "%s: duplicate profile name %q", what, p.Name)
		default:
			k.text(path+".name", what+".name", p.Name)
		}
		seen[p.Name] = true
		if p.Quantity < 0 {
			k.add(path+".quantity", "%s %q: quantity %d is negative", what, p.Name, p.Quantity)
		}
		for j, t := range p.Tags {
			k.tag(fmt.Sprintf("%s.tags.%d", path, j), fmt.Sprintf("%s.tags[%d]", what, j), t)
		}
		if p.CoreOSVersion != "" {
			k.version(path+".coreos_version", what+".coreos_version", p.CoreOSVersion)
		}
		if p.EtcdClusterToken != "" && !discovery.ValidToken(p.EtcdClusterToken) {
			k.add(path+".etcd_cluster_token", "%s.etcd_cluster_token %q is not a discovery token (letters, digits, '-' and '_', at most 128, first a letter or digit): it becomes a URL path element",
				what, p.EtcdClusterToken)
		}
		if p.SecureBoot && n.ProxyDHCP {
			k.add(path+".secure_boot", "%s.secure_boot is not supported with network.proxy_dhcp (Debian's signed GRUB reads its grub.cfg from the site's DHCP server in proxyDHCP mode)", what)
		}
	}

	k.templatesEnv(c.TemplatesEnv)

	if !ipsOK {
		return nil
	}
	plan := c.newPlan(ips, boot, bootOK)
	plan.check(k, n)
	return plan
}

// ValidationError lists every problem of a configuration.
type ValidationError struct {
	// Problems are in the order of the file, each prefixed "line N: "
	// where the line is known; those without a line come first.
	Problems []string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%d problem(s):\n  %s", len(e.Problems), strings.Join(e.Problems, "\n  "))
}

func newValidationError(ps []problem) error {
	return &ValidationError{Problems: formatProblems(ps)}
}

// problem is an error or warning with the YAML line it is about (0 when
// unknown).
type problem struct {
	line int
	msg  string
	// hidesValue: a type error, after which the field holds its zero value,
	// so checks of that field (and of what encloses it) would only report
	// noise such as "is required".
	hidesValue bool
}

// problemFromYAML splits yaml.v3's "line N: message".
func problemFromYAML(msg string) problem {
	p := problem{msg: msg}
	var line int
	if _, err := fmt.Sscanf(msg, "line %d:", &line); err == nil {
		p.line = line
		p.msg = strings.TrimSpace(msg[strings.IndexByte(msg, ':')+1:])
	}
	// Unknown and duplicate keys leave the known values intact.
	p.hidesValue = !strings.Contains(msg, " not found in type ") && !strings.Contains(msg, " already set in type ")
	return p
}

// formatProblems sorts by line (stable, unknown lines first) and prefixes
// each message with its line.
func formatProblems(ps []problem) []string {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].line < ps[j].line })
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		if p.line > 0 {
			out = append(out, fmt.Sprintf("line %d: %s", p.line, p.msg))
		} else {
			out = append(out, p.msg)
		}
	}
	return out
}

// checker collects problems and warnings, each attached to the YAML line of
// a dotted key path (profiles.0.quantity).
type checker struct {
	lines    map[string]int
	skip     map[int]bool // lines of type errors
	problems []problem
	warnings []problem
}

func (k *checker) add(path, format string, args ...interface{}) {
	// A value whose key, or an enclosing key, had a type error was not
	// decoded: the type error already says what is wrong with it.
	for p := path; ; {
		if k.skip[k.lines[p]] {
			return
		}
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			break
		}
		p = p[:i]
	}
	k.problems = append(k.problems, problem{line: k.lines[path], msg: fmt.Sprintf(format, args...)})
}

func (k *checker) warn(path, format string, args ...interface{}) {
	k.warnings = append(k.warnings, problem{line: k.lines[path], msg: fmt.Sprintf(format, args...)})
}

// Profile returns the profile with this name.
func (c *Config) Profile(name string) (Profile, bool) {
	for _, p := range c.Profiles {
		if p.Name == name {
			return p, true
		}
	}
	return Profile{}, false
}

// CoreOSVersion returns the OS version of a profile, else the default.
func (c *Config) CoreOSVersion(p Profile) string {
	if p.CoreOSVersion != "" {
		return p.CoreOSVersion
	}
	return c.DefaultCoreOSVersion
}

// Bounds returns the first and last address of the range. The range must
// have been validated.
func (r IPRange) Bounds() (net.IP, net.IP) {
	return net.ParseIP(r.Start).To4(), net.ParseIP(r.End).To4()
}

type span struct{ lo, hi uint32 }

func (s span) overlaps(o span) bool { return s.lo <= o.hi && o.lo <= s.hi }

// IPToUint32 converts an IPv4 address to a number.
func IPToUint32(ip net.IP) uint32 {
	v4 := ip.To4()
	return uint32(v4[0])<<24 | uint32(v4[1])<<16 | uint32(v4[2])<<8 | uint32(v4[3])
}

// Uint32ToIP converts a number to an IPv4 address.
func Uint32ToIP(n uint32) net.IP {
	return net.IPv4(byte(n>>24), byte(n>>16), byte(n>>8), byte(n)).To4()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// collectLines records the line of every mapping key and sequence item,
// keyed by dotted path (profiles.0.quantity).
func collectLines(n *yaml.Node, path string, out map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			collectLines(c, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			out[p] = k.Line
			collectLines(n.Content[i+1], p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s.%d", path, i)
			out[p] = c.Line
			collectLines(c, p, out)
		}
	}
}
