package gitdir_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/store"
	"mayu/pkg/store/gitdir"
)

func TestHistoryListsOneHostsCommitsNewestFirst(t *testing.T) {
	dir := fixture(t, true) // Mayu 0.11's history, packed by git gc
	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()

	const a, b = "0800278e158a-0", "0800278e158b-1"
	_, err = d.Update(a, step("updated host state\n\nPrincipal: admin:ops\nRemote-Address: 10.0.0.9", func(h *host.Host) { h.State = host.Configured }))
	require.NoError(t, err)
	_, err = d.Update(b, step("updated host metadata", func(h *host.Host) { h.FleetMetadata = host.FleetMeta{"x=y"} }))
	require.NoError(t, err)
	_, err = d.Update(a, step("updated host metadata", func(h *host.Host) { h.FleetMetadata = host.FleetMeta{"a=b"} }))
	require.NoError(t, err)

	got, err := d.History(a, 0, 0)
	require.NoError(t, err)
	var msgs []string
	for _, c := range got {
		msgs = append(msgs, c.Message)
	}
	assert.Equal(t, []string{"updated host metadata", "updated host state", "host created"}, msgs)
	assert.Equal(t, "admin:ops", got[1].Principal)
	assert.Equal(t, "10.0.0.9", got[1].RemoteAddress)
	assert.Empty(t, got[2].Principal, "Mayu 0.11's commits name nobody")

	// The hashes and times are git's: the CLI agrees.
	log := strings.Fields(git(t, dir, "log", "--format=%H %cI", "--grep=^"+a+": "))
	require.Len(t, log, 6)
	for i, c := range got {
		assert.Equal(t, log[2*i], c.Hash)
		assert.Equal(t, log[2*i+1][:19], c.Time.Format("2006-01-02T15:04:05")[:19])
	}

	one, err := d.History(a, 1, 0)
	require.NoError(t, err)
	assert.Equal(t, got[:1], one)
	// Looking back two commits finds only the last one of a.
	near, err := d.History(a, 0, 2)
	require.NoError(t, err)
	assert.Equal(t, got[:1], near)

	none, err := d.History("unknown", 0, 0)
	require.NoError(t, err)
	assert.Empty(t, none)
	_, err = d.History("../x", 0, 0)
	assert.ErrorIs(t, err, host.ErrInvalidSerial)
}

func TestHistoryWithoutGit(t *testing.T) {
	d, err := gitdir.Open(t.TempDir(), gitdir.Options{NoGit: true})
	require.NoError(t, err)
	defer d.Close()
	_, err = d.History("a", 0, 0)
	assert.ErrorIs(t, err, store.ErrNoHistory)
}
