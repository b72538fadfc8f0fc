package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Each registry lives in <dir>/<token>.json. One file per token keeps every
// write small (a registration rewrites one registry, not all of them) and
// lets an operator remove a stale token by deleting its file.

const (
	fileSuffix = ".json"
	tempPrefix = ".tmp-"
)

// saveRegistry writes r atomically: a reader (or a crash) sees the old file
// or the new one, never a torn one.
func saveRegistry(dir string, r *registry) (err error) {
	body, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("%w: encoding registry %s: %w", ErrStorage, r.Token, err)
	}
	f, err := os.CreateTemp(dir, tempPrefix+r.Token+"-*")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(append(body, '\n')); err != nil {
		return fmt.Errorf("%w: writing %s: %w", ErrStorage, f.Name(), err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("%w: syncing %s: %w", ErrStorage, f.Name(), err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("%w: closing %s: %w", ErrStorage, f.Name(), err)
	}
	if err = os.Rename(f.Name(), filepath.Join(dir, r.Token+fileSuffix)); err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	// The rename is durable only once the directory entry is.
	if err = syncDir(dir); err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// loadRegistries reads every registry in dir, creating dir if needed, and
// removes temp files a crash left behind. A file that does not parse stops
// the load: serving a registry with members missing would let a later
// member join the wrong cluster, so the operator must look at it.
func loadRegistries(dir string) (map[string]*registry, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	regs := map[string]*registry{}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, tempPrefix):
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("%w: removing stale %s: %w", ErrStorage, name, err)
			}
			continue
		case e.IsDir() || !strings.HasSuffix(name, fileSuffix):
			continue
		}
		r, err := readRegistry(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if r.Token+fileSuffix != name {
			return nil, fmt.Errorf("%w: %s holds token %q", ErrStorage, filepath.Join(dir, name), r.Token)
		}
		regs[r.Token] = r
	}
	return regs, nil
}

func readRegistry(path string) (*registry, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	var r registry
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrStorage, path, err)
	}
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrStorage, path, err)
	}
	return &r, nil
}
