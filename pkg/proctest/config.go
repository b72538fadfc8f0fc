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

// LoopConfig describes the config.yaml of a mayu serving on loopback, as
// the process tests, the storm tests and the benchmarks run it.
type LoopConfig struct {
	Interface string // network.interface; "lo" if empty
	// IPStart and IPEnd are network.ip_range.
	IPStart, IPEnd string
	Profiles       []Profile
	SSHKey         string // templates_env.ssh_authorized_keys; a placeholder if empty
}

// Config renders c: bound to 127.0.0.1 with the bootstrap range
// 10.9.0.100-10.9.0.200, DNS and router 10.9.0.1, CoreOS 1068.6.0.
func Config(c LoopConfig) string {
	if c.Interface == "" {
		c.Interface = "lo"
	}
	if c.SSHKey == "" {
		c.SSHKey = "ssh-rsa AAAAB3Nza test@example"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `default_coreos_version: 1068.6.0
network:
  pxe: true
  interface: %s
  bind_addr: 127.0.0.1
  bootstrap_range: {start: 10.9.0.100, end: 10.9.0.200}
  ip_range: {start: %s, end: %s}
  dns: [10.9.0.1]
  router: 10.9.0.1
profiles:
`, c.Interface, c.IPStart, c.IPEnd)
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
  mayu_http_endpoint: "http://127.0.0.1:4080"
`, c.SSHKey)
	return b.String()
}
