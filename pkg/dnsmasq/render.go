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
	// PXEFile is the boot loader of Mayu 0.11 and 1.x templates, one for
	// every client that is not iPXE yet: EFIBootFile with network.uefi,
	// else BIOSBootFile.
	PXEFile string
	// BootScriptURL is http(s)://<bind_addr>:<port>/ipxebootscript, or
	// with a boot port (Config.BootPort) http://<bind_addr>:<boot port>/ipxebootscript.
	BootScriptURL string
	// BIOSBootFile is the iPXE binary for BIOS PXE ROMs (client
	// architecture 0, RFC 4578), served from TFTPRoot: undionly.kpxe.
	BIOSBootFile string
	// EFIBootFile is the boot loader for x86-64 UEFI firmware (client
	// architecture 7 and 9), served from TFTPRoot: the iPXE binary
	// network.efi_boot_file, or with network.secure_boot ShimBootFile.
	EFIBootFile string
	// ShimBootFile is the first stage of the Secure Boot chain,
	// config.ShimBootFile, for clients tagged SecureBootTag.
	ShimBootFile string
	// SecureBootTag is the tag the hosts file sets for machines whose
	// profile asks for the Secure Boot chain; empty when no rule picks
	// machines (Config.SecureBoot is nil), so that a tftproot without the
	// shim stays valid.
	SecureBootTag string
	// ARM64BootFile is the boot loader for arm64 UEFI PXE clients (client
	// architecture 11, RFC 4578 / IANA Processor Architecture Types),
	// served from TFTPRoot: config.ARM64GRUBBootFile with network.arm64,
	// empty otherwise (arm64 clients are then answered as BIOS ones, as
	// by Mayu 0.11). arm64 UEFI HTTP boot clients (architecture 19) get no
	// boot file with network.arm64: Debian's GRUB network image finds its
	// configuration from a PXE boot only, so their firmware moves on to
	// its PXE boot option. With network.secure_boot it is
	// ARM64ShimBootFile, as EFIBootFile is then ShimBootFile.
	ARM64BootFile string
	// ARM64ShimBootFile is the arm64 Secure Boot chain's first stage,
	// config.ARM64ShimBootFile, for arm64 clients tagged SecureBootTag
	// (with network.arm64; empty otherwise).
	ARM64ShimBootFile string
	// HTTPBootURL is EFIBootFile over HTTP, the boot file of UEFI HTTP
	// boot clients (vendor class "HTTPClient", architecture 16):
	// <boot base>/tftproot/<EFIBootFile>, where the boot base is
	// http://<bind_addr>:<boot port> with a boot port, else mayu's base URL
	// (https without --no-tls: the firmware must then trust mayu's CA).
	HTTPBootURL string
	// Limits (.Global.LeaseMax, .Global.TFTPMax) are sized from the
	// network's ranges (see Size); new in this version, so 0.11 templates
	// simply do not use them.
	Limits
}

// BIOSBootFile is the iPXE binary for BIOS PXE ROMs in tftproot.
const BIOSBootFile = "undionly.kpxe"

// BootFiles are the boot loaders a shipped tftproot holds (Debian's ipxe
// package): the BIOS one and every network.efi_boot_file choice. mayu
// serves exactly these over HTTP too (for UEFI HTTP boot).
var BootFiles = append([]string{BIOSBootFile}, config.EFIBootFiles...)

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
	efiFile := n.EFIBootFile
	if efiFile == "" {
		efiFile = config.DefaultEFIBootFile
	}
	// UEFI HTTP boot stays on iPXE: Debian's signed GRUB reads no HTTP.
	httpFile := efiFile
	if n.SecureBoot {
		efiFile = config.ShimBootFile
	}
	pxeFile := BIOSBootFile
	if n.UEFI {
		pxeFile = efiFile
	}
	bootBase := n.BaseURL(s.cfg.HTTPPort, s.cfg.NoTLS)
	if s.cfg.BootPort != 0 {
		bootBase = n.BaseURL(s.cfg.BootPort, true)
	}
	arm64File, arm64Shim := "", ""
	if n.ARM64 {
		arm64File, arm64Shim = config.ARM64GRUBBootFile, config.ARM64ShimBootFile
		if n.SecureBoot {
			arm64File = config.ARM64ShimBootFile
		}
	}
	return GlobalContext{
		ARM64BootFile:     arm64File,
		ARM64ShimBootFile: arm64Shim,
		Executable:        s.cfg.Binary,
		Template:          s.cfg.Template,
		TFTPRoot:          s.cfg.TFTPRoot,
		NoTLS:             s.cfg.NoTLS,
		HTTPPort:          s.cfg.HTTPPort,
		PXEPort:           s.cfg.HTTPPort,
		HostsFile:         s.hostsPath,
		LeaseFile:         s.leasePath,
		PXEFile:           pxeFile,
		BootScriptURL:     bootBase + "/ipxebootscript",
		BIOSBootFile:      BIOSBootFile,
		EFIBootFile:       efiFile,
		ShimBootFile:      config.ShimBootFile,
		SecureBootTag:     s.secureBootTag(),
		HTTPBootURL:       bootBase + BootFilePath + httpFile,
		Limits:            Size(n),
	}
}

func (s *Supervisor) secureBootTag() string {
	if s.cfg.SecureBoot == nil {
		return ""
	}
	return SecureBootTag
}

// BootFilePath is the HTTP path under which mayu serves BootFiles from
// tftproot: <base>/tftproot/<file>.
const BootFilePath = "/tftproot/"

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
