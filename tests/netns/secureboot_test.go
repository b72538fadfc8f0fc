//go:build nettest

package netns

import (
	"crypto/sha256"
	"fmt"
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

// secureBootConfig is netConfig with the Secure Boot chain for every UEFI
// client and local boot of installed machines.
var secureBootConfig = strings.Replace(netConfig, "  pxe: true\n", "  pxe: true\n  secure_boot: true\n  installed_boot: local\n", 1)

// TestNetSecureBootTree: the built mayu with network.secure_boot serves the
// Secure Boot chain's TFTP tree through its real dnsmasq: shim, GRUB,
// grub.cfg with the iPXE script's kernel line, the default PXE kernel; a
// machine that becomes running is sent to its disk by grub.cfg, and back
// to installing when it is marked fresh. Without shim in tftproot mayu
// refuses to start, naming the packages.
func TestNetSecureBootTree(t *testing.T) {
	proctest.RequireFile(t, dnsmasq.DefaultBinary, "dnsmasq-base")
	l := netlab.New(t)
	tftp := func(t *testing.T, name string) string { t.Helper(); return string(l.TFTPGet(t, name)) }

	t.Run("serves the chain and follows the records", func(t *testing.T) {
		m := startMayuWith(t, l, secureBootConfig, "--machine-auth=off")
		require.Eventually(t, func() bool { return m.Out.Count("mayu started") > 0 }, 60*time.Second, 20*time.Millisecond,
			"mayu did not start")
		// The default version's PXE kernel, as /images/vmlinuz serves it.
		kernel := filepath.Join(m.Flags.Images, "1068.6.0", "coreos_production_pxe.vmlinuz")
		require.NoError(t, os.MkdirAll(filepath.Dir(kernel), 0o755))
		require.NoError(t, os.WriteFile(kernel, []byte("a signed kernel stands here"), 0o644))

		for _, f := range netlab.SecureBootFiles {
			assert.Equal(t, netlab.SHA256(t, filepath.Join(l.TFTPRoot, f)), sha256.Sum256([]byte(tftp(t, f))), "%s over TFTP", f)
		}
		assert.Equal(t, "a signed kernel stands here", tftp(t, "images/vmlinuz"))
		cfg := tftp(t, "grub/grub.cfg")
		assert.Contains(t, cfg, "linux /images/vmlinuz coreos.autologin maybe-install-coreos=stable console=ttyS0,115200n8 "+
			"mayu=http://192.168.2.2:4080 next-script=http://192.168.2.2:4080/first-stage-script/__SERIAL__\n")
		assert.NotContains(t, cfg, "then set mayu_boot=local")

		// The same kernel line as iPXE's boot script (after its initrd=).
		code, script := m.Do("GET", "/ipxebootscript?mac="+netlab.MacMachine, "")
		require.Equal(t, 200, code, script)
		assert.Contains(t, script, "initrd=initrd.cpio.gz coreos.autologin maybe-install-coreos=stable console=ttyS0,115200n8 "+
			"mayu=http://192.168.2.2:4080 next-script=http://192.168.2.2:4080/first-stage-script/__SERIAL__\n")

		serial := "mayu-net-sb"
		code, body := m.Do("GET", "/first-stage-script/"+serial, "")
		require.Equal(t, 200, code, body)
		facts := fmt.Sprintf(`{"Serial":%q,"NetDevs":[{"Name":"eth0","MacAddress":%q}],"IPMIAddress":"","ConnectedNIC":"eth0"}`, serial, netlab.MacMachine)
		code, body = m.Do("POST", "/final-cloud-config.yaml", facts)
		require.Equal(t, 200, code, body)
		code, body = m.Do("PUT", "/admin/host/"+serial+"/set_installed", "")
		require.Equal(t, 202, code, body)
		code, body = m.Do("PUT", "/admin/host/"+serial+"/boot_complete", `{"CoreOSVersion":"1068.6.0"}`)
		require.Equal(t, 202, code, body)
		local := fmt.Sprintf(`if [ "$net_default_mac" = %q ]; then set mayu_boot=local; fi`, netlab.MacMachine)
		require.Eventually(t, func() bool { return strings.Contains(tftp(t, "grub/grub.cfg"), local) },
			10*time.Second, 100*time.Millisecond, "grub.cfg does not send the running machine to its disk")

		code, body = m.Do("PUT", "/admin/host/"+serial+"/mark_fresh", "")
		require.Equal(t, 202, code, body)
		require.Eventually(t, func() bool { return !strings.Contains(tftp(t, "grub/grub.cfg"), netlab.MacMachine) },
			10*time.Second, 100*time.Millisecond, "grub.cfg still sends the fresh machine to its disk")
		require.NoError(t, m.Stop())
	})

	t.Run("tftproot without shim", func(t *testing.T) {
		bare := filepath.Join(t.TempDir(), "tftproot")
		require.NoError(t, os.MkdirAll(bare, 0o755))
		for _, f := range netlab.BootFiles {
			b, err := os.ReadFile(filepath.Join(l.TFTPRoot, f))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(bare, f), b, 0o644))
		}
		m := startMayuWith(t, l, secureBootConfig, "--tftproot", bare)
		requireFailedExit(t, m, "secure_boot without shim and GRUB in tftproot")
		assert.Contains(t, m.Out.String(), "has no shimx64.efi, grubx64.efi (Debian's shim-signed, grub-efi-amd64-signed")
		assert.Empty(t, l.NSPIDs(t))
	})
}
