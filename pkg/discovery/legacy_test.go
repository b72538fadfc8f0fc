package discovery

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The import of Mayu 0.11's registries when the old endpoint has nothing
// to offer, or something broken. The import itself, against a real etcd,
// is in legacy_e2e_test.go.

// fakeOldEtcd answers every request with status, body and, if index is
// set, X-Etcd-Index, counting the requests.
func fakeOldEtcd(t *testing.T, status int, index, body string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if index != "" {
			w.Header().Set("X-Etcd-Index", index)
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func markers(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	for _, name := range []string{importStartedFile, importDoneFile} {
		if exists(filepath.Join(dir, name)) {
			found = append(found, name)
		}
	}
	return found
}

func newWithLegacy(t *testing.T, dir, legacy string) (*Internal, error) {
	t.Helper()
	return NewInternal(InternalConfig{Dir: dir, BaseURL: "http://mayu.test:4080", LegacyEtcd: legacy})
}

// TestLegacyNothingToImport: start goes on, quickly, with an empty
// registry and no marker, so that a later first start could still import.
func TestLegacyNothingToImport(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	nobody := closed.Addr().String()
	require.NoError(t, closed.Close())

	// Accepts connections and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	accepted := make(chan net.Conn, 16)
	go func() {
		defer close(accepted)
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		_ = silent.Close()
		for c := range accepted {
			_ = c.Close()
		}
	})

	notEtcd, _ := fakeOldEtcd(t, http.StatusNotFound, "", "404 page not found\n") // etcd 3.4 without --enable-v2
	tests := []struct {
		name, endpoint string
		within         time.Duration
	}{
		{"nothing listens", nobody, time.Second},
		{"nothing answers", silent.Addr().String(), legacyHeaderTimeout + 2*time.Second},
		{"no v2 keys API", notEtcd.URL, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			start := time.Now()
			s, err := newWithLegacy(t, dir, tt.endpoint)
			took := time.Since(start)
			require.NoError(t, err)
			assert.Less(t, took, tt.within)
			assert.Empty(t, s.regs)
			assert.Empty(t, markers(t, dir))
			// The start carries on as before: the default token is created.
			_, err = s.NewToken(context.Background(), 0)
			require.NoError(t, err)
		})
	}
}

// TestLegacyEmptyEtcd: an etcd without registries is a conclusive answer,
// recorded, and never asked again.
func TestLegacyEmptyEtcd(t *testing.T) {
	srv, asked := fakeOldEtcd(t, http.StatusNotFound, "17", `{"errorCode":100,"message":"Key not found","cause":"/_etcd","index":17}`)
	dir := t.TempDir()
	s, err := newWithLegacy(t, dir, srv.URL)
	require.NoError(t, err)
	assert.Empty(t, s.regs)
	assert.Equal(t, []string{importDoneFile}, markers(t, dir))
	require.EqualValues(t, 1, asked.Load())

	_, err = newWithLegacy(t, dir, srv.URL)
	require.NoError(t, err)
	assert.EqualValues(t, 1, asked.Load(), "asked once only")
}

// TestLegacyBrokenEtcdFailsStart: an etcd that answers but cannot list its
// registries stops the start, naming the ways out, and leaves nothing
// behind, so that the next start tries again.
func TestLegacyBrokenEtcdFailsStart(t *testing.T) {
	for _, tt := range []struct {
		name, body string
		status     int
	}{
		{"error", `{"errorCode":300,"message":"Raft Internal Error","index":9}`, http.StatusInternalServerError},
		{"garbage", `{"action":"get","node":`, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := fakeOldEtcd(t, tt.status, "9", tt.body)
			dir := t.TempDir()
			_, err := newWithLegacy(t, dir, srv.URL)
			require.ErrorIs(t, err, ErrUnavailable)
			assert.Contains(t, err.Error(), "--etcd-endpoint="+srv.Listener.Addr().String())
			assert.Empty(t, markers(t, dir))
		})
	}
}

// TestLegacyNotAskedWithRegistries: a registry directory with registries
// of its own, or an empty LegacyEtcd, never asks the old endpoint.
func TestLegacyNotAskedWithRegistries(t *testing.T) {
	srv, asked := fakeOldEtcd(t, http.StatusInternalServerError, "9", `{"errorCode":300}`)
	dir := t.TempDir()
	s := newInternal(t, dir)
	_, err := s.NewToken(context.Background(), 3)
	require.NoError(t, err)
	_, err = newWithLegacy(t, dir, srv.URL)
	require.NoError(t, err)
	_, err = newWithLegacy(t, t.TempDir(), "")
	require.NoError(t, err)
	assert.Zero(t, asked.Load())

	_, err = newWithLegacy(t, t.TempDir(), "ftp://old")
	assert.ErrorIs(t, err, ErrConfig)
}
