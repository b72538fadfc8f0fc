package config

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
)

// addrPlan says which addresses of ip_range may be handed out as static
// addresses. Excluded are the bootstrap range (dnsmasq leases it
// dynamically; Mayu 0.11's sample configs overlap the two), the network and
// broadcast address of each subnet_size subnet (a host given one has no
// working network), 0.0.0.0 and 255.255.255.255, and the addresses of
// mayu, the router, the gateway and the DNS and NTP servers.
type addrPlan struct {
	ips      span
	boot     span
	hasBoot  bool
	prefix   int
	hostMask uint32            // host bits of a subnet; 0 for /31 and /32, which have no network or broadcast address
	reserved map[uint32]string // single addresses and whose they are
}

// Allocatable reports whether ip may be handed out as a machine's static
// address: inside network.ip_range and not excluded by the address plan
// (bootstrap_range, the network and broadcast address of each subnet of
// subnet_size, 0.0.0.0, bind_addr, router, subnet_gateway, the DNS and NTP
// servers). The allocator asks it for every candidate. c must have been
// validated.
func (c *Config) Allocatable(ip net.IP) bool {
	v4 := ip.To4()
	if v4 == nil {
		return false
	}
	p := c.plan
	if p == nil {
		// A Config not made by Parse: plan from its fields without caching,
		// so concurrent callers never write to c.
		lo, hi := c.Network.IPRange.Bounds()
		if lo == nil || hi == nil {
			return false
		}
		boot, hasBoot := bootSpan(c.Network.BootstrapRange)
		p = c.newPlan(span{IPToUint32(lo), IPToUint32(hi)}, boot, hasBoot)
	}
	return p.allocatable(IPToUint32(v4))
}

func bootSpan(r IPRange) (span, bool) {
	lo, hi := r.Bounds()
	if lo == nil || hi == nil {
		return span{}, false
	}
	return span{IPToUint32(lo), IPToUint32(hi)}, true
}

// newPlan builds the plan of a validated ip_range and bootstrap_range; the
// other addresses are taken where they parse.
func (c *Config) newPlan(ips, boot span, hasBoot bool) *addrPlan {
	n := c.Network
	p := &addrPlan{ips: ips, boot: boot, hasBoot: hasBoot, reserved: map[uint32]string{
		0:         "0.0.0.0",
		1<<32 - 1: "the limited broadcast address",
	}}
	p.prefix, _ = prefixLen(n.SubnetSize)
	if p.prefix <= 30 {
		p.hostMask = ^uint32(0) >> p.prefix
	}
	reserve := func(s, whose string) {
		if a, err := netip.ParseAddr(s); err == nil && a.Unmap().Is4() {
			b := a.Unmap().As4()
			n := IPToUint32(b[:])
			if prev := p.reserved[n]; prev != "" && !strings.Contains(prev, whose) {
				whose = prev + ", " + whose
			}
			p.reserved[n] = whose
		}
	}
	reserve(n.BindAddr, "mayu's bind_addr")
	reserve(n.Router, "router")
	reserve(n.SubnetGateway, "subnet_gateway")
	for _, d := range n.DNS {
		reserve(d, "a DNS server")
	}
	for _, s := range n.NTP {
		reserve(s, "an NTP server")
	}
	return p
}

func (p *addrPlan) inBoot(n uint32) bool { return p.hasBoot && n >= p.boot.lo && n <= p.boot.hi }

func (p *addrPlan) allocatable(n uint32) bool {
	if n < p.ips.lo || n > p.ips.hi || p.inBoot(n) {
		return false
	}
	if h := n & p.hostMask; p.hostMask != 0 && (h == 0 || h == p.hostMask) {
		return false
	}
	_, r := p.reserved[n]
	return !r
}

// first returns the lowest allocatable address. Runs of excluded addresses
// outside the bootstrap range are short (a broadcast and the next network
// address, a few servers), and the bootstrap range is stepped over whole.
func (p *addrPlan) first() (uint32, bool) {
	for n := uint64(p.ips.lo); n <= uint64(p.ips.hi); n++ {
		if p.inBoot(uint32(n)) {
			n = uint64(p.boot.hi)
			continue
		}
		if p.allocatable(uint32(n)) {
			return uint32(n), true
		}
	}
	return 0, false
}

// maxListed bounds the excluded addresses a warning names one by one.
const maxListed = 12

// check warns about every address of ip_range the plan excludes, and
// refuses a plan that leaves nothing to hand out.
func (p *addrPlan) check(k *checker, n Network) {
	r := n.IPRange
	if p.hasBoot && p.ips.overlaps(p.boot) {
		lo, hi := max(p.ips.lo, p.boot.lo), min(p.ips.hi, p.boot.hi)
		k.warn("network.ip_range", "network.ip_range %s-%s overlaps network.bootstrap_range %s-%s: its %d addresses %s-%s are leased by DHCP during installation and never handed out as static addresses",
			r.Start, r.End, n.BootstrapRange.Start, n.BootstrapRange.End, uint64(hi)-uint64(lo)+1, Uint32ToIP(lo), Uint32ToIP(hi))
	}
	if excluded, more := p.excluded(); len(excluded) > 0 {
		k.warn("network.ip_range", "network.ip_range %s-%s contains addresses that are never handed out: %s%s",
			r.Start, r.End, strings.Join(excluded, ", "), more)
	}
	if _, ok := p.first(); !ok {
		k.add("network.ip_range", "network.ip_range %s-%s has no address to hand out: every one is in bootstrap_range or reserved", r.Start, r.End)
	}
}

// excluded names the addresses of ip_range, outside the bootstrap range,
// that the plan excludes, in address order, at most maxListed of them.
func (p *addrPlan) excluded() ([]string, string) {
	type named struct {
		n    uint32
		name string
	}
	var found []named
	for a, whose := range p.reserved {
		if a >= p.ips.lo && a <= p.ips.hi && !p.inBoot(a) {
			found = append(found, named{a, fmt.Sprintf("%s (%s)", Uint32ToIP(a), whose)})
		}
	}
	if p.hostMask != 0 {
		size := uint64(p.hostMask) + 1
		// Subnets are visited in order and the listing stops once it is
		// long enough, so a huge range costs no more than a small one.
		for base := uint64(p.ips.lo) &^ uint64(p.hostMask); base <= uint64(p.ips.hi) && len(found) <= 2*maxListed; base += size {
			if p.inBoot(uint32(base)) && p.inBoot(uint32(base+size-1)) {
				// Step to the last subnet wholly inside the bootstrap range.
				base = (uint64(p.boot.hi)+1)&^uint64(p.hostMask) - size
				continue
			}
			cidr := fmt.Sprintf("%s/%d", Uint32ToIP(uint32(base)), p.prefix)
			for _, a := range []struct {
				n    uint64
				role string
			}{{base, "network address of "}, {base + size - 1, "broadcast address of "}} {
				if _, dup := p.reserved[uint32(a.n)]; dup || a.n < uint64(p.ips.lo) || a.n > uint64(p.ips.hi) || p.inBoot(uint32(a.n)) {
					continue
				}
				found = append(found, named{uint32(a.n), fmt.Sprintf("%s (%s%s)", Uint32ToIP(uint32(a.n)), a.role, cidr)})
			}
		}
	}
	sort.Slice(found, func(i, j int) bool { return found[i].n < found[j].n })
	more := ""
	if len(found) > maxListed {
		found, more = found[:maxListed], " and more"
	}
	out := make([]string, len(found))
	for i, f := range found {
		out[i] = f.name
	}
	return out, more
}

// AllocatableCount is how many addresses of network.ip_range may be handed
// out as static addresses (those Allocatable accepts), counted from the
// plan without walking the range: the range's size less its overlap with
// bootstrap_range, less the network and broadcast addresses of each
// subnet_size subnet outside that overlap, less the reserved addresses
// (bind_addr, router, ...) left after those. c must have been validated.
func (c *Config) AllocatableCount() uint64 {
	p := c.plan
	if p == nil {
		lo, hi := c.Network.IPRange.Bounds()
		if lo == nil || hi == nil {
			return 0
		}
		boot, hasBoot := bootSpan(c.Network.BootstrapRange)
		p = c.newPlan(span{IPToUint32(lo), IPToUint32(hi)}, boot, hasBoot)
	}
	return p.count()
}

func (p *addrPlan) count() uint64 {
	lo, hi := uint64(p.ips.lo), uint64(p.ips.hi)
	if hi < lo {
		return 0
	}
	n := hi - lo + 1
	// The part of ip_range inside bootstrap_range, if any.
	var bLo, bHi uint64
	overlap := p.hasBoot && p.ips.overlaps(p.boot)
	if overlap {
		bLo, bHi = max(lo, uint64(p.boot.lo)), min(hi, uint64(p.boot.hi))
		n -= bHi - bLo + 1
	}
	if p.hostMask != 0 {
		size := uint64(p.hostMask) + 1
		for _, r := range []uint64{0, size - 1} { // network, broadcast
			n -= countMod(lo, hi, size, r)
			if overlap {
				n += countMod(bLo, bHi, size, r)
			}
		}
	}
	for a := range p.reserved {
		if h := a & p.hostMask; p.hostMask != 0 && (h == 0 || h == p.hostMask) {
			continue // counted as a network or broadcast address already
		}
		if a >= p.ips.lo && a <= p.ips.hi && !p.inBoot(a) {
			n--
		}
	}
	return n
}

// countMod is how many numbers of [lo, hi] are r modulo size (r < size).
func countMod(lo, hi, size, r uint64) uint64 {
	upTo := func(x uint64) uint64 { // how many of [0, x]
		if x < r {
			return 0
		}
		return (x-r)/size + 1
	}
	if lo == 0 {
		return upTo(hi)
	}
	return upTo(hi) - upTo(lo-1)
}
