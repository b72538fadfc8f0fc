package auth

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func write(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(p, []byte(content), mode))
	require.NoError(t, os.Chmod(p, mode))
	return p
}

var (
	tokA = strings.Repeat("A", 32)
	tokB = "b-" + strings.Repeat("9", 40)
)

func TestLoadAndAuthenticate(t *testing.T) {
	p := write(t, "# comment\n\n  alice admin "+tokA+"  \ngrafana read-only "+tokB+"\n", 0o600)
	toks, err := Load(p)
	require.NoError(t, err)
	assert.Equal(t, 2, toks.Len())
	assert.Equal(t, p, toks.Path())

	got, ok := toks.Authenticate(tokA)
	require.True(t, ok)
	assert.Equal(t, Principal{Kind: "admin", Name: "alice"}, got)
	assert.Equal(t, "admin:alice", got.String())
	assert.True(t, got.CanWrite())

	got, ok = toks.Authenticate(tokB)
	require.True(t, ok)
	assert.Equal(t, "read-only:grafana", got.String())
	assert.False(t, got.CanWrite())

	for _, bad := range []string{"", tokA[:31], tokA + "A", strings.ToLower(tokA), " " + tokA} {
		_, ok := toks.Authenticate(bad)
		assert.False(t, ok, "%q", bad)
	}
	assert.Equal(t, "anonymous", Anonymous.String())
	assert.Equal(t, "machine:0800278e158a-0", Machine("0800278e158a-0").String())
	assert.False(t, Machine("x").CanWrite())
}

func TestLoadRefuses(t *testing.T) {
	tests := []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"world-readable", "a admin " + tokA + "\n", 0o644, "mode 0644 lets other users read the tokens: chmod 600"},
		{"group-readable", "a admin " + tokA + "\n", 0o640, "chmod 600"},
		{"empty", "# nothing\n", 0o600, "no credential in it"},
		{"two fields", "a " + tokA + "\n", 0o600, "line 1: want \"<name> <role> <token>\", got 2 fields"},
		{"bad role", "a root " + tokA + "\n", 0o600, `line 1 (a): role "root": want admin or read-only`},
		{"short token", "a admin short\n", 0o600, "line 1 (a): token of 5 characters: want at least 32"},
		{"bad name", "a/b admin " + tokA + "\n", 0o600, `name "a/b"`},
		{"duplicate name", "a admin " + tokA + "\na read-only " + tokB + "\n", 0o600, `line 2: name "a" is on line 1 already`},
		{"duplicate token", "a admin " + tokA + "\nb read-only " + tokA + "\n", 0o600, "line 2 (b): same token as line 1"},
		{"non-ASCII", "a admin " + tokA + "é\n", 0o600, "not printable ASCII"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(write(t, tt.content, tt.mode))
			require.ErrorIs(t, err, ErrTokenFile)
			assert.ErrorContains(t, err, tt.want)
			assert.NotContains(t, err.Error(), tokA, "an error never shows a token")
		})
	}
	_, err := Load(filepath.Join(t.TempDir(), "missing"))
	assert.ErrorIs(t, err, ErrTokenFile)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestLoadOrCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cluster")
	p := filepath.Join(dir, DefaultFileName)
	toks, created, err := LoadOrCreate(p)
	require.NoError(t, err)
	assert.True(t, created)
	fi, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	di, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), di.Mode().Perm(), "a directory it creates is private too")
	tok, err := ClientToken(p)
	require.NoError(t, err)
	assert.Len(t, tok, 43)
	got, ok := toks.Authenticate(tok)
	require.True(t, ok)
	assert.Equal(t, "admin:admin", got.String())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file left")

	// A second start keeps the file (and so the token).
	_, created, err = LoadOrCreate(p)
	require.NoError(t, err)
	assert.False(t, created)
	again, err := ClientToken(p)
	require.NoError(t, err)
	assert.Equal(t, tok, again)
}

func TestLoadOrCreateConcurrentStartsAgree(t *testing.T) {
	p := filepath.Join(t.TempDir(), DefaultFileName)
	var wg sync.WaitGroup
	var mu sync.Mutex
	creators := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, created, err := LoadOrCreate(p)
			assert.NoError(t, err)
			if created {
				mu.Lock()
				creators++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 1, creators, "exactly one start creates the file; the others use it")
}

func TestReloadKeepsOldSetOnError(t *testing.T) {
	p := write(t, "a admin "+tokA+"\n", 0o600)
	toks, err := Load(p)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, []byte("b admin "+tokB+"\n"), 0o600))
	require.NoError(t, toks.Reload())
	_, ok := toks.Authenticate(tokA)
	assert.False(t, ok, "a revoked token stops working at reload")
	_, ok = toks.Authenticate(tokB)
	assert.True(t, ok)
	require.NoError(t, os.WriteFile(p, []byte("garbage\n"), 0o600))
	assert.Error(t, toks.Reload())
	_, ok = toks.Authenticate(tokB)
	assert.True(t, ok, "a broken file leaves the working set in place")
}

func TestClientToken(t *testing.T) {
	bare := write(t, "\n  "+tokA+"\n", 0o644)
	got, err := ClientToken(bare)
	require.NoError(t, err)
	assert.Equal(t, tokA, got)

	file := write(t, "viewer read-only "+tokB+"\nops admin "+tokA+"\n", 0o600)
	got, err = ClientToken(file)
	require.NoError(t, err)
	assert.Equal(t, tokA, got, "the first admin credential")

	ro := write(t, "viewer read-only "+tokB+"\n", 0o600)
	got, err = ClientToken(ro)
	require.NoError(t, err)
	assert.Equal(t, tokB, got)

	_, err = ClientToken(write(t, "a b\n", 0o600))
	assert.ErrorIs(t, err, ErrTokenFile)
}

func TestWithToken(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
	}))
	defer srv.Close()
	for _, tok := range []string{tokA, ""} {
		req, err := http.NewRequest("GET", srv.URL, nil)
		require.NoError(t, err)
		resp, err := (&http.Client{Transport: WithToken(nil, tok)}).Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Empty(t, req.Header.Get("Authorization"), "the caller's request is left as it was")
	}
	assert.Equal(t, []string{"Bearer " + tokA, ""}, got)
}
