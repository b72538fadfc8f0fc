package proctest_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
	"mayu/pkg/proctest"
)

func TestConfigParses(t *testing.T) {
	cfg, err := config.Parse([]byte(proctest.Config(proctest.LoopConfig{
		IPStart: "10.9.0.21", IPEnd: "10.9.0.99",
		Profiles: []proctest.Profile{
			{Name: "core-services", Quantity: 3, Tags: []string{"role-core=true", "quobyte=true"}},
			{Name: "default", Tags: []string{"role-worker=true"}},
		},
	})))
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	assert.Equal(t, "lo", cfg.Network.Interface)
	require.Len(t, cfg.Profiles, 2)
	assert.Equal(t, []string{"role-core=true", "quobyte=true"}, cfg.Profiles[0].Tags)
	assert.Equal(t, 3, cfg.Profiles[0].Quantity)
}
