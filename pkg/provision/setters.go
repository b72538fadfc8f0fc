package provision

import (
	"fmt"
	"net"
	"sort"
	"strings"

	"mayu/pkg/host"
)

// SetMetadata replaces the fleet metadata tags.
func (p *Provisioner) SetMetadata(serial string, tags []string) (host.Host, error) {
	clean := make([]string, 0, len(tags))
	for _, t := range tags {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if err := checkText("metadata", t); err != nil {
			return host.Host{}, err
		}
		if !strings.Contains(t, "=") {
			return host.Host{}, fmt.Errorf("%w: metadata %q is not key=value", ErrInvalid, t)
		}
		clean = append(clean, t)
	}
	return p.set(serial, MsgMetadata, func(h *host.Host) { h.FleetMetadata = host.FleetMeta(clean) })
}

// SetProviderID sets the provider's identifier of the machine.
func (p *Provisioner) SetProviderID(serial, id string) (host.Host, error) {
	id = strings.TrimSpace(id)
	if err := checkText("provider id", id); err != nil {
		return host.Host{}, err
	}
	return p.set(serial, MsgProviderID, func(h *host.Host) { h.ProviderId = id })
}

// SetIPMIAddr sets the IPMI address.
func (p *Provisioner) SetIPMIAddr(serial, addr string) (host.Host, error) {
	ip := net.ParseIP(strings.TrimSpace(addr))
	if ip == nil {
		return host.Host{}, fmt.Errorf("%w: IPMI address %q does not parse", ErrInvalid, addr)
	}
	return p.set(serial, MsgIPMIAddr, func(h *host.Host) { h.IPMIAddr = ip })
}

// SetCabinet sets the cabinet (and, when given, the position in it).
func (p *Provisioner) SetCabinet(serial string, cabinet uint, machineOnCabinet *uint) (host.Host, error) {
	return p.set(serial, MsgCabinet, func(h *host.Host) {
		h.Cabinet = cabinet
		if machineOnCabinet != nil {
			h.MachineOnCabinet = *machineOnCabinet
		}
	})
}

// SetEtcdClusterToken sets the machine's etcd discovery token.
func (p *Provisioner) SetEtcdClusterToken(serial, token string) (host.Host, error) {
	token = strings.TrimSpace(token)
	for _, c := range token {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return host.Host{}, fmt.Errorf("%w: etcd token %q has character %q", ErrInvalid, token, c)
		}
	}
	return p.set(serial, MsgEtcdToken, func(h *host.Host) { h.EtcdClusterToken = token })
}

// Override merges values into the machine's overrides; they take precedence
// over templates_env when its final config is rendered.
func (p *Provisioner) Override(serial string, overrides map[string]interface{}) (host.Host, error) {
	if len(overrides) == 0 {
		return host.Host{}, fmt.Errorf("%w: no overrides given", ErrInvalid)
	}
	keys := make([]string, 0, len(overrides))
	for k := range overrides {
		if strings.TrimSpace(k) == "" {
			return host.Host{}, fmt.Errorf("%w: empty override key", ErrInvalid)
		}
		// %q: the key is the caller's text and the error is shown to the
		// operator; it must not carry the very characters it refuses.
		if err := checkText(fmt.Sprintf("override key %q", k), k); err != nil {
			return host.Host{}, err
		}
		if err := checkValue(fmt.Sprintf("override %q", k), overrides[k]); err != nil {
			return host.Host{}, err
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return p.set(serial, MsgOverridesPrefix+strings.Join(keys, ", "), func(h *host.Host) {
		if h.Overrides == nil {
			h.Overrides = map[string]interface{}{}
		}
		for k, v := range overrides {
			h.Overrides[k] = v
		}
	})
}
