package dnsmasq

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"time"

	"mayu/pkg/host"
)

// hostSet is the per-host part of dnsmasq's configuration: what Sync
// computes from the host records.
type hostSet struct {
	Ignored []string
	Static  []StaticHost
	// SecureBoot are the MACs DHCP answers with the Secure Boot chain
	// (Config.SecureBoot), none of them ignored.
	SecureBoot []string
}

// SecureBootTag is the dnsmasq tag the hosts file sets for the MACs of
// Config.SecureBoot; the shipped template gives x86-64 UEFI clients with
// it the shim.
const SecureBootTag = "secureboot"

// computeHostSet derives ignored MACs (every MAC of a host that DHCP
// ignores by the rule ignores, Config.Ignores) and static hosts (those
// MACs with the InternalAddr their host configures on itself). Machines
// still being provisioned are deliberately not static: a machine learns its
// MACs' owner only when it asks for its final config, mid-install, and a
// dhcp-host line appearing then would make dnsmasq NAK the renewal of its
// bootstrap lease and move its address under the running installer.
// Invalid MACs are returned separately so the caller can log them; they
// never reach dnsmasq.
func computeHostSet(hosts []host.Host, ignores, secureBoot func(host.Host) bool) (hostSet, []string) {
	var set hostSet
	var bad []string
	ignored := map[string]bool{}
	static := map[string]string{}
	shim := map[string]bool{}
	for _, h := range hosts {
		ignore := ignores(h)
		chain := !ignore && secureBoot != nil && secureBoot(h)
		ip := h.InternalAddr.To4()
		for _, m := range h.MacAddresses {
			mac, err := host.NormalizeMAC(m)
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: %q", h.Serial, m))
				continue
			}
			if chain {
				shim[mac] = true
			}
			if !ignore {
				continue
			}
			ignored[mac] = true
			if ip != nil {
				static[mac] = ip.String()
			}
		}
	}
	for mac := range ignored {
		set.Ignored = append(set.Ignored, mac)
	}
	sort.Strings(set.Ignored)
	for mac := range shim {
		if !ignored[mac] { // a MAC two hosts claim: ignoring wins
			set.SecureBoot = append(set.SecureBoot, mac)
		}
	}
	sort.Strings(set.SecureBoot)
	for mac, ip := range static {
		set.Static = append(set.Static, StaticHost{IP: ip, MacAddr: mac})
	}
	sort.Slice(set.Static, func(i, j int) bool { return set.Static[i].MacAddr < set.Static[j].MacAddr })
	return set, bad
}

func (a hostSet) equal(b hostSet) bool {
	if len(a.Ignored) != len(b.Ignored) || len(a.Static) != len(b.Static) || len(a.SecureBoot) != len(b.SecureBoot) {
		return false
	}
	for i := range a.SecureBoot {
		if a.SecureBoot[i] != b.SecureBoot[i] {
			return false
		}
	}
	for i := range a.Ignored {
		if a.Ignored[i] != b.Ignored[i] {
			return false
		}
	}
	for i := range a.Static {
		if a.Static[i] != b.Static[i] {
			return false
		}
	}
	return true
}

// renderHostsFile writes the --dhcp-hostsfile dnsmasq re-reads on SIGHUP:
// "<mac>,ignore" for every ignored MAC, so an installed machine is not
// answered at all and boots from its disk. Static hosts need no line: they
// are ignored hosts. "<mac>,set:secureboot" tags a machine whose profile
// asks for the Secure Boot chain (dnsmasq manual, --dhcp-host set:<tag>).
func renderHostsFile(set hostSet) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by mayu from the host records; rewritten on every change. Do not edit.\n")
	for _, mac := range set.Ignored {
		fmt.Fprintf(&b, "%s,ignore\n", mac)
	}
	for _, mac := range set.SecureBoot {
		fmt.Fprintf(&b, "%s,set:%s\n", mac, SecureBootTag)
	}
	return b.Bytes()
}

// Sync takes the current host records and applies what dnsmasq must know
// about them: MACs of installed and running hosts are ignored, hosts with
// an InternalAddr get it. It only records the wish and returns; the Run
// loop rewrites the hosts file and sends SIGHUP, so a burst of calls costs
// one reload. If the template itself depends on host state (it ranges over
// .Network.IgnoredHosts or .StaticHosts, as Mayu 0.11 templates do), the
// configuration is re-rendered and dnsmasq restarted instead.
func (s *Supervisor) Sync(hosts []host.Host) {
	set, bad := computeHostSet(hosts, s.cfg.Ignores, s.cfg.SecureBoot)
	s.mu.Lock()
	for _, b := range bad {
		// Sync runs on every change of any host: say it once per MAC.
		if !s.warnedMACs[b] {
			s.warnedMACs[b] = true
			s.log.Warn("invalid MAC address of host left out of dnsmasq's configuration", "mac", b)
		}
	}
	changed := !set.equal(s.desired)
	if changed {
		s.desired = set
		if s.dirtySince.IsZero() {
			s.dirtySince = time.Now()
		}
	}
	s.mu.Unlock()
	if changed {
		s.poke()
	}
}

// applyHosts rewrites the hosts file if the host set changed and has the
// child re-read it.
func (s *Supervisor) applyHosts(ctx context.Context, ch *child) error {
	s.mu.Lock()
	set, since := s.desired, s.dirtySince
	s.dirtySince = time.Time{}
	s.mu.Unlock()
	hosts := renderHostsFile(set)
	if bytes.Equal(hosts, s.appliedHosts) {
		return nil
	}
	if err := writeFileAtomic(s.hostsPath, hosts); err != nil {
		return err
	}
	s.appliedHosts = hosts
	if err := s.hup(ctx, ch); err != nil {
		return err
	}
	s.mu.Lock()
	s.hups++
	s.mu.Unlock()
	attrs := []any{"pid", ch.pid, "ignored_macs", len(set.Ignored), "static_hosts", len(set.Static)}
	if !since.IsZero() {
		attrs = append(attrs, "latency", time.Since(since).Round(time.Microsecond))
	}
	s.log.Info("hosts file rewritten; dnsmasq told to re-read it", attrs...)
	return nil
}
