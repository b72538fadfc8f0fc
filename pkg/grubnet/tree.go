// Package grubnet writes the TFTP tree of the Secure Boot chain: the
// directory mayu's dnsmasq serves as its tftp-root when any machine may
// boot through shim and GRUB (network.secure_boot or a profile's
// secure_boot).
//
// The chain is fixed by what the signed binaries do, as checked in qemu
// with OVMF's Secure Boot firmware and Microsoft's keys enrolled: the
// firmware loads shimx64.efi (Debian's shim-signed, signed by Microsoft)
// over TFTP; shim loads grubx64.efi from the same TFTP directory (Debian's
// grubnetx64.efi.signed under that name); that GRUB has its prefix at
// (tftp,<server>)/grub, reads /grub/grub.cfg over TFTP, and has no HTTP
// module built in (and may load none under Secure Boot), so its
// configuration, the kernel and the initrd all come over TFTP. GRUB asks
// shim to verify the kernel ("bad shim signature" otherwise): the kernel
// must be signed by a key shim trusts (Debian's kernels are). Debian's
// image looks for no per-machine file (no grub.cfg-01-<mac>) and GRUB's
// file tests do not work on TFTP, so one grub.cfg carries every decision:
// it compares $net_default_mac (the MAC GRUB booted from) with the MACs of
// the machines that boot from disk.
//
// arm64 machines (network.arm64) boot the same way without shim: their
// firmware (AAVMF, checked under qemu TCG: DHCP option 93 = 11) loads
// grubaa64.efi (Debian's grubnetaa64.efi.signed) over TFTP, whose prefix is
// also (tftp,<server>)/grub; the one grub.cfg then picks the kernel by
// $grub_cpu ("arm64" or "x86_64", set by GRUB's normal module), and on
// arm64 GRUB's linux command loads the kernel through its EFI stub. With
// secure_boot the firmware (AAVMF with Microsoft's keys) loads
// shimaa64.efi (Debian's Microsoft-signed shim for arm64) first, which
// loads grubaa64.efi from the same TFTP directory, as on x86-64.
//
// The tree:
//
//	<Dir>/<entry>                  a symbolic link to every entry of tftproot
//	<Dir>/grub/grub.cfg            GRUB's configuration (Render)
//	<Dir>/images/vmlinuz           links to the default PXE kernel and initrd
//	<Dir>/images/initrd.cpio.gz
//	<Dir>/images/arm64/vmlinuz     with ARM64Images: the arm64 ones
//	<Dir>/images/arm64/initrd.cpio.gz
//
// dnsmasq follows symbolic links out of its tftp-root; as user nobody it
// needs every directory on the way readable.
package grubnet

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"mayu/pkg/durable"
	"mayu/pkg/host"
)

// ErrTree wraps every failure to build or update the tree.
var ErrTree = errors.New("grubnet: TFTP tree")

// Config is what Tree needs.
type Config struct {
	// Dir is the tree (created, mode 0755); dnsmasq's tftp-root.
	Dir string
	// LoaderRoot is mayu's tftproot (--tftproot): iPXE, shim and GRUB.
	LoaderRoot string
	// Loaders are files LoaderRoot must hold (config.ShimBootFile and
	// config.GRUBBootFile): New fails naming the ones missing.
	Loaders []string
	// Images returns the PXE kernel and initrd machines install with (the
	// default OS version's files); asked on every Sync, so a reloaded
	// default_coreos_version is followed.
	Images func() (kernel, initrd string)
	// ARM64Images returns the arm64 PXE kernel and initrd (the default OS
	// version's images/<version>/arm64/ files); nil when no arm64 machine
	// boots here (network.arm64 off), and grub.cfg then has no arm64 branch.
	ARM64Images func() (kernel, initrd string)
	// KernelArgs is the kernel command line of the install path
	// (provision.InstallKernelArgs).
	KernelArgs string
	// Local tells whether a host is to boot from its disk
	// (provision.BootsLocally).
	Local func(host.Host) bool
	// Logger gets a line per rewrite; nil discards.
	Logger *slog.Logger
}

// Tree keeps the TFTP tree in step with the host records.
type Tree struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	applied []byte // grub.cfg as last written
}

// New checks cfg, creates the tree with its loader links and writes a
// grub.cfg for no hosts; Sync brings it up to date.
func New(cfg Config) (*Tree, error) {
	if cfg.Dir == "" || cfg.LoaderRoot == "" || cfg.Images == nil || cfg.Local == nil {
		return nil, fmt.Errorf("%w: Dir, LoaderRoot, Images and Local are required", ErrTree)
	}
	t := &Tree{cfg: cfg, log: cfg.Logger}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if err := t.linkLoaders(); err != nil {
		return nil, err
	}
	if err := t.Sync(nil); err != nil {
		return nil, err
	}
	return t, nil
}

// Dir is the tree's directory, dnsmasq's tftp-root.
func (t *Tree) Dir() string { return t.cfg.Dir }

// Sync rewrites grub.cfg (atomically, only when it changed) and the image
// links for the current host records.
func (t *Tree) Sync(hosts []host.Host) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	kernel, initrd := t.cfg.Images()
	links := map[string]string{"vmlinuz": kernel, "initrd.cpio.gz": initrd}
	if t.cfg.ARM64Images != nil {
		k, i := t.cfg.ARM64Images()
		links[ARM64Kernel] = k
		links[ARM64Initrd] = i
	}
	for name, target := range links {
		// A relative target would be read from the link's own directory.
		abs, err := filepath.Abs(target)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrTree, err)
		}
		if err := link(abs, filepath.Join(t.cfg.Dir, "images", name)); err != nil {
			return err
		}
	}
	cfg := Render(t.cfg.KernelArgs, LocalMACs(hosts, t.cfg.Local), t.cfg.ARM64Images != nil)
	if bytes.Equal(cfg, t.applied) {
		return nil
	}
	path := filepath.Join(t.cfg.Dir, "grub", "grub.cfg")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("%w: %w", ErrTree, err)
	}
	if err := durable.WriteFile(path, cfg, 0o644, ".grub.cfg."); err != nil {
		return fmt.Errorf("%w: %w", ErrTree, err)
	}
	t.applied = cfg
	t.log.Info("GRUB configuration written", "path", path)
	return nil
}

// LocalMACs are the normalized MACs of the hosts local says boot from
// disk, sorted; malformed MACs are left out (dnsmasq's hosts file leaves
// them out too, and says so).
func LocalMACs(hosts []host.Host, local func(host.Host) bool) []string {
	seen := map[string]bool{}
	var macs []string
	for _, h := range hosts {
		if !local(h) {
			continue
		}
		for _, m := range h.MacAddresses {
			mac, err := host.NormalizeMAC(m)
			if err != nil || seen[mac] {
				continue
			}
			seen[mac] = true
			macs = append(macs, mac)
		}
	}
	sort.Strings(macs)
	return macs
}

// The arm64 kernel and initrd in the tree, under images/.
const (
	ARM64Kernel = "arm64/vmlinuz"
	ARM64Initrd = "arm64/initrd.cpio.gz"
)

// ARM64Console is what the arm64 kernel line adds to kernelArgs: the
// PL011 serial port of ARM servers and of qemu's virt machine (ttyS0 of
// kernelArgs does not exist there; Linux makes the last console= that
// exists /dev/console, so a machine with an 8250 port keeps ttyS0).
const ARM64Console = "console=ttyAMA0,115200n8"

// Render is GRUB's configuration (GRUB manual, "Shell-like scripting"):
// machines whose MAC is in localMACs leave GRUB with exit, so the firmware
// goes on with its next boot entry, the installed system's (as iPXE's exit
// under UEFI); every other machine boots the PXE kernel and initrd from
// /images over TFTP with kernelArgs. With arm64, a GRUB built for arm64
// ($grub_cpu, GRUB manual "Special environment variables") boots
// ARM64Kernel and ARM64Initrd instead, with ARM64Console added. GRUB's
// $net_default_mac is lower-case with colons, the form host.NormalizeMAC
// gives.
func Render(kernelArgs string, localMACs []string, arm64 bool) []byte {
	var b strings.Builder
	b.WriteString("# Written by mayu from the host records; rewritten on every change. Do not edit.\n")
	b.WriteString("set timeout=0\nset mayu_boot=install\n")
	b.WriteString("echo \"mayu: GRUB network boot of $net_default_mac\"\n")
	for _, mac := range localMACs {
		fmt.Fprintf(&b, "if [ \"$net_default_mac\" = %q ]; then set mayu_boot=local; fi\n", mac)
	}
	b.WriteString("if [ \"$mayu_boot\" = local ]; then\n" +
		"\techo \"mayu: installed: booting from the local disk (network.installed_boot: local)\"\n" +
		"\texit\n" +
		"fi\n")
	if arm64 {
		b.WriteString("if [ \"$grub_cpu\" = arm64 ]; then\n" +
			"\techo \"mayu: loading the arm64 PXE kernel and initrd over TFTP\"\n")
		fmt.Fprintf(&b, "\tlinux /images/%s %s %s\n", ARM64Kernel, kernelArgs, ARM64Console)
		fmt.Fprintf(&b, "\tinitrd /images/%s\n\tboot\nfi\n", ARM64Initrd)
	}
	b.WriteString("echo \"mayu: loading the PXE kernel and initrd over TFTP\"\n")
	fmt.Fprintf(&b, "linux /images/vmlinuz %s\n", kernelArgs)
	b.WriteString("initrd /images/initrd.cpio.gz\nboot\n")
	return []byte(b.String())
}

// linkLoaders links every entry of LoaderRoot into Dir, except the names
// the tree owns (grub, images).
func (t *Tree) linkLoaders() error {
	if err := os.MkdirAll(t.cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("%w: %w", ErrTree, err)
	}
	root, err := filepath.Abs(t.cfg.LoaderRoot)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTree, err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTree, err)
	}
	var missing []string
	for _, f := range t.cfg.Loaders {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s has no %s (Debian's shim-signed, grub-efi-amd64-signed and for arm64 grub-efi-arm64-signed, with secure_boot also shim-signed of arm64 for shimaa64.efi; see the README's Secure Boot and arm64 sections)",
			ErrTree, root, strings.Join(missing, ", "))
	}
	for _, e := range entries {
		if e.Name() == "grub" || e.Name() == "images" {
			t.log.Warn("tftproot entry hidden by the Secure Boot chain's tree", "name", e.Name())
			continue
		}
		if err := link(filepath.Join(root, e.Name()), filepath.Join(t.cfg.Dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// link makes path a symbolic link to target, replacing what is there.
func link(target, path string) error {
	if cur, err := os.Readlink(path); err == nil && cur == target {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("%w: %w", ErrTree, err)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".link")
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("%w: %w", ErrTree, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("%w: %w", ErrTree, err)
	}
	return nil
}
