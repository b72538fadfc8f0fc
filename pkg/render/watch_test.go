package render

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// syncBuffer is a log sink the watcher goroutine and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Every wait here is bounded; fsnotify plus the settle delay normally take
// well under a second, the bound only stops a broken watcher from hanging CI.
const watchBound = 15 * time.Second

func TestWatchKeepsLastGoodSetAndPicksUpFixes(t *testing.T) {
	cfg := writeTemplates(t, false, map[string]string{
		"final.yaml":      "#cloud-config\nv: 1\n{{template \"s\" .}}\n",
		"snippets/s.yaml": `{{define "s"}}s: one{{end}}`,
	})
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := New(cfg)
	require.NoError(t, err)

	armed := make(chan struct{})
	r.watching = func() { close(armed) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(watchBound):
			t.Error("Watch did not return after its context was cancelled")
		}
	})
	select {
	case <-armed:
	case err := <-done:
		t.Fatalf("Watch returned early: %v", err)
	case <-time.After(watchBound):
		t.Fatal("Watch never started watching")
	}

	d := finalData(PlaceholderHost(), network("singlenic"), nil, false)
	render := func() string {
		out, err := r.Final(d)
		require.NoError(t, err)
		return string(out)
	}
	require.Equal(t, "#cloud-config\nv: 1\ns: one\n", render())

	// A broken final template: the reload fails, is logged, and renders go on
	// with the previous set.
	before := r.reloads.Load()
	writeFile(t, cfg.LastStageCloudConfig, "#cloud-config\nv: {{.Host.Hostname\n")
	require.Eventually(t, func() bool { return r.reloads.Load() > before }, watchBound, 10*time.Millisecond, "no reload after the template broke")
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "unclosed action") }, watchBound, 10*time.Millisecond,
		"the parse failure was not logged: %s", logs.String())
	assert.Equal(t, "#cloud-config\nv: 1\ns: one\n", render())
	assert.Contains(t, logs.String(), "still using the previous ones")
	assert.Contains(t, logs.String(), "final.yaml")

	// Fixed again: picked up.
	writeFile(t, cfg.LastStageCloudConfig, "#cloud-config\nv: 2\n{{template \"s\" .}}\n")
	require.Eventually(t, func() bool { return render() == "#cloud-config\nv: 2\ns: one\n" }, watchBound, 10*time.Millisecond)

	// A snippet changes.
	writeFile(t, filepath.Join(cfg.Snippets, "s.yaml"), `{{define "s"}}s: two{{end}}`)
	require.Eventually(t, func() bool { return render() == "#cloud-config\nv: 2\ns: two\n" }, watchBound, 10*time.Millisecond)

	// An editor that writes a new file and renames it over the old one.
	tmp := filepath.Join(filepath.Dir(cfg.LastStageCloudConfig), ".final.yaml.swp")
	writeFile(t, tmp, "#cloud-config\nv: 3\n{{template \"s\" .}}\n")
	require.NoError(t, os.Rename(tmp, cfg.LastStageCloudConfig))
	require.Eventually(t, func() bool { return render() == "#cloud-config\nv: 3\ns: two\n" }, watchBound, 10*time.Millisecond)

	// A snippet that is removed while the template still uses it: rejected.
	require.NoError(t, os.Remove(filepath.Join(cfg.Snippets, "s.yaml")))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "no template or snippet defines") }, watchBound, 10*time.Millisecond,
		"the missing snippet was not logged: %s", logs.String())
	assert.Equal(t, "#cloud-config\nv: 3\ns: two\n", render())
}

func TestWatchFailsForMissingDirectory(t *testing.T) {
	cfg := writeTemplates(t, false, nil)
	r, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, os.RemoveAll(cfg.Snippets))
	ctx, cancel := context.WithTimeout(context.Background(), watchBound)
	defer cancel()
	err = r.Watch(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "snippets")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}
