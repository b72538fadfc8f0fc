// Package config reads and validates config.yaml. Decoding is strict (an
// unknown key is an error, usually a typo that would otherwise be silently
// ignored) and Validate reports every problem at once, with the YAML line
// where one is known, so an operator fixes the file in one pass.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
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

	lines map[string]int // YAML line of each key path, for error messages
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

// Parse decodes and validates config.yaml content. The error lists every
// problem found, one per line.
func Parse(b []byte) (*Config, error) {
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("file is empty")
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, errors.New(strings.Join(te.Errors, "\n"))
		}
		return nil, err
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err == nil {
		c.lines = map[string]int{}
		collectLines(&root, "", c.lines)
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) applyDefaults() {
	if c.Network.NetworkModel == "" {
		c.Network.NetworkModel = "singlenic"
	}
	if c.TemplatesEnv == nil {
		c.TemplatesEnv = map[string]interface{}{}
	}
}

// Validate checks the configuration and returns every problem joined, each
// on its own line, prefixed with the YAML line where it is known.
func (c *Config) Validate() error {
	var problems []string
	add := func(path, format string, args ...interface{}) {
		msg := fmt.Sprintf(format, args...)
		if line := c.lines[path]; line > 0 {
			msg = fmt.Sprintf("line %d: %s", line, msg)
		}
		problems = append(problems, msg)
	}

	if strings.TrimSpace(c.DefaultCoreOSVersion) == "" {
		add("default_coreos_version", "default_coreos_version is required")
	}

	n := c.Network
	if n.BindAddr == "" {
		add("network.bind_addr", "network.bind_addr is required")
	} else if ip := net.ParseIP(n.BindAddr); ip == nil || ip.To4() == nil {
		add("network.bind_addr", "network.bind_addr %q is not an IPv4 address", n.BindAddr)
	}
	if n.Router != "" && net.ParseIP(n.Router) == nil {
		add("network.router", "network.router %q is not an IP address", n.Router)
	}
	if n.SubnetGateway != "" && net.ParseIP(n.SubnetGateway) == nil {
		add("network.subnet_gateway", "network.subnet_gateway %q is not an IP address", n.SubnetGateway)
	}
	for i, d := range n.DNS {
		if net.ParseIP(d) == nil {
			add("network.dns", "network.dns[%d] %q is not an IP address", i, d)
		}
	}
	boot, bootOK := checkRange(n.BootstrapRange, "network.bootstrap_range", n.PXE, add)
	ips, ipsOK := checkRange(n.IPRange, "network.ip_range", true, add)
	if bootOK && ipsOK && boot.overlaps(ips) {
		add("network.ip_range", "network.ip_range %s-%s overlaps network.bootstrap_range %s-%s",
			n.IPRange.Start, n.IPRange.End, n.BootstrapRange.Start, n.BootstrapRange.End)
	}
	if !contains(NetworkModels, n.NetworkModel) {
		add("network.network_model", "network.network_model %q is unknown (want one of %s)",
			n.NetworkModel, strings.Join(NetworkModels, ", "))
	}

	seen := map[string]bool{}
	for i, p := range c.Profiles {
		path := fmt.Sprintf("profiles.%d", i)
		if strings.TrimSpace(p.Name) == "" {
			add(path, "profiles[%d] has no name", i)
		} else if seen[p.Name] {
			add(path, "profiles[%d]: duplicate profile name %q", i, p.Name)
		}
		seen[p.Name] = true
		if p.Quantity < 0 {
			add(path+".quantity", "profiles[%d] %q: quantity %d is negative", i, p.Name, p.Quantity)
		}
	}

	if len(problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: problems}
}

// ValidationError lists every problem of a configuration.
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%d problem(s):\n  %s", len(e.Problems), strings.Join(e.Problems, "\n  "))
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

func checkRange(r IPRange, path string, required bool, add func(path, format string, args ...interface{})) (span, bool) {
	if r.Start == "" && r.End == "" {
		if required {
			add(path, "%s is required", path)
		}
		return span{}, false
	}
	lo, hi := net.ParseIP(r.Start).To4(), net.ParseIP(r.End).To4()
	ok := true
	if lo == nil {
		add(path+".start", "%s.start %q is not an IPv4 address", path, r.Start)
		ok = false
	}
	if hi == nil {
		add(path+".end", "%s.end %q is not an IPv4 address", path, r.End)
		ok = false
	}
	if !ok {
		return span{}, false
	}
	s := span{IPToUint32(lo), IPToUint32(hi)}
	if s.lo > s.hi {
		add(path, "%s is reversed: start %s is after end %s", path, r.Start, r.End)
		return span{}, false
	}
	return s, true
}

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
