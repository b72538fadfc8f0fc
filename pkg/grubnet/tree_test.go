package grubnet

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
)

func TestRender(t *testing.T) {
	got := string(Render("mayu=http://192.168.2.2:4080 next-script=x", []string{"52:54:00:00:00:01"}))
	assert.Contains(t, got, `if [ "$net_default_mac" = "52:54:00:00:00:01" ]; then set mayu_boot=local; fi`)
	assert.Contains(t, got, "linux /images/vmlinuz mayu=http://192.168.2.2:4080 next-script=x\n")
	assert.Contains(t, got, "initrd /images/initrd.cpio.gz\nboot\n")
	assert.Contains(t, got, "\texit\n")

	none := string(Render("a", nil))
	assert.NotContains(t, none, "then set mayu_boot=local")
}

func TestLocalMACs(t *testing.T) {
	hosts := []host.Host{
		{Serial: "a", State: host.Running, MacAddresses: []string{"52:54:00:00:00:0B", "bogus"}},
		{Serial: "b", State: host.Configured, MacAddresses: []string{"52:54:00:00:00:0c"}},
		{Serial: "c", State: host.Installed, MacAddresses: []string{"52-54-00-00-00-0a"}},
	}
	local := func(h host.Host) bool { return h.State.IgnoredByDHCP() }
	assert.Equal(t, []string{"52:54:00:00:00:0a", "52:54:00:00:00:0b"}, LocalMACs(hosts, local))
}

func TestTree(t *testing.T) {
	dir := t.TempDir()
	loaders := filepath.Join(dir, "tftproot")
	require.NoError(t, os.MkdirAll(loaders, 0o755))
	for _, f := range []string{"shimx64.efi", "grubx64.efi", "undionly.kpxe"} {
		require.NoError(t, os.WriteFile(filepath.Join(loaders, f), []byte(f), 0o644))
	}
	images := filepath.Join(dir, "images", "1.0")
	require.NoError(t, os.MkdirAll(images, 0o755))
	kernel, initrd := filepath.Join(images, "k"), filepath.Join(images, "i")
	require.NoError(t, os.WriteFile(kernel, []byte("kernel"), 0o644))
	require.NoError(t, os.WriteFile(initrd, []byte("initrd"), 0o644))

	tree := filepath.Join(dir, "tftp")
	tr, err := New(Config{
		Dir: tree, LoaderRoot: loaders, KernelArgs: "mayu=x", Loaders: []string{"shimx64.efi", "grubx64.efi"},
		Images: func() (string, string) { return kernel, initrd },
		Local:  func(h host.Host) bool { return h.State == host.Running },
	})
	require.NoError(t, err)
	assert.Equal(t, tree, tr.Dir())

	// Loaders and images are reachable through the tree, as dnsmasq reads them.
	for name, want := range map[string]string{"shimx64.efi": "shimx64.efi", "grubx64.efi": "grubx64.efi",
		"undionly.kpxe": "undionly.kpxe", "images/vmlinuz": "kernel", "images/initrd.cpio.gz": "initrd"} {
		b, err := os.ReadFile(filepath.Join(tree, name))
		require.NoError(t, err, name)
		assert.Equal(t, want, string(b), name)
	}
	// A relative images path is linked absolutely (mayu's working
	// directory is not the tree's).
	t.Chdir(dir)
	require.NoError(t, tr.Sync(nil))
	tr.cfg.Images = func() (string, string) { return "images/1.0/k", "images/1.0/i" }
	require.NoError(t, tr.Sync(nil))
	target, err := os.Readlink(filepath.Join(tree, "images", "vmlinuz"))
	require.NoError(t, err)
	assert.Equal(t, kernel, target)
	cfg := func() string {
		b, err := os.ReadFile(filepath.Join(tree, "grub", "grub.cfg"))
		require.NoError(t, err)
		return string(b)
	}
	assert.NotContains(t, cfg(), "then set mayu_boot=local")

	require.NoError(t, tr.Sync([]host.Host{{Serial: "a", State: host.Running, MacAddresses: []string{"52:54:00:00:00:01"}}}))
	assert.Contains(t, cfg(), `"52:54:00:00:00:01" ]; then set mayu_boot=local`)

	// Back to installing: the MAC leaves the configuration.
	require.NoError(t, tr.Sync([]host.Host{{Serial: "a", State: host.Configured, MacAddresses: []string{"52:54:00:00:00:01"}}}))
	assert.NotContains(t, cfg(), "52:54:00:00:00:01")
}

func TestNewRefusesMissingLoaderRoot(t *testing.T) {
	_, err := New(Config{Dir: t.TempDir(), LoaderRoot: filepath.Join(t.TempDir(), "none"),
		Images: func() (string, string) { return "", "" }, Local: func(host.Host) bool { return false }})
	require.ErrorIs(t, err, ErrTree)
	_, err = New(Config{})
	require.ErrorIs(t, err, ErrTree)

	empty := t.TempDir()
	_, err = New(Config{Dir: t.TempDir(), LoaderRoot: empty, Loaders: []string{"shimx64.efi", "grubx64.efi"},
		Images: func() (string, string) { return "", "" }, Local: func(host.Host) bool { return false }})
	require.ErrorIs(t, err, ErrTree)
	assert.Contains(t, err.Error(), "has no shimx64.efi, grubx64.efi")
}
