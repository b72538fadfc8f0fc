package proctest

import (
	"fmt"
	"strconv"
	"strings"
)

// Profile is one profile of a Config; Quantity 0 writes none (the
// default profile).
type Profile struct {
	Name     string
	Quantity int
	Tags     []string
}

// LoopConfig describes the config.yaml of a mayu as the process tests,
// the storm tests, the network tests and the benchmarks run it: on
// loopback by default, or on a bridge in a network namespace of the
// test's own.
type LoopConfig struct {
	Interface string // network.interface; "lo" if empty
	BindAddr  string // network.bind_addr; 127.0.0.1 if empty
	// BootstrapStart and BootstrapEnd are network.bootstrap_range;
	// 10.9.0.100-10.9.0.200 if empty.
	BootstrapStart, BootstrapEnd string
	Gateway                      string // network.dns and network.router; 10.9.0.1 if empty
	// IPStart and IPEnd are network.ip_range.
	IPStart, IPEnd string
	Profiles       []Profile
	SSHKey         string // templates_env.ssh_authorized_keys; a placeholder if empty
}

// Config renders c with CoreOS 1068.6.0 and mayu_http_endpoint
// http://<bind_addr>:4080.
func Config(c LoopConfig) string {
	setDefault(&c.Interface, "lo")
	setDefault(&c.BindAddr, "127.0.0.1")
	setDefault(&c.BootstrapStart, "10.9.0.100")
	setDefault(&c.BootstrapEnd, "10.9.0.200")
	setDefault(&c.Gateway, "10.9.0.1")
	setDefault(&c.SSHKey, "ssh-rsa AAAAB3Nza test@example")
	var b strings.Builder
	fmt.Fprintf(&b, `default_coreos_version: 1068.6.0
network:
  pxe: true
  interface: %s
  bind_addr: %s
  bootstrap_range: {start: %s, end: %s}
  ip_range: {start: %s, end: %s}
  dns: [%s]
  router: %s
profiles:
`, c.Interface, c.BindAddr, c.BootstrapStart, c.BootstrapEnd, c.IPStart, c.IPEnd, c.Gateway, c.Gateway)
	for _, p := range c.Profiles {
		fmt.Fprintf(&b, "  - name: %s\n", p.Name)
		if p.Quantity > 0 {
			fmt.Fprintf(&b, "    quantity: %d\n", p.Quantity)
		}
		tags := make([]string, len(p.Tags))
		for i, t := range p.Tags {
			tags[i] = strconv.Quote(t)
		}
		fmt.Fprintf(&b, "    tags: [%s]\n", strings.Join(tags, ", "))
	}
	fmt.Fprintf(&b, `templates_env:
  ssh_authorized_keys: [%q]
  mayu_http_endpoint: "http://%s:4080"
`, c.SSHKey, c.BindAddr)
	return b.String()
}

// setDefault sets *p to v if it is empty.
func setDefault(p *string, v string) {
	if *p == "" {
		*p = v
	}
}
