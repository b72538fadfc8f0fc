// Package host defines the machine record that Mayu keeps for every server it
// provisions. Its JSON form is an interface: a cluster directory written by
// Mayu 0.11 must decode unchanged, and GET /admin/hosts returns exactly these
// objects, so field names, order and omitempty rules must not change.
package host

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"
)

// Host is one machine. Field order and tags match Mayu 0.11's conf.json.
type Host struct {
	Id                 int                    `json:",omitempty"`
	ProviderId         string                 `json:",omitempty"`
	Enabled            bool                   `json:",omitempty"`
	Name               string                 `json:",omitempty"`
	Serial             string                 `json:",omitempty"`
	MacAddresses       []string               `json:",omitempty"`
	InternalAddr       net.IP                 `json:",omitempty"`
	BondInterfaces     []string               `json:",omitempty"`
	Cabinet            uint                   `json:",omitempty"`
	MachineOnCabinet   uint                   `json:",omitempty"`
	IPMIAddr           net.IP                 `json:",omitempty"`
	Hostname           string                 `json:",omitempty"`
	MachineID          string                 `json:",omitempty"`
	ConnectedNIC       string                 ``
	FleetMetadata      FleetMeta              `json:",omitempty"`
	FleetDisableEngine bool                   `json:",omitempty"`
	KeepDiskData       bool                   `json:",omitempty"`
	LastBoot           time.Time              ``
	Profile            string                 `json:",omitempty"`
	EtcdClusterToken   string                 `json:",omitempty"`
	Overrides          map[string]interface{} `json:",omitempty"`
	State              State                  ``
	CoreOSVersion      string                 `json:",omitempty"`
	MayuVersion        string                 `json:",omitempty"`
	DockerVersion      string                 `json:",omitempty"`
	FleetVersion       string                 `json:",omitempty"`
	EtcdVersion        string                 `json:",omitempty"`
	RktVersion         string                 `json:",omitempty"`
	K8sVersion         string                 `json:",omitempty"`
	YochuVersion       string                 `json:",omitempty"`
	// Instance names the mayu instance that last wrote the record when
	// several share an etcd store (--instance-name); empty, and so absent
	// from the JSON, in a cluster directory of one mayu. Mayu 0.11's
	// readers (encoding/json) ignore it.
	Instance string `json:",omitempty"`
}

// Clone returns a deep copy, so a caller can mutate it without touching the
// store's copy.
func (h Host) Clone() Host {
	c := h
	c.MacAddresses = cloneStrings(h.MacAddresses)
	c.BondInterfaces = cloneStrings(h.BondInterfaces)
	c.FleetMetadata = FleetMeta(cloneStrings(h.FleetMetadata))
	if h.InternalAddr != nil {
		c.InternalAddr = append(net.IP(nil), h.InternalAddr...)
	}
	if h.IPMIAddr != nil {
		c.IPMIAddr = append(net.IP(nil), h.IPMIAddr...)
	}
	if h.Overrides != nil {
		c.Overrides = cloneMap(h.Overrides)
	}
	return c
}

// Marshal encodes the record the way conf.json holds it: two-space indent,
// trailing newline.
func (h Host) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("host: encode %q: %w", h.Serial, err)
	}
	return append(b, '\n'), nil
}

// Unmarshal decodes a conf.json.
func Unmarshal(b []byte) (Host, error) {
	var h Host
	if err := json.Unmarshal(b, &h); err != nil {
		return Host{}, fmt.Errorf("host: decode: %w", err)
	}
	return h, nil
}

// FleetMeta is the list of fleet metadata tags ("key=value"). It prints as a
// comma-joined list so templates can write {{.Host.FleetMetadata}}.
type FleetMeta []string

// String joins the tags with commas and no spaces.
func (m FleetMeta) String() string { return strings.Join(m, ",") }

// Has reports whether the tag is present, ignoring case.
func (m FleetMeta) Has(tag string) bool {
	for _, t := range m {
		if strings.EqualFold(strings.TrimSpace(t), strings.TrimSpace(tag)) {
			return true
		}
	}
	return false
}

// OverrideString returns Overrides[key] as a string, and whether it was set to
// a non-empty value. Overrides come from JSON, so values of any type are
// possible; a non-string is formatted rather than asserted.
func (h Host) OverrideString(key string) (string, bool) {
	v, ok := h.Overrides[key]
	if !ok || v == nil {
		return "", false
	}
	s, isStr := v.(string)
	if !isStr {
		s = fmt.Sprint(v)
	}
	return s, s != ""
}

func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string(nil), s...)
}

func cloneMap(m map[string]interface{}) map[string]interface{} {
	c := make(map[string]interface{}, len(m))
	for k, v := range m {
		c[k] = cloneValue(v)
	}
	return c
}

func cloneValue(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		return cloneMap(t)
	case []interface{}:
		c := make([]interface{}, len(t))
		for i := range t {
			c[i] = cloneValue(t[i])
		}
		return c
	default:
		return v
	}
}
