package dnsmasq

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"mayu/pkg/config"
	"mayu/pkg/host"
)

// TemplateContext is what the dnsmasq template is executed with. Field names
// are an interface: Mayu 0.11 templates use .Network.* and .Global.TFTPRoot,
// .Global.NoTLS, .Global.HTTPPort.
type TemplateContext struct {
	Network NetworkContext
	Global  GlobalContext
}

// NetworkContext is the network section of config.yaml (its fields are
// promoted, so .Network.BindAddr works) plus the per-host lists Mayu 0.11
// templates range over.
type NetworkContext struct {
	config.Network
	// IgnoredHosts holds every MAC of every installed or running host,
	// sorted. A template that ranges over it makes its output depend on host
	// state, so host changes then restart dnsmasq (as Mayu 0.11 did); the
	// shipped template uses the hosts file instead.
	IgnoredHosts []string
	// StaticHosts pairs every MAC of every installed or running host with
	// the InternalAddr that host configures on itself, sorted by MAC. Mayu
	// 0.11 always left it empty.
	StaticHosts []StaticHost
}

// StaticHost is one MAC with the address its host owns.
type StaticHost struct {
	IP      string
	MacAddr string
}

// GlobalContext holds the daemon settings the template may need.
type GlobalContext struct {
	// Executable and Template are the dnsmasq binary and template paths;
	// Mayu 0.11 put them into the template context too.
	Executable string
	Template   string
	TFTPRoot   string
	NoTLS      bool
	HTTPPort   int
	// PXEPort is HTTPPort under the name later Mayu templates use.
	PXEPort int
	// HostsFile and LeaseFile are the files mayu passes on dnsmasq's command
	// line (--dhcp-hostsfile, --dhcp-leasefile); a template must not name
	// them again.
	HostsFile string
	LeaseFile string
	// PXEFile is the boot loader for clients that are not iPXE yet:
	// ipxe.efi with network.uefi, else undionly.kpxe.
	PXEFile string
	// BootScriptURL is http(s)://<bind_addr>:<port>/ipxebootscript.
	BootScriptURL string
}

// The boot loaders in tftproot.
const (
	biosBootFile = "undionly.kpxe"
	uefiBootFile = "ipxe.efi"
)

// hostSet is the per-host part of dnsmasq's configuration: what Sync
// computes from the host records.
type hostSet struct {
	Ignored []string
	Static  []StaticHost
}

// computeHostSet derives ignored MACs (every MAC of an installed or running
// host, so its next boot falls through to disk) and static hosts (those
// MACs with the InternalAddr their host configures on itself). Machines
// still being provisioned are deliberately not static: a machine learns its
// MACs' owner only when it asks for its final config, mid-install, and a
// dhcp-host line appearing then would make dnsmasq NAK the renewal of its
// bootstrap lease and move its address under the running installer.
// Invalid MACs are returned separately so the caller can log them; they
// never reach dnsmasq.
func computeHostSet(hosts []host.Host) (hostSet, []string) {
	var set hostSet
	var bad []string
	ignored := map[string]bool{}
	static := map[string]string{}
	for _, h := range hosts {
		ignore := h.State == host.Installed || h.State == host.Running
		ip := h.InternalAddr.To4()
		for _, m := range h.MacAddresses {
			mac, err := host.NormalizeMAC(m)
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: %q", h.Serial, m))
				continue
			}
			if !ignore {
				continue
			}
			ignored[mac] = true
			if ip != nil {
				static[mac] = ip.String()
			}
		}
	}
	for mac := range ignored {
		set.Ignored = append(set.Ignored, mac)
	}
	sort.Strings(set.Ignored)
	for mac, ip := range static {
		set.Static = append(set.Static, StaticHost{IP: ip, MacAddr: mac})
	}
	sort.Slice(set.Static, func(i, j int) bool { return set.Static[i].MacAddr < set.Static[j].MacAddr })
	return set, bad
}

func (a hostSet) equal(b hostSet) bool {
	if len(a.Ignored) != len(b.Ignored) || len(a.Static) != len(b.Static) {
		return false
	}
	for i := range a.Ignored {
		if a.Ignored[i] != b.Ignored[i] {
			return false
		}
	}
	for i := range a.Static {
		if a.Static[i] != b.Static[i] {
			return false
		}
	}
	return true
}

// renderHostsFile writes the --dhcp-hostsfile dnsmasq re-reads on SIGHUP:
// "<mac>,ignore" for every ignored MAC, so an installed machine is not
// answered at all and boots from its disk. Static hosts need no line: they
// are ignored hosts.
func renderHostsFile(set hostSet) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by mayu from the host records; rewritten on every change. Do not edit.\n")
	for _, mac := range set.Ignored {
		fmt.Fprintf(&b, "%s,ignore\n", mac)
	}
	return b.Bytes()
}

// parseTemplate reads and parses the dnsmasq template.
func parseTemplate(path string) (*template.Template, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTemplate, err)
	}
	t, err := template.New(path).Option("missingkey=error").Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTemplate, err)
	}
	return t, nil
}

// renderConfig executes the template into a buffer, so a failing template
// never leaves a half-written configuration behind.
func renderConfig(t *template.Template, ctx TemplateContext) ([]byte, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTemplate, err)
	}
	return b.Bytes(), nil
}

// bootScriptURL is where iPXE fetches its script: mayu's HTTP(S) port on the
// provisioning network's address.
func bootScriptURL(bindAddr string, port int, noTLS bool) string {
	scheme := "https"
	if noTLS {
		scheme = "http"
	}
	u := url.URL{Scheme: scheme, Host: net.JoinHostPort(bindAddr, strconv.Itoa(port)), Path: "/ipxebootscript"}
	return u.String()
}

// lastLines keeps the last n lines of dnsmasq's output so an unexpected
// exit can be reported with its reason.
type lastLines struct {
	n     int
	lines []string
}

func (l *lastLines) add(s string) {
	l.lines = append(l.lines, s)
	if len(l.lines) > l.n {
		l.lines = l.lines[len(l.lines)-l.n:]
	}
}

func (l *lastLines) String() string { return strings.Join(l.lines, "\n") }
