package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"mayu/pkg/durable"
)

// Each registry lives in <dir>/<token>.json. One file per token keeps every
// write small (a registration rewrites one registry, not all of them) and
// lets an operator remove a stale token by deleting its file.

const (
	fileSuffix = ".json"
	tempPrefix = ".tmp-"
)

// saveRegistry writes r atomically and durably: a reader (or a crash) sees
// the old file or the new one, never a torn one.
func saveRegistry(dir string, r *registry) error {
	body, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("%w: encoding registry %s: %w", ErrStorage, r.Token, err)
	}
	path := filepath.Join(dir, r.Token+fileSuffix)
	if err := durable.WriteFile(path, append(body, '\n'), 0o600, tempPrefix+r.Token+"-"); err != nil {
		return fmt.Errorf("%w: writing %s: %w", ErrStorage, path, err)
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
