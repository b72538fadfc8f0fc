package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHistoryCleared: once the history has dropped events a watch might
// need, it gets etcd's "cleared" error (400, 401), never a later event
// that would make it skip a member.
func TestHistoryCleared(t *testing.T) {
	r := newRegistry("tok", 3, 1)
	idx := uint64(1)
	for i := range historyLimit + 10 {
		idx++
		_, _, e := r.set("m", fmt.Sprint(i), condition{}, idx)
		require.Nil(t, e)
	}
	require.Len(t, r.Events, historyLimit)
	assert.Equal(t, idx-historyLimit, r.Cleared)

	_, e := r.watch("m", false, 2)
	require.NotNil(t, e)
	assert.Equal(t, codeIndexCleared, e.Code)
	assert.Equal(t, 400, e.status())

	ev, e := r.watch("m", false, r.Cleared+1)
	require.Nil(t, e)
	assert.Equal(t, r.Cleared+1, ev.Index)
}

func TestWatchMatching(t *testing.T) {
	r := newRegistry("tok", 3, 1)
	_, _, e := r.set("d/x", "1", condition{}, 2)
	require.Nil(t, e)
	_, _, e = r.set("d/_h", "1", condition{}, 3)
	require.Nil(t, e)
	_, _, e = r.set("dx", "1", condition{}, 4)
	require.Nil(t, e)

	tests := []struct {
		name      string
		key       string
		recursive bool
		from      uint64
		want      uint64 // 0: no event
	}{
		{"exact", "d/x", false, 1, 2},
		{"exact hidden key is seen", "_config/size", false, 1, 1},
		{"recursive root skips hidden", "", true, 1, 2},
		{"recursive dir", "d", true, 3, 0},
		{"recursive dir is not a prefix match", "d", true, 4, 0},
		{"non-recursive dir sees no children", "d", false, 1, 0},
		{"recursive root later", "", true, 3, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, e := r.watch(tt.key, tt.recursive, tt.from)
			require.Nil(t, e)
			if tt.want == 0 {
				assert.Nil(t, ev)
				return
			}
			require.NotNil(t, ev)
			assert.Equal(t, tt.want, ev.Index)
		})
	}
}

func TestRegistryLimits(t *testing.T) {
	r := newRegistry("tok", 3, 1)
	idx := uint64(1)
	for i := range maxLeaves - 1 { // _config/size is one
		idx++
		_, _, e := r.set(fmt.Sprint("m", i), "v", condition{}, idx)
		require.Nil(t, e)
	}
	_, _, e := r.set("one-more", "v", condition{}, idx+1)
	require.NotNil(t, e)
	assert.Equal(t, codeInvalidField, e.Code)
	_, _, e = r.set("m0", "changed", condition{}, idx+1)
	assert.Nil(t, e, "existing keys can still change")
}

func TestLoadRegistries(t *testing.T) {
	good := func(t *testing.T, dir string) string {
		s := newInternal(t, dir)
		tok, err := s.NewToken(context.Background(), 3)
		require.NoError(t, err)
		return tok
	}
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
		wantErr bool
	}{
		{"stale temp files are removed", func(t *testing.T, dir string) {
			good(t, dir)
			require.NoError(t, os.WriteFile(filepath.Join(dir, tempPrefix+"abc-123"), []byte("{"), 0o600))
		}, false},
		{"other files are ignored", func(t *testing.T, dir string) {
			good(t, dir)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o600))
		}, false},
		{"torn file", func(t *testing.T, dir string) {
			tok := good(t, dir)
			require.NoError(t, os.WriteFile(filepath.Join(dir, tok+".json"), []byte(`{"version":1,"tok`), 0o600))
		}, true},
		{"file renamed to another token", func(t *testing.T, dir string) {
			tok := good(t, dir)
			require.NoError(t, os.Rename(filepath.Join(dir, tok+".json"), filepath.Join(dir, "ffff.json")))
		}, true},
		{"unknown version", func(t *testing.T, dir string) {
			tok := good(t, dir)
			editRegistry(t, filepath.Join(dir, tok+".json"), func(m map[string]any) { m["version"] = 7 })
		}, true},
		{"key outside the alphabet", func(t *testing.T, dir string) {
			tok := good(t, dir)
			editRegistry(t, filepath.Join(dir, tok+".json"), func(m map[string]any) {
				m["leaves"].(map[string]any)["../x"] = map[string]any{"value": "v", "createdIndex": 1, "modifiedIndex": 1}
			})
		}, true},
		{"indexes beyond the registry", func(t *testing.T, dir string) {
			tok := good(t, dir)
			editRegistry(t, filepath.Join(dir, tok+".json"), func(m map[string]any) { m["index"] = 0 })
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.prepare(t, dir)
			_, err := NewInternal(InternalConfig{Dir: dir, BaseURL: "http://a"})
			if tt.wantErr {
				assert.ErrorIs(t, err, ErrStorage)
				return
			}
			require.NoError(t, err)
			left, err := filepath.Glob(filepath.Join(dir, tempPrefix+"*"))
			require.NoError(t, err)
			assert.Empty(t, left)
		})
	}
}

func editRegistry(t *testing.T, path string, f func(map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	f(m)
	b, err = json.Marshal(m)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o600))
}

func TestTokenFromURL(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"https://discovery.etcd.io/41f07d10ab835b22071a32d5c1b75a6d", "41f07d10ab835b22071a32d5c1b75a6d", false},
		{"http://10.0.0.1:4080/etcd/41f07d10ab835b22071a32d5c1b75a6d/", "41f07d10ab835b22071a32d5c1b75a6d", false},
		{" http://a/etcd/tok\n", "tok", false},
		{"41f07d10ab835b22071a32d5c1b75a6d", "41f07d10ab835b22071a32d5c1b75a6d", false},
		{"http://a/", "", true},
		{"", "", true},
		{"http://a/etcd/..", "", true},
		{"http://a/etcd/a%20b", "", true},
		{"://bad", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := TokenFromURL(tt.in)
			if tt.wantErr {
				assert.ErrorIs(t, err, ErrBadToken)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		def     int
		want    int
		wantErr bool
	}{
		{"", 3, 3, false},
		{"5", 3, 5, false},
		{" 7 ", 3, 7, false},
		{"1", 3, 1, false},
		{"99", 3, 99, false},
		{"100", 3, 0, true},
		{"0", 3, 0, true},
		{"x", 3, 0, true},
		{"", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q/%d", tt.in, tt.def), func(t *testing.T) {
			got, err := ParseSize(tt.in, tt.def)
			if tt.wantErr {
				assert.ErrorIs(t, err, ErrBadSize)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// FuzzTokenFromURL: whatever comes in, a token that comes out is safe as a
// file name and a path element.
func FuzzTokenFromURL(f *testing.F) {
	for _, s := range []string{"https://discovery.etcd.io/abc", "http://a/etcd/../x", "", "%2e%2e", "http://a/b/c/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := TokenFromURL(s)
		if err != nil {
			return
		}
		if !ValidToken(tok) || filepath.Base(tok) != tok || tok == "." || tok == ".." {
			t.Fatalf("unsafe token %q from %q", tok, s)
		}
	})
}
