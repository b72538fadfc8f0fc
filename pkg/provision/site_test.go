package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
	"mayu/pkg/discovery"
	"mayu/pkg/host"
	"mayu/pkg/render"
	"mayu/pkg/store"
)

// fakeDiscovery names URLs under d.example and creates one fixed token.
type fakeDiscovery struct {
	checkErr error
	created  []int // sizes NewToken was asked for
}

func (f *fakeDiscovery) URL(token string) string { return "https://d.example/" + token }
func (f *fakeDiscovery) Check(context.Context) error {
	return f.checkErr
}

func (f *fakeDiscovery) NewToken(_ context.Context, size int) (string, error) {
	f.created = append(f.created, size)
	return "f00dfeed", nil
}

// racingDiscovery runs meanwhile inside NewToken: another instance's
// write landing between this one's read and its write.
type racingDiscovery struct {
	fakeDiscovery
	meanwhile func()
}

func (r *racingDiscovery) NewToken(ctx context.Context, size int) (string, error) {
	r.meanwhile()
	return r.fakeDiscovery.NewToken(ctx, size)
}

// ensuringDiscovery holds registries itself, like the internal service.
type ensuringDiscovery struct {
	fakeDiscovery
	ensured []string
}

func (e *ensuringDiscovery) Ensure(_ context.Context, token string, size int) (bool, error) {
	e.ensured = append(e.ensured, fmt.Sprintf("%s/%d", token, size))
	return true, nil
}

func newSiteTest(t *testing.T, disc Discovery, noTLS bool) (*Provisioner, *store.Memory) {
	t.Helper()
	cfg, err := config.Parse([]byte(fmt.Sprintf(testConfig, "192.168.2.99")))
	require.NoError(t, err)
	st := store.NewMemory()
	t.Cleanup(func() { _ = st.Close() })
	p, err := New(Config{Cluster: cfg, Store: st, HTTPPort: 4080, NoTLS: noTLS, Discovery: disc})
	require.NoError(t, err)
	return p, st
}

func TestHostsAndImageVersion(t *testing.T) {
	p, st := newSiteTest(t, nil, true)
	b, err := json.Marshal(p.Hosts())
	require.NoError(t, err)
	assert.JSONEq(t, `[]`, string(b), "an empty cluster lists as [], not null")

	_, _, err = p.Register("m1")
	require.NoError(t, err)
	_, err = st.Create("bare", store.Step{Message: MsgCreated, Apply: func(h *host.Host) error { return nil }})
	require.NoError(t, err)
	assert.Len(t, p.Hosts(), 2)

	v, err := p.ImageVersion("bare")
	require.NoError(t, err)
	assert.Equal(t, "1068.6.0", v, "no version in the record: the default")
	assert.Equal(t, "1068.6.0", p.DefaultImageVersion())

	// The record's CoreOSVersion is what the machine reported at
	// boot_complete (as in Mayu 0.11): shown, never used to pick images,
	// so a machine cannot choose the image of its next reinstall.
	_, err = st.Update("m1", store.Step{Message: "test", Apply: func(h *host.Host) error { h.State = host.Installed; return nil }})
	require.NoError(t, err)
	_, err = p.BootComplete("m1", Versions{CoreOSVersion: "1010.5.0"})
	require.NoError(t, err)
	h, err := st.Get("m1")
	require.NoError(t, err)
	assert.Equal(t, "1010.5.0", h.CoreOSVersion, "the reported version is recorded")
	v, err = p.ImageVersion("M1")
	require.NoError(t, err)
	assert.Equal(t, "1068.6.0", v, "the reported version does not pick the image: the profile's (here the default)")
	_, err = st.Update("m1", store.Step{Message: "test", Apply: func(h *host.Host) error { h.CoreOSVersion = "../../x"; return nil }})
	require.NoError(t, err)
	v, err = p.ImageVersion("m1")
	require.NoError(t, err)
	assert.Equal(t, "1068.6.0", v, "nor does a record version written by anything else")

	// A profile's coreos_version (config.yaml, the operator's) picks it.
	_, err = st.Update("m1", store.Step{Message: "test", Apply: func(h *host.Host) error { h.Profile = "storage"; return nil }})
	require.NoError(t, err)
	v, err = p.ImageVersion("m1")
	require.NoError(t, err)
	assert.Equal(t, "1122.2.0", v, "the profile's version beats the default")
	_, err = st.Update("m1", store.Step{Message: "test", Apply: func(h *host.Host) error { h.Profile = "gone-from-config"; return nil }})
	require.NoError(t, err)
	v, err = p.ImageVersion("m1")
	require.NoError(t, err)
	assert.Equal(t, "1068.6.0", v, "a profile config.yaml no longer has: the default")

	_, err = p.Override("m1", map[string]interface{}{"CoreOSVersion": "1010.5.0"})
	require.NoError(t, err)
	v, err = p.ImageVersion("m1")
	require.NoError(t, err)
	assert.Equal(t, "1010.5.0", v, "the override beats the profile and the default")

	v, err = p.ImageVersion("nobody")
	require.NoError(t, err)
	assert.Equal(t, "1068.6.0", v, "a serial without a record boots the default, as from Mayu 0.11")
	_, err = p.ImageVersion("../x")
	assert.ErrorIs(t, err, host.ErrInvalidSerial)
}

func TestFinalData(t *testing.T) {
	p, _ := newSiteTest(t, &fakeDiscovery{}, false)
	require.NoError(t, p.SetClusterToken("41f07d10ab835b22071a32d5c1b75a6d"))
	assert.Equal(t, "https://192.168.2.2:4080", p.BaseURL())

	h := host.Host{Serial: "m1", InternalAddr: net.ParseIP("192.168.2.21")}
	want := render.FinalData{
		Host:             h,
		EtcdDiscoveryUrl: "https://d.example/41f07d10ab835b22071a32d5c1b75a6d",
		ClusterNetwork:   p.cfg.Network,
		MayuHost:         "192.168.2.2",
		MayuPort:         4080,
		MayuURL:          "https://192.168.2.2:4080",
		PostBootURL:      "https://192.168.2.2:4080/admin/host/m1/boot_complete",
		TemplatesEnv:     p.cfg.TemplatesEnv,
	}
	assert.Equal(t, want, p.FinalData(h), "a host without a token gets the cluster's default")

	h.EtcdClusterToken = "storagetoken"
	assert.Equal(t, "https://d.example/storagetoken", p.FinalData(h).EtcdDiscoveryUrl, "a host's own token wins")

	plain, _ := newSiteTest(t, nil, true)
	d := plain.FinalData(h)
	assert.Empty(t, d.EtcdDiscoveryUrl, "no discovery, no URL")
	assert.Equal(t, "http://192.168.2.2:4080/admin/host/m1/boot_complete", d.PostBootURL)
	assert.True(t, d.NoTLS)

	// The daemon's data and --show-templates' come from the same Site.
	site := Site{Cluster: p.cfg, HTTPPort: 4080}
	assert.Equal(t, p.FinalData(h), site.FinalData(h, "https://d.example/storagetoken"))
}

func TestEnsureClusterToken(t *testing.T) {
	ctx := context.Background()
	t.Run("created when missing", func(t *testing.T) {
		disc := &fakeDiscovery{}
		p, st := newSiteTest(t, disc, true)
		require.NoError(t, p.EnsureClusterToken(ctx, 5))
		assert.Equal(t, []int{5}, disc.created)
		assert.Equal(t, "f00dfeed", st.Cluster().Config.DefaultEtcdClusterToken)
		assert.Contains(t, st.Messages(), "Set default etcd cluster to 'f00dfeed'")

		// Once set, nothing changes at the next start.
		before := len(st.Messages())
		require.NoError(t, p.EnsureClusterToken(ctx, 5))
		assert.Equal(t, []int{5}, disc.created)
		assert.Len(t, st.Messages(), before)
	})
	t.Run("deprecated discovery URL converted", func(t *testing.T) {
		disc := &ensuringDiscovery{}
		p, st := newSiteTest(t, disc, true)
		_, err := st.UpdateCluster("old mayu", func(c *store.Cluster) error {
			c.Config.EtcdDiscoveryURL = "https://discovery.etcd.io/abc123"
			return nil
		})
		require.NoError(t, err)
		require.NoError(t, p.EnsureClusterToken(ctx, 3))
		assert.Empty(t, disc.created)
		assert.Equal(t, []string{"abc123/3"}, disc.ensured, "the registry of a token made elsewhere is created")
		cl := st.Cluster().Config
		assert.Equal(t, "abc123", cl.DefaultEtcdClusterToken)
		assert.Empty(t, cl.EtcdDiscoveryURL)
	})
	t.Run("bad deprecated URL", func(t *testing.T) {
		p, st := newSiteTest(t, &fakeDiscovery{}, true)
		_, err := st.UpdateCluster("old mayu", func(c *store.Cluster) error {
			c.Config.EtcdDiscoveryURL = "https://discovery.etcd.io/"
			return nil
		})
		require.NoError(t, err)
		err = p.EnsureClusterToken(ctx, 3)
		assert.ErrorIs(t, err, discovery.ErrBadToken)
		assert.Contains(t, err.Error(), "cluster.json: EtcdDiscoveryURL")
	})
	t.Run("discovery that does not work", func(t *testing.T) {
		disc := &fakeDiscovery{checkErr: errors.New("etcd at 127.0.0.1:1 refused")}
		p, st := newSiteTest(t, disc, true)
		err := p.EnsureClusterToken(ctx, 3)
		assert.EqualError(t, err, "etcd discovery: etcd at 127.0.0.1:1 refused")
		assert.Empty(t, disc.created)
		assert.Empty(t, st.Cluster().Config.DefaultEtcdClusterToken)
	})
	t.Run("token set meanwhile by another instance is kept", func(t *testing.T) {
		// The other instance writes its token while this one asks
		// discovery for a new one (both started on an empty store).
		disc := &racingDiscovery{}
		p, st := newSiteTest(t, disc, true)
		disc.meanwhile = func() {
			_, err := st.UpdateCluster("Set default etcd cluster to 'beef0001'", func(c *store.Cluster) error {
				c.Config.DefaultEtcdClusterToken = "beef0001"
				return nil
			})
			require.NoError(t, err)
		}
		require.NoError(t, p.EnsureClusterToken(ctx, 3))
		assert.Equal(t, []int{3}, disc.created)
		assert.Equal(t, "beef0001", st.Cluster().Config.DefaultEtcdClusterToken, "the first token written wins")
		assert.NotContains(t, st.Messages(), "Set default etcd cluster to 'f00dfeed'")
	})
	t.Run("no discovery", func(t *testing.T) {
		p, _ := newSiteTest(t, nil, true)
		assert.Error(t, p.EnsureClusterToken(ctx, 3))
	})
}
