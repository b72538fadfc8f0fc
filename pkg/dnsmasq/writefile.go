package dnsmasq

import (
	"fmt"
	"path/filepath"

	"mayu/pkg/durable"
)

// writeFileAtomic replaces path with data so that a reader (dnsmasq on
// SIGHUP) sees either the old or the new file, never a torn one.
func writeFileAtomic(path string, data []byte) error {
	if err := durable.WriteFile(path, data, 0o644, "."+filepath.Base(path)+"."); err != nil {
		return fmt.Errorf("dnsmasq: write %s: %w", path, err)
	}
	return nil
}
