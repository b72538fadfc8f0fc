package machineauth

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"mayu/pkg/durable"
	"mayu/pkg/host"
)

// binding is what mayu learnt of the machine that first asked for a serial:
// the credential it was given (its SHA-256: the credential itself is never
// stored), the MAC of the DHCP lease it asked from and its address. It is
// kept outside conf.json, whose fields are Mayu 0.11's, one file per serial
// in the bindings directory (not committed: it holds secrets' hashes, and
// changes at every install).
type binding struct {
	Serial      string
	TokenSHA256 string    `json:",omitempty"`
	MAC         string    `json:",omitempty"`
	Addr        string    `json:",omitempty"`
	Issued      time.Time `json:",omitempty"`
}

func (b binding) addr() net.IP { return net.ParseIP(b.Addr) }

// tempPrefix names the bindings' temporary files; they are removed at load.
const tempPrefix = ".tmp-"

// loadBindings reads every <serial>.json of dir (created 0700 if missing).
func loadBindings(dir string) (map[string]binding, error) {
	out := map[string]binding{}
	if dir == "" {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("machineauth: %w", err)
	}
	if _, err := durable.RemoveTemps(dir, tempPrefix); err != nil {
		return nil, fmt.Errorf("machineauth: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("machineauth: %w", err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("machineauth: %w", err)
		}
		var b binding
		if err := json.Unmarshal(raw, &b); err != nil || b.Serial != name {
			return nil, fmt.Errorf("machineauth: %s is not the binding of serial %q (remove it to let that machine bind anew)",
				filepath.Join(dir, e.Name()), name)
		}
		out[name] = b
	}
	return out, nil
}

// saveBinding writes b durably as dir/<serial>.json, readable by mayu's
// user only.
func saveBinding(dir string, b binding) error {
	if dir == "" {
		return nil
	}
	if _, err := host.NormalizeSerial(b.Serial); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	if err := durable.WriteFile(filepath.Join(dir, b.Serial+".json"), append(raw, '\n'), 0o600, tempPrefix); err != nil {
		return fmt.Errorf("machineauth: storing the binding of %s: %w", b.Serial, err)
	}
	return nil
}
