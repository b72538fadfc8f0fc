package store_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store"
)

func seed(t *testing.T, s store.Store, serial string, cabinet uint) {
	t.Helper()
	_, err := s.Create(serial, store.Step{Message: "host created", Apply: func(h *host.Host) error {
		h.State, h.Cabinet, h.Profile = host.Running, cabinet, "core"
		h.InternalAddr = net.IPv4(10, 0, 0, byte(cabinet)).To4()
		return nil
	}})
	require.NoError(t, err)
}

var copyOpts = store.CopyOptions{
	RecordMessage:  "host copied",
	ClusterMessage: func(tok string) string { return fmt.Sprintf("Set default etcd cluster to '%s'", tok) },
}

func TestCopy(t *testing.T) {
	src, dst := store.NewMemory(), store.NewMemory()
	for i := uint(1); i <= 3; i++ {
		seed(t, src, fmt.Sprintf("s%d", i), i)
	}
	_, err := src.UpdateCluster("x", func(c *store.Cluster) error { c.Config.DefaultEtcdClusterToken = "tok"; return nil })
	require.NoError(t, err)

	res, err := store.Copy(dst, src, copyOpts)
	require.NoError(t, err)
	assert.Equal(t, store.CopyResult{Created: 3, Target: 3, Cluster: true}, res)
	assert.Equal(t, src.List(), dst.List())
	assert.Equal(t, "tok", dst.Cluster().Config.DefaultEtcdClusterToken)
	assert.Equal(t, 3, dst.ProfileCount("core"))
	assert.Equal(t, []string{"s1: host copied", "s2: host copied", "s3: host copied", "Set default etcd cluster to 'tok'"}, dst.Messages())

	// A second copy into the now non-empty target is refused...
	_, err = store.Copy(dst, src, copyOpts)
	require.ErrorIs(t, err, store.ErrTargetNotEmpty)
	assert.Contains(t, err.Error(), "3 host records")

	// ...unless told: records of the source's serials are replaced, others kept.
	seed(t, dst, "only-in-target", 9)
	_, err = src.Update("s2", store.Step{Message: "x", Apply: func(h *host.Host) error { h.Cabinet = 7; return nil }})
	require.NoError(t, err)
	o := copyOpts
	o.Overwrite = true
	res, err = store.Copy(dst, src, o)
	require.NoError(t, err)
	assert.Equal(t, store.CopyResult{Replaced: 1, Unchanged: 2, Target: 4}, res)
	h, err := dst.Get("s2")
	require.NoError(t, err)
	assert.Equal(t, uint(7), h.Cabinet)
}

func TestCopyRefusals(t *testing.T) {
	_, err := store.Copy(store.NewMemory(), store.NewMemory(), copyOpts)
	assert.ErrorContains(t, err, "the source holds no host record")

	src, dst := store.NewMemory(), store.NewMemory()
	seed(t, src, "s1", 1)
	_, err = dst.UpdateCluster("x", func(c *store.Cluster) error { c.Config.DefaultEtcdClusterToken = "other"; return nil })
	require.NoError(t, err)
	_, err = store.Copy(dst, src, copyOpts)
	require.ErrorIs(t, err, store.ErrTargetNotEmpty)
	assert.Contains(t, err.Error(), `"other"`)
	assert.Empty(t, dst.List(), "nothing written")
}
