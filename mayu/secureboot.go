package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"mayu/pkg/api"
	"mayu/pkg/config"
	"mayu/pkg/grubnet"
	"mayu/pkg/host"
	"mayu/pkg/provision"
)

// secureBootChain sets up GRUB's TFTP tree (package grubnet) in <runtime
// dir>/tftp as dnsmasq's tftp-root when config.yaml asks for the Secure
// Boot chain anywhere (network.secure_boot or a profile's secure_boot) or
// for arm64 machines (network.arm64), and returns the rule of which hosts
// get the shim by MAC for dnsmasq (nil without secure_boot). With neither
// it returns --tftproot and no rule, as before. network.arm64 needs
// tftproot/grubaa64.efi (with secure_boot also tftproot/shimaa64.efi) and
// the default version's arm64 PXE kernel and initrd
// (images/<version>/arm64/): missing ones are named in the error.
func secureBootChain(o options, p *prepared, log *slog.Logger) (string, func(host.Host) bool, error) {
	cfg := p.cfg
	if cfg == nil || !cfg.GRUBTree() {
		return o.tftpRoot, nil, nil
	}
	var loaders []string
	if cfg.SecureBootAnywhere() {
		loaders = append(loaders, config.ShimBootFile, config.GRUBBootFile)
	}
	var arm64Images func() (string, string)
	if cfg.Network.ARM64 {
		loaders = append(loaders, config.ARM64GRUBBootFile)
		if cfg.SecureBootAnywhere() {
			loaders = append(loaders, config.ARM64ShimBootFile)
		}
		dir := filepath.Join(o.imagesDir, cfg.DefaultCoreOSVersion, config.ARM64ImagesDir)
		kernel, initrd := filepath.Join(dir, api.PXEKernelFile), filepath.Join(dir, api.PXEInitrdFile)
		var missing []string
		for _, f := range []string{kernel, initrd} {
			if _, err := os.Stat(f); err != nil {
				missing = append(missing, f)
			}
		}
		if len(missing) > 0 {
			return o.tftpRoot, nil, fmt.Errorf("network.arm64: no arm64 PXE image %s (the default version's arm64 kernel and initrd; see the README's arm64 section)",
				strings.Join(missing, ", "))
		}
		arm64Images = func() (string, string) { return kernel, initrd }
	}
	// dnsmasq reads the tree as user nobody: let it through the runtime
	// directory (search only; the files there are named, not listed).
	if err := os.Chmod(p.runDir, 0o751); err != nil {
		return o.tftpRoot, nil, fmt.Errorf("GRUB's TFTP tree: %w", err)
	}
	tree, err := grubnet.New(grubnet.Config{
		Dir:        filepath.Join(p.runDir, "tftp"),
		LoaderRoot: o.tftpRoot,
		Loaders:    loaders,
		Images: func() (string, string) {
			// provision.DefaultImageVersion's rule: the default version,
			// which a reload does not change.
			dir := filepath.Join(o.imagesDir, cfg.DefaultCoreOSVersion)
			return filepath.Join(dir, api.PXEKernelFile), filepath.Join(dir, api.PXEInitrdFile)
		},
		ARM64Images: arm64Images,
		KernelArgs:  provision.InstallKernelArgs(p.site.BaseURL(), p.tlsPin),
		Local:       func(h host.Host) bool { return provision.BootsLocally(cfg.Network, h) },
		Logger:      log.With("component", "grubnet"),
	})
	if err != nil {
		return o.tftpRoot, nil, fmt.Errorf("GRUB's TFTP tree: %w", err)
	}
	p.grub = tree
	if !cfg.SecureBootAnywhere() {
		return tree.Dir(), nil, nil
	}
	return tree.Dir(), func(h host.Host) bool { return provision.SecureBoot(cfg, h) }, nil
}
