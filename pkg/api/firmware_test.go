package api

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
)

// The boot loaders of tftproot are served over HTTP (UEFI HTTP boot), on
// the main port and the plain-HTTP boot port, and nothing else of tftproot
// or beyond it.
func TestBootFilesOverHTTP(t *testing.T) {
	tftp := filepath.Join(t.TempDir(), "tftproot")
	require.NoError(t, os.MkdirAll(tftp, 0o755))
	for name, content := range map[string]string{"undionly.kpxe": "bios", "ipxe.efi": "efi", "snponly.efi": "snp", "pxelinux.cfg": "other"} {
		require.NoError(t, os.WriteFile(filepath.Join(tftp, name), []byte(content), 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(tftp), "secret.txt"), []byte("SECRET-CONTENT"), 0o644))
	e := newEnv(t, func(c *envConfig) {
		c.api.TFTPRoot = tftp
		c.api.BootFiles = []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"}
	})
	for name, want := range map[string]string{"undionly.kpxe": "bios", "ipxe.efi": "efi", "snponly.efi": "snp"} {
		rec := e.do("GET", "/tftproot/"+name, "")
		require.Equal(t, 200, rec.Code, name)
		assert.Equal(t, want, rec.Body.String(), name)
		assert.Equal(t, 200, e.do("HEAD", "/tftproot/"+name, "").Code, name)

		boot := httptest.NewRecorder()
		e.srv.boot.ServeHTTP(boot, httptest.NewRequest("GET", "/tftproot/"+name, nil))
		assert.Equal(t, 200, boot.Code, "boot port: "+name)
		assert.Equal(t, want, boot.Body.String(), "boot port: "+name)
	}
	for _, p := range []string{"/tftproot/pxelinux.cfg", "/tftproot/..%2fsecret.txt", "/tftproot/../secret.txt", "/tftproot/", "/tftproot/ipxe.efi/"} {
		rec := e.do("GET", p, "")
		assert.Equal(t, 404, rec.Code, p)
		assert.NotContains(t, rec.Body.String(), "SECRET-CONTENT", p)
	}
}

// With network.installed_boot local the boot script asks for the MAC, then
// sends installed and running machines to their disk and every other
// machine to the installer; with ignore (the default) it is the install
// script whatever is asked.
func TestLocalBootScript(t *testing.T) {
	const s = "0800278e158a-0"
	install := "#!ipxe\nkernel http://192.168.2.2:4080/images/vmlinuz "
	local := func(c *envConfig) { c.prov.Cluster.Network.InstalledBoot = "local" }

	e := newEnv(t, local)
	rec := e.do("GET", "/ipxebootscript", "")
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, "#!ipxe\nchain http://192.168.2.2:4080/ipxebootscript?mac=${netX/mac}\n", rec.Body.String())
	assert.Contains(t, e.do("GET", "/ipxebootscript?mac=08:00:27:8e:15:8a", "").Body.String(), install, "unknown machine installs")
	assert.Equal(t, 400, e.do("GET", "/ipxebootscript?mac=nonsense", "").Code)

	require.Equal(t, 200, e.do("POST", "/final-cloud-config.yaml", facts).Code)
	assert.Contains(t, e.do("GET", "/ipxebootscript?mac=08:00:27:8e:15:8a", "").Body.String(), install, "installing machine installs")
	require.Equal(t, 202, e.do("PUT", "/admin/host/"+s+"/set_installed", "").Code)
	want := "#!ipxe\n" +
		"echo mayu: " + s + " is installed: booting from the local disk (network.installed_boot: local)\n" +
		"iseq ${platform} pcbios && sanboot --no-describe --drive 0x80 ||\n" +
		"exit 1\n"
	for _, mac := range []string{"08:00:27:8e:15:8a", "08-00-27-8E-15-8B"} {
		assert.Equal(t, want, e.do("GET", "/ipxebootscript?mac="+mac, "").Body.String(), mac)
	}
	require.Equal(t, 202, e.do("PUT", "/admin/host/"+s+"/boot_complete", "").Code)
	assert.Contains(t, e.do("GET", "/ipxebootscript?mac=08:00:27:8e:15:8a", "").Body.String(), "is running: booting from the local disk")

	// Set back to configured: the next boot installs, with no DHCP change.
	require.Equal(t, 202, e.do("PUT", "/admin/host/"+s+"/set_state", `{"State":"configured"}`).Code)
	require.Equal(t, host.Configured, e.host(s).State)
	assert.Contains(t, e.do("GET", "/ipxebootscript?mac=08:00:27:8e:15:8a", "").Body.String(), install)

	// ignore, Mayu 0.11's behaviour: one script for all, ?mac= or not.
	ign := newEnv(t)
	require.Equal(t, 200, ign.do("POST", "/final-cloud-config.yaml", facts).Code)
	require.Equal(t, 202, ign.do("PUT", "/admin/host/"+s+"/set_installed", "").Code)
	plain := ign.do("GET", "/ipxebootscript", "").Body.String()
	assert.Contains(t, plain, install)
	assert.Equal(t, plain, ign.do("GET", "/ipxebootscript?mac=08:00:27:8e:15:8a", "").Body.String())
}
