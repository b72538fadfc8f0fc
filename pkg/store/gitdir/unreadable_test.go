package gitdir_test

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/pkg/store"
	"mayu/pkg/store/gitdir"
)

const (
	typoSerial = "0800278e158a-0"
	typoMAC    = "08:00:27:8e:15:8a"
	typoAddr   = "192.168.2.21"
)

// installedHost creates an installed host in a new cluster directory and
// closes the store.
func installedHost(t *testing.T, noGit bool) string {
	t.Helper()
	dir := t.TempDir()
	d, err := gitdir.Open(dir, gitdir.Options{NoGit: noGit})
	require.NoError(t, err)
	_, err = d.Create(typoSerial, step("host created", func(h *host.Host) {
		h.Enabled, h.State = true, host.Installed
		h.MacAddresses = []string{typoMAC}
		h.InternalAddr = net.ParseIP(typoAddr).To4()
		h.Profile = "core"
	}))
	require.NoError(t, err)
	require.NoError(t, d.Close())
	return dir
}

// typo breaks the record's JSON as a one-character hand edit would.
func typo(t *testing.T, dir string) []byte {
	t.Helper()
	p := filepath.Join(dir, typoSerial, "conf.json")
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	broken := []byte(strings.Replace(string(b), `"Enabled": true,`, `"Enabled": true`, 1))
	require.NotEqual(t, b, broken)
	require.NoError(t, os.WriteFile(p, broken, 0o644))
	return broken
}

// assertStillServed: the record, its address and its MACs are served, and
// its address is not handed out again.
func assertStillServed(t *testing.T, d *gitdir.Dir) {
	t.Helper()
	h, err := d.ByMAC(typoMAC)
	require.NoError(t, err, "DHCP still ignores the installed machine")
	assert.Equal(t, typoSerial, h.Serial)
	assert.Equal(t, host.Installed, h.State)
	h, err = d.ByIP(net.ParseIP(typoAddr))
	require.NoError(t, err)
	assert.Equal(t, typoSerial, h.Serial)
	assert.Equal(t, 1, d.ProfileCount("core"))
	r, err := d.Reserve("newcomer", store.AllocRequest{First: net.ParseIP(typoAddr), Last: net.ParseIP("192.168.2.22"),
		Profiles: []store.ProfileQuota{{Name: "core", Quantity: 1}}, Default: "default"})
	require.NoError(t, err)
	defer r.Release()
	assert.Equal(t, store.Allocation{Profile: "default", Addr: net.ParseIP("192.168.2.22").To4()}, r.Allocation(),
		"neither the address nor the profile slot is free")
}

// TestUnreadableRecordAtStart: a typo in an installed host's conf.json
// does not lose the record at start: it is served from HEAD, with a
// warning naming the file and the fix; the file stays for the operator
// until the next change of the host rewrites it.
func TestUnreadableRecordAtStart(t *testing.T) {
	dir := installedHost(t, false)
	logBefore := gitLog(t, dir)
	broken := typo(t, dir)

	logs := &proctest.Output{}
	d, err := gitdir.Open(dir, gitdir.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	require.NoError(t, err)
	defer d.Close()
	assertStillServed(t, d)
	assert.Contains(t, logs.String(), "level=WARN")
	assert.Contains(t, logs.String(), "serving its last committed copy")
	assert.Contains(t, logs.String(), filepath.Join(dir, typoSerial, "conf.json"))
	assert.Contains(t, logs.String(), "git -C "+dir+" checkout ")
	assert.Equal(t, logBefore, gitLog(t, dir), "HEAD already holds the record: nothing to commit")
	assert.Equal(t, broken, readFile(t, dir, typoSerial+"/conf.json"), "the operator's file is left as it is")
	assert.Contains(t, git(t, dir, "status", "--porcelain"), typoSerial+"/conf.json", "git status shows the broken file")

	_, err = d.Update(typoSerial, step("updated host cabinet", func(h *host.Host) { h.Cabinet = 3 }))
	require.NoError(t, err)
	checkFilesMatch(t, dir, d)
	checkRepo(t, dir)
}

// TestUnreadableRecordCommitted: the operator committed the typo with the
// git CLI: the record comes from the last commit that has a readable copy,
// and HEAD gets it back.
func TestUnreadableRecordCommitted(t *testing.T) {
	dir := installedHost(t, false)
	typo(t, dir)
	git(t, dir, "commit", "-q", "-am", "operator typo")

	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()
	assertStillServed(t, d)
	msg := gitLog(t, dir)[0]
	assert.True(t, strings.HasPrefix(msg, typoSerial+": restored from "), msg)
	show := git(t, dir, "show", "HEAD:"+typoSerial+"/conf.json")
	_, err = host.Unmarshal([]byte(show))
	assert.NoError(t, err, "HEAD holds a readable record again")
}

// TestUnreadableHandEdit: the same typo saved while mayu runs keeps the
// record served, and so does the next start.
func TestUnreadableHandEdit(t *testing.T) {
	dir := installedHost(t, false)
	logs := &proctest.Output{}
	d, err := gitdir.Open(dir, gitdir.Options{Watch: true, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	require.NoError(t, err)
	logBefore := gitLog(t, dir)
	typo(t, dir)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "ignoring malformed hand edit") {
		require.True(t, time.Now().Before(deadline), "the malformed edit is not logged")
		time.Sleep(20 * time.Millisecond)
	}
	assert.Contains(t, logs.String(), "checkout -- "+typoSerial+"/conf.json")
	assertStillServed(t, d)
	assert.Equal(t, logBefore, gitLog(t, dir), "nothing committed")
	require.NoError(t, d.Close())

	d, err = gitdir.Open(dir, gitdir.Options{Watch: true})
	require.NoError(t, err)
	defer d.Close()
	assertStillServed(t, d)
}

// TestUnreadableRecordRefusesToStart: with no commit to take the record
// from (--no-git, or a record git never had), Open fails naming the file
// and the fix rather than forget the record.
func TestUnreadableRecordRefusesToStart(t *testing.T) {
	t.Run("no git", func(t *testing.T) {
		dir := installedHost(t, true)
		typo(t, dir)
		_, err := gitdir.Open(dir, gitdir.Options{NoGit: true})
		require.ErrorIs(t, err, gitdir.ErrUnreadableRecord)
		assert.Contains(t, err.Error(), filepath.Join(dir, typoSerial, "conf.json"))
		assert.Contains(t, err.Error(), "--no-git")
		assert.Contains(t, err.Error(), "fix the file")
	})
	t.Run("never committed", func(t *testing.T) {
		dir := installedHost(t, false)
		require.NoError(t, os.Mkdir(filepath.Join(dir, "byhand"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "byhand", "conf.json"), []byte(`{"Serial": "byhand",`), 0o644))
		_, err := gitdir.Open(dir, gitdir.Options{})
		require.ErrorIs(t, err, gitdir.ErrUnreadableRecord)
		assert.Contains(t, err.Error(), filepath.Join(dir, "byhand", "conf.json"))
		assert.Contains(t, err.Error(), "no commit holds it")
	})
}

// TestSerialCaseOf011: Mayu 0.11 kept the serial's case in the record and
// found records by directory: such a record loads under its directory's
// name, and is written so at its next change.
func TestSerialCaseOf011(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, typoSerial), 0o755))
	b, err := host.Host{Serial: strings.ToUpper(typoSerial), Enabled: true, State: host.Running,
		MacAddresses: []string{typoMAC}, InternalAddr: net.ParseIP(typoAddr).To4()}.Marshal()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, typoSerial, "conf.json"), b, 0o644))
	git(t, dir, "init", "-q", "-b", "master")
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", typoSerial+": host created")

	d, err := gitdir.Open(dir, gitdir.Options{})
	require.NoError(t, err)
	defer d.Close()
	h, err := d.Get(typoSerial)
	require.NoError(t, err)
	assert.Equal(t, typoSerial, h.Serial)
	assert.Equal(t, host.Running, h.State)
	h, err = d.ByMAC(typoMAC)
	require.NoError(t, err)
	assert.Equal(t, typoSerial, h.Serial)
	assert.Equal(t, b, readFile(t, dir, typoSerial+"/conf.json"), "read, not rewritten")

	_, err = d.Update(typoSerial, step("updated host cabinet", func(h *host.Host) { h.Cabinet = 1 }))
	require.NoError(t, err)
	h, err = host.Unmarshal(readFile(t, dir, typoSerial+"/conf.json"))
	require.NoError(t, err)
	assert.Equal(t, typoSerial, h.Serial)
	checkRepo(t, dir)
}
