package render

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// settle is how long Watch waits after the last change before re-parsing:
// editors and `cp -r` produce bursts of events, and parsing half a burst
// would log spurious failures.
const settle = 150 * time.Millisecond

// Watch re-parses the templates whenever one of their files changes, until
// ctx is done. A set that fails to parse (or, with Config.Check, to render)
// is logged with the reason and dropped; renders go on with the last good
// set. Directories are watched rather than files because editors replace
// files by renaming, which ends a watch on the file itself.
func (r *Renderer) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("render: watch templates: %w", err)
	}
	defer w.Close()

	files := map[string]bool{}
	dirs := map[string]bool{}
	for _, p := range []string{r.cfg.FirstStageScript, r.cfg.FinalPath()} {
		if p == "" {
			continue
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return fmt.Errorf("render: watch %s: %w", p, err)
		}
		files[abs] = true
		dirs[filepath.Dir(abs)] = true
	}
	snippetDir := ""
	if r.cfg.Snippets != "" {
		abs, err := filepath.Abs(r.cfg.Snippets)
		if err != nil {
			return fmt.Errorf("render: watch %s: %w", r.cfg.Snippets, err)
		}
		snippetDir = abs
		dirs[abs] = true
	}
	for d := range dirs {
		if err := w.Add(d); err != nil {
			return fmt.Errorf("render: watch %s: %w", d, err)
		}
	}
	if r.watching != nil {
		r.watching()
	}
	relevant := func(ev fsnotify.Event) bool {
		if ev.Op == fsnotify.Chmod {
			return false
		}
		name, err := filepath.Abs(ev.Name)
		if err != nil {
			return false
		}
		return files[name] || (snippetDir != "" && filepath.Dir(name) == snippetDir)
	}

	timer := time.NewTimer(settle)
	if !timer.Stop() {
		<-timer.C
	}
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("render: template watcher closed")
			}
			if relevant(ev) {
				r.log.Debug("template file changed", "file", ev.Name, "op", ev.Op.String())
				timer.Reset(settle)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("render: template watcher closed")
			}
			// An overflow loses events, so re-parse to be sure.
			r.log.Warn("template watcher error", "err", err)
			timer.Reset(settle)
		case <-timer.C:
			r.Reload()
		}
	}
}

// Reload re-parses the templates now (and renders them for Config.Check
// when set), keeping the current set if the new one fails. It returns the
// error, which is also logged.
func (r *Renderer) Reload() error {
	defer r.reloads.Add(1)
	s, err := r.loadChecked()
	if err != nil {
		r.log.Error("templates changed but do not parse or render; still using the previous ones", "err", err)
		return err
	}
	r.set.Store(s)
	r.log.Info("templates reloaded", "first_stage", r.cfg.FirstStageScript, "final", r.cfg.FinalPath(), "snippets", r.cfg.Snippets)
	return nil
}
