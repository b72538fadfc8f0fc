package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
)

func TestExplainConfigError(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "config.yaml")
	_, err := config.Load(missing)
	require.Error(t, err)
	require.True(t, strings.HasPrefix(explainConfigError(missing, err), "config "+missing+" does not exist"))

	asDir := filepath.Join(dir, "mounted")
	require.NoError(t, os.Mkdir(asDir, 0o755))
	_, err = config.Load(asDir)
	require.Error(t, err)
	require.True(t, strings.HasPrefix(explainConfigError(asDir, err), "config "+asDir+" is a directory, not a file"))

	// Any other error passes through unchanged.
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("no_such_key: 1\n"), 0o644))
	_, err = config.Load(bad)
	require.Error(t, err)
	require.Equal(t, err.Error(), explainConfigError(bad, err))
}

func TestClusterDirProblem(t *testing.T) {
	dir := t.TempDir()
	require.Empty(t, clusterDirProblem(dir))
	require.Empty(t, clusterDirProblem(filepath.Join(dir, "not-yet")), "the store creates a missing directory")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "the write check leaves nothing behind")
	if os.Geteuid() != 0 {
		require.NoError(t, os.Chmod(dir, 0o555))
		t.Cleanup(func() { _ = os.Chmod(dir, 0o755) })
		require.Contains(t, clusterDirProblem(dir), "is not writable by uid")
	}
}

func TestUDPPortFree(t *testing.T) {
	// A socket bound without SO_REUSEADDR, as a DHCP server holding the
	// port: the probe must see the port taken.
	pc, err := net.ListenPacket("udp4", "0.0.0.0:0")
	require.NoError(t, err)
	port := pc.LocalAddr().(*net.UDPAddr).Port
	err = udpPortFree(port)
	require.EqualError(t, err, "address already in use")
	require.NoError(t, pc.Close())
	require.NoError(t, udpPortFree(port))
}

func TestHasCapability(t *testing.T) {
	ok, err := hasCapability(capNetAdmin)
	require.NoError(t, err)
	switch {
	case os.Geteuid() != 0:
		// An unprivileged test process has no effective capability.
		require.False(t, ok)
	case !inContainer():
		// Root on a host has them all.
		require.True(t, ok)
	}
	_, err = hasCapability(63)
	require.NoError(t, err, "any bit of CapEff can be asked for")
}
