package provision

import (
	"sort"

	"mayu/pkg/config"
	"mayu/pkg/host"
)

// Counts are the life-cycle events since the Provisioner was made (the
// counters of GET /metrics). Each counts requests that changed a record
// and were made durable.
type Counts struct {
	Registrations   uint64 // new records: first sight of a serial
	FinalConfigs    uint64 // final configs answered (facts recorded, state installing)
	Installs        uint64 // machines marked installed (set_installed)
	BootCompletions uint64 // boot_complete reports (state running)
}

// Counts returns the life-cycle counters. It takes no lock.
func (p *Provisioner) Counts() Counts {
	return Counts{
		Registrations:   p.counts.registrations.Load(),
		FinalConfigs:    p.counts.finalConfigs.Load(),
		Installs:        p.counts.installs.Load(),
		BootCompletions: p.counts.bootCompletions.Load(),
	}
}

// Pool is what is left to hand out to new machines, and how the machines
// are spread over states and profiles, as GET /admin/pool answers it.
type Pool struct {
	// IPRange is network.ip_range of config.yaml.
	IPRange Range `json:"ip_range"`
	// Addresses is how many addresses of ip_range may be handed out at all
	// (not in bootstrap_range, not reserved); Used how many of those a
	// record holds; Free the rest.
	Addresses uint64 `json:"addresses"`
	Used      uint64 `json:"used"`
	Free      uint64 `json:"free"`
	// Profiles are config.yaml's profiles in config order, then the
	// default profile and any profile only records name.
	Profiles []ProfileSlots `json:"profiles"`
	// Machines counts the records by state and profile: every state of
	// host.States for every profile of Profiles, zeros included.
	Machines []MachineCount `json:"machines"`
	// Total is the number of records.
	Total int `json:"total"`
}

// Range is an address range, first and last address included.
type Range struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// ProfileSlots is one profile's share of new machines.
type ProfileSlots struct {
	Name string `json:"name"`
	// Limited: the profile has a quantity (a configured profile other
	// than default); Quantity and Free are meaningful only then. The
	// default profile takes every machine beyond the quantities.
	Limited  bool `json:"limited"`
	Quantity int  `json:"quantity"`
	Used     int  `json:"used"`
	Free     int  `json:"free"`
}

// MachineCount is how many records are in State with Profile.
type MachineCount struct {
	State   host.State `json:"state"`
	Profile string     `json:"profile"`
	Count   int        `json:"count"`
}

// Pool computes the pool from the records as they are now: one pass over
// the host table.
func (p *Provisioner) Pool() Pool {
	hosts := p.store.List()
	type key struct {
		state   host.State
		profile string
	}
	by := map[key]int{}
	perProfile := map[string]int{}
	var used uint64
	for _, h := range hosts {
		by[key{h.State, h.Profile}]++
		perProfile[h.Profile]++
		if h.InternalAddr != nil && p.cfg.Allocatable(h.InternalAddr) {
			used++
		}
	}
	out := Pool{IPRange: Range{p.cfg.Network.IPRange.Start, p.cfg.Network.IPRange.End}, Addresses: p.cfg.AllocatableCount(), Used: used, Total: len(hosts)}
	if out.Addresses >= used {
		out.Free = out.Addresses - used
	}
	seen := map[string]bool{}
	add := func(name string, limited bool, quantity int) {
		if seen[name] {
			return
		}
		seen[name] = true
		s := ProfileSlots{Name: name, Limited: limited, Quantity: quantity, Used: perProfile[name]}
		if limited {
			s.Free = max(quantity-s.Used, 0)
		}
		out.Profiles = append(out.Profiles, s)
	}
	for _, prof := range p.cfg.Profiles {
		add(prof.Name, prof.Name != config.DefaultProfileName, prof.Quantity)
	}
	add(config.DefaultProfileName, false, 0)
	var extra []string
	for name := range perProfile {
		if !seen[name] {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	for _, name := range extra {
		add(name, false, 0)
	}
	for _, prof := range out.Profiles {
		for _, st := range host.States {
			out.Machines = append(out.Machines, MachineCount{State: st, Profile: prof.Name, Count: by[key{st, prof.Name}]})
			delete(by, key{st, prof.Name})
		}
	}
	// A state no rule knows (a hand edit) is counted too.
	for k, n := range by {
		out.Machines = append(out.Machines, MachineCount{State: k.state, Profile: k.profile, Count: n})
	}
	sort.SliceStable(out.Machines[len(out.Machines)-len(by):], func(i, j int) bool {
		a, b := out.Machines[len(out.Machines)-len(by)+i], out.Machines[len(out.Machines)-len(by)+j]
		return a.State < b.State || a.State == b.State && a.Profile < b.Profile
	})
	return out
}
