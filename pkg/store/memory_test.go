package store_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store"
	"mayu/pkg/store/storetest"
)

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		m := store.NewMemory()
		t.Cleanup(func() { _ = m.Close() })
		return m
	})
}

func TestMemoryMessages(t *testing.T) {
	m := store.NewMemory()
	defer m.Close()
	_, err := m.Create("s1",
		store.Step{Message: "host created", Apply: func(h *host.Host) error { h.Enabled = true; return nil }},
		store.Step{Message: "updated host state", Apply: func(h *host.Host) error { return nil }}, // no change: no message
		store.Step{Message: "updated host cabinet", Apply: func(h *host.Host) error { h.Cabinet = 1; return nil }},
	)
	require.NoError(t, err)
	_, err = m.Create("s2")
	require.NoError(t, err)
	assert.Equal(t, []string{"s1: host created", "s1: updated host cabinet", "s2: host created"}, m.Messages())
}
