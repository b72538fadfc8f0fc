package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"mayu/pkg/api"
	"mayu/pkg/config"
	"mayu/pkg/grubnet"
	"mayu/pkg/host"
	"mayu/pkg/provision"
)

// secureBootChain sets up the Secure Boot chain when config.yaml asks for
// it anywhere (network.secure_boot or a profile's secure_boot): the TFTP
// tree of package grubnet in <runtime dir>/tftp becomes dnsmasq's
// tftp-root, and the rule of which hosts get the shim by MAC goes to
// dnsmasq. Without secure_boot it returns --tftproot and no rule, as
// before.
func secureBootChain(o options, p *prepared, log *slog.Logger) (string, func(host.Host) bool, error) {
	cfg := p.cfg
	if cfg == nil || !cfg.SecureBootAnywhere() {
		return o.tftpRoot, nil, nil
	}
	// dnsmasq reads the tree as user nobody: let it through the runtime
	// directory (search only; the files there are named, not listed).
	if err := os.Chmod(p.runDir, 0o751); err != nil {
		return o.tftpRoot, nil, fmt.Errorf("secure_boot: %w", err)
	}
	tree, err := grubnet.New(grubnet.Config{
		Dir:        filepath.Join(p.runDir, "tftp"),
		LoaderRoot: o.tftpRoot,
		Loaders:    []string{config.ShimBootFile, config.GRUBBootFile},
		Images: func() (string, string) {
			// provision.DefaultImageVersion's rule: the default version,
			// which a reload does not change.
			dir := filepath.Join(o.imagesDir, cfg.DefaultCoreOSVersion)
			return filepath.Join(dir, api.PXEKernelFile), filepath.Join(dir, api.PXEInitrdFile)
		},
		KernelArgs: provision.InstallKernelArgs(p.site.BaseURL(), p.tlsPin),
		Local:      func(h host.Host) bool { return provision.BootsLocally(cfg.Network, h) },
		Logger:     log.With("component", "grubnet"),
	})
	if err != nil {
		return o.tftpRoot, nil, fmt.Errorf("secure_boot: %w", err)
	}
	p.grub = tree
	return tree.Dir(), func(h host.Host) bool { return provision.SecureBoot(cfg, h) }, nil
}
