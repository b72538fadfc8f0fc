//go:build nettest

package netns

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/dnsmasq"
	"mayu/pkg/proctest"
	"mayu/pkg/proctest/netlab"
)

// arm64Config is netConfig with arm64 UEFI machines (network.arm64).
var arm64Config = strings.Replace(netConfig, "  pxe: true\n", "  pxe: true\n  arm64: true\n", 1)

// TestNetARM64Tree: the built mayu with network.arm64 serves GRUB's TFTP
// tree through its real dnsmasq: grubaa64.efi, a grub.cfg whose arm64
// branch boots images/arm64/ with the iPXE script's kernel line plus the
// PL011 console, and the default version's arm64 kernel and initrd
// there; the x86-64 kernel stays images/vmlinuz. Without the arm64 PXE
// image mayu refuses to start, naming the file.
func TestNetARM64Tree(t *testing.T) {
	proctest.RequireFile(t, dnsmasq.DefaultBinary, "dnsmasq-base")
	l := netlab.New(t)
	tftp := func(t *testing.T, name string) string { t.Helper(); return string(l.TFTPGet(t, name)) }
	images := func(t *testing.T, arm64 bool) string {
		t.Helper()
		dir := filepath.Join(t.TempDir(), "images")
		files := map[string]string{"1068.6.0/coreos_production_pxe.vmlinuz": "x86-64 kernel",
			"1068.6.0/coreos_production_pxe_image.cpio.gz": "x86-64 initrd"}
		if arm64 {
			files["1068.6.0/arm64/coreos_production_pxe.vmlinuz"] = "arm64 kernel"
			files["1068.6.0/arm64/coreos_production_pxe_image.cpio.gz"] = "arm64 initrd"
		}
		for name, content := range files {
			p := filepath.Join(dir, name)
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		}
		return dir
	}

	t.Run("serves GRUB for arm64 and the arm64 images", func(t *testing.T) {
		m := startMayuWith(t, l, arm64Config, "--machine-auth=off", "--images-cache-dir="+images(t, true))
		require.Eventually(t, func() bool { return m.Out.Count("mayu started") > 0 }, 60*time.Second, 20*time.Millisecond,
			"mayu did not start")
		for _, f := range netlab.ARM64Files {
			assert.Equal(t, netlab.SHA256(t, filepath.Join(l.TFTPRoot, f)), sha256.Sum256([]byte(tftp(t, f))), "%s over TFTP", f)
		}
		assert.Equal(t, "arm64 kernel", tftp(t, "images/arm64/vmlinuz"))
		assert.Equal(t, "arm64 initrd", tftp(t, "images/arm64/initrd.cpio.gz"))
		assert.Equal(t, "x86-64 kernel", tftp(t, "images/vmlinuz"))
		cfg := tftp(t, "grub/grub.cfg")
		assert.Contains(t, cfg, "if [ \"$grub_cpu\" = arm64 ]; then\n")
		assert.Contains(t, cfg, "\tlinux /images/arm64/vmlinuz coreos.autologin maybe-install-coreos=stable console=ttyS0,115200n8 "+
			"mayu=http://192.168.2.2:4080 next-script=http://192.168.2.2:4080/first-stage-script/__SERIAL__ console=ttyAMA0,115200n8\n")
		require.NoError(t, m.Stop())
	})

	t.Run("no arm64 PXE image", func(t *testing.T) {
		m := startMayuWith(t, l, arm64Config, "--images-cache-dir="+images(t, false))
		requireFailedExit(t, m, "network.arm64 without the arm64 PXE image")
		assert.Contains(t, m.Out.String(), "network.arm64: no arm64 PXE image ")
		assert.Contains(t, m.Out.String(), "1068.6.0/arm64/coreos_production_pxe.vmlinuz")
		assert.Empty(t, l.NSPIDs(t))
	})

	// With secure_boot too the arm64 shim is part of the chain: a tftproot
	// without shimaa64.efi is refused at start, naming it.
	t.Run("secure_boot without shimaa64.efi", func(t *testing.T) {
		bare := filepath.Join(t.TempDir(), "tftproot")
		require.NoError(t, os.MkdirAll(bare, 0o755))
		for _, f := range append(append([]string{}, netlab.BootFiles...), append(netlab.SecureBootFiles, "grubaa64.efi")...) {
			b, err := os.ReadFile(filepath.Join(l.TFTPRoot, f))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(bare, f), b, 0o644))
		}
		secure := strings.Replace(arm64Config, "  arm64: true\n", "  arm64: true\n  secure_boot: true\n", 1)
		m := startMayuWith(t, l, secure, "--tftproot", bare, "--images-cache-dir="+images(t, true))
		requireFailedExit(t, m, "network.arm64 and secure_boot without shimaa64.efi in tftproot")
		assert.Contains(t, m.Out.String(), "has no shimaa64.efi (Debian's shim-signed")
		assert.Empty(t, l.NSPIDs(t))
	})
}
