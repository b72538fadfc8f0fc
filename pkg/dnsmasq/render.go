package dnsmasq

import (
	"bytes"
	"fmt"
	"os"
	"text/template"

	"mayu/pkg/config"
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
	// BootScriptURL is http(s)://<bind_addr>:<port>/ipxebootscript, or
	// with a boot port (Config.BootPort) http://<bind_addr>:<boot port>/ipxebootscript.
	BootScriptURL string
	// Limits (.Global.LeaseMax, .Global.TFTPMax) are sized from the
	// network's ranges (see Size); new in this version, so 0.11 templates
	// simply do not use them.
	Limits
}

// The boot loaders in tftproot.
const (
	biosBootFile = "undionly.kpxe"
	uefiBootFile = "ipxe.efi"
)

// render executes the template with the current network and host state.
func (s *Supervisor) render() ([]byte, error) {
	s.mu.Lock()
	tmpl, n := s.tmpl, s.network
	s.mu.Unlock()
	return s.renderWith(tmpl, n)
}

// renderWith executes tmpl with network n and the current host state (a
// reload's candidate).
func (s *Supervisor) renderWith(tmpl *template.Template, n config.Network) ([]byte, error) {
	s.mu.Lock()
	ctx := s.contextLocked()
	s.mu.Unlock()
	ctx.Network.Network = n
	ctx.Global = s.global(n)
	return renderConfig(tmpl, ctx)
}

func (s *Supervisor) contextLocked() TemplateContext {
	return TemplateContext{
		Network: NetworkContext{
			Network:      s.network,
			IgnoredHosts: append([]string{}, s.desired.Ignored...),
			StaticHosts:  append([]StaticHost{}, s.desired.Static...),
		},
		Global: s.global(s.network),
	}
}

func (s *Supervisor) global(n config.Network) GlobalContext {
	pxeFile := biosBootFile
	if n.UEFI {
		pxeFile = uefiBootFile
	}
	bootURL := bootScriptURL(n, s.cfg.HTTPPort, s.cfg.NoTLS)
	if s.cfg.BootPort != 0 {
		bootURL = bootScriptURL(n, s.cfg.BootPort, true)
	}
	return GlobalContext{
		Executable:    s.cfg.Binary,
		Template:      s.cfg.Template,
		TFTPRoot:      s.cfg.TFTPRoot,
		NoTLS:         s.cfg.NoTLS,
		HTTPPort:      s.cfg.HTTPPort,
		PXEPort:       s.cfg.HTTPPort,
		HostsFile:     s.hostsPath,
		LeaseFile:     s.leasePath,
		PXEFile:       pxeFile,
		BootScriptURL: bootURL,
		Limits:        Size(n),
	}
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
func bootScriptURL(n config.Network, port int, noTLS bool) string {
	return n.BaseURL(port, noTLS) + "/ipxebootscript"
}
