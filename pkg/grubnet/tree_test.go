package grubnet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
)

func TestRender(t *testing.T) {
	got := string(Render("mayu=http://192.168.2.2:4080 next-script=x", []string{"52:54:00:00:00:01"}, false))
	assert.Contains(t, got, `if [ "$net_default_mac" = "52:54:00:00:00:01" ]; then set mayu_boot=local; fi`)
	assert.Contains(t, got, "linux /images/vmlinuz mayu=http://192.168.2.2:4080 next-script=x\n")
	assert.Contains(t, got, "initrd /images/initrd.cpio.gz\nboot\n")
	assert.Contains(t, got, "\texit\n")

	none := string(Render("a", nil, false))
	assert.NotContains(t, none, "then set mayu_boot=local")
	assert.NotContains(t, got, "grub_cpu", "no arm64 branch unless arm64 machines boot here")
}

func TestRenderARM64(t *testing.T) {
	got := string(Render("mayu=http://192.168.2.2:4080", []string{"52:54:00:00:00:01"}, true))
	// The local-boot decision comes first, for every architecture.
	local := strings.Index(got, "\texit\n")
	branch := strings.Index(got, `if [ "$grub_cpu" = arm64 ]; then`)
	require.True(t, local > 0 && branch > local, "exit before the arm64 branch:\n%s", got)
	assert.Contains(t, got, "\tlinux /images/arm64/vmlinuz mayu=http://192.168.2.2:4080 console=ttyAMA0,115200n8\n"+
		"\tinitrd /images/arm64/initrd.cpio.gz\n\tboot\nfi\n")
	// x86-64 GRUB (the Secure Boot chain) still boots the x86-64 kernel.
	assert.True(t, strings.HasSuffix(got, "linux /images/vmlinuz mayu=http://192.168.2.2:4080\ninitrd /images/initrd.cpio.gz\nboot\n"), got)
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
	_, err = os.Lstat(filepath.Join(tree, "images", "arm64"))
	require.ErrorIs(t, err, os.ErrNotExist, "no arm64 images without ARM64Images")

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

func TestTreeARM64(t *testing.T) {
	dir := t.TempDir()
	loaders := filepath.Join(dir, "tftproot")
	require.NoError(t, os.MkdirAll(loaders, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(loaders, "grubaa64.efi"), []byte("grub"), 0o644))
	files := map[string]string{}
	for _, f := range []string{"k", "i", "arm64/k", "arm64/i"} {
		p := filepath.Join(dir, "images", "1.0", f)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte("file "+f), 0o644))
		files[f] = p
	}
	tree := filepath.Join(dir, "tftp")
	_, err := New(Config{
		Dir: tree, LoaderRoot: loaders, KernelArgs: "mayu=x", Loaders: []string{"grubaa64.efi"},
		Images:      func() (string, string) { return files["k"], files["i"] },
		ARM64Images: func() (string, string) { return files["arm64/k"], files["arm64/i"] },
		Local:       func(host.Host) bool { return false },
	})
	require.NoError(t, err)
	for name, want := range map[string]string{"grubaa64.efi": "grub", "images/vmlinuz": "file k",
		"images/initrd.cpio.gz": "file i", "images/arm64/vmlinuz": "file arm64/k", "images/arm64/initrd.cpio.gz": "file arm64/i"} {
		b, err := os.ReadFile(filepath.Join(tree, name))
		require.NoError(t, err, name)
		assert.Equal(t, want, string(b), name)
	}
	b, err := os.ReadFile(filepath.Join(tree, "grub", "grub.cfg"))
	require.NoError(t, err)
	assert.Contains(t, string(b), "linux /images/arm64/vmlinuz mayu=x console=ttyAMA0")
}
