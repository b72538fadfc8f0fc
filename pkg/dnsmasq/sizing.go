package dnsmasq

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"mayu/pkg/config"
)

// Limits are the dnsmasq capacities mayu derives from config.yaml's network
// section. They depend on the ranges only, never on host state, so the
// shipped template's output (and with it dnsmasq's PID) stays the same while
// hosts come and go.
//
// dnsmasq's defaults (dnsmasq(8): dhcp-lease-max 1000, tftp-max 50) cap a
// fleet silently: past 1,000 leases a new machine gets no offer, past 50
// concurrent transfers a PXE ROM's read request is refused and it retries.
type Limits struct {
	// LeaseMax is dnsmasq's --dhcp-lease-max: the addresses of
	// bootstrap_range (leased while machines install) plus those of
	// ip_range (a template that hands out static addresses with dhcp-host
	// lines leases them too), plus a quarter for leases that outlive a
	// range change in the lease file; at least dnsmasq's default of 1000,
	// at most MaxLeaseMax.
	LeaseMax int
	// TFTPMax is dnsmasq's --tftp-max: one concurrent transfer per
	// bootstrap address, so a whole bootstrap range can PXE-boot at once;
	// at least dnsmasq's default of 50, at most MaxTFTPMax. dnsmasq needs
	// one file descriptor per transfer (all fetch the same boot file); it
	// raises its own limit and logs a lower tftp-max if the hard limit is
	// too small.
	TFTPMax int
}

// Bounds of the limits. MaxLeaseMax is a /14's worth of leases (dnsmasq keeps
// each in memory, a few hundred bytes); MaxTFTPMax keeps the descriptors
// dnsmasq asks for well below common hard limits (65,536 and up).
const (
	DefaultLeaseMax = 1000
	DefaultTFTPMax  = 50
	MaxLeaseMax     = 1 << 18
	MaxTFTPMax      = 10000
)

// Size derives dnsmasq's limits from the network section. Ranges that do not
// parse (pxe off without a bootstrap range) count as empty.
func Size(n config.Network) Limits {
	boot := rangeSize(n.BootstrapRange)
	static := rangeSize(n.IPRange)
	leases := boot + static
	leases += leases / 4
	return Limits{
		LeaseMax: int(clamp(leases, DefaultLeaseMax, MaxLeaseMax)),
		TFTPMax:  int(clamp(boot, DefaultTFTPMax, MaxTFTPMax)),
	}
}

// rangeSize is the number of addresses of an inclusive range; 0 when it is
// unset, does not parse or is reversed.
func rangeSize(r config.IPRange) uint64 {
	lo, hi := r.Bounds()
	if lo == nil || hi == nil {
		return 0
	}
	a, b := config.IPToUint32(lo), config.IPToUint32(hi)
	if b < a {
		return 0
	}
	return uint64(b) - uint64(a) + 1
}

func clamp(v, lo, hi uint64) uint64 {
	return min(max(v, lo), hi)
}

// neighbourLimitPath holds Linux's hard limit of the IPv4 neighbour (ARP)
// table (ip-sysctl.rst: gc_thresh3, 1024 by default). It is one limit for
// the whole host and only the initial network namespace has the file: in
// a container mayu cannot read it and does not warn.
var neighbourLimitPath = "/proc/sys/net/ipv4/neigh/default/gc_thresh3"

// NeighbourWarning returns a warning when the ranges hold more machines
// than the kernel's neighbour table takes: past gc_thresh3 entries the
// kernel logs "neighbor table overflow" and drops packets to machines it
// cannot add, DHCP and HTTP alike (a 2,000-machine storm stalled for 16 s
// at the 1,024th). "" when the ranges fit or the limit cannot be read.
func NeighbourWarning(n config.Network) string {
	b, err := os.ReadFile(neighbourLimitPath)
	if err != nil {
		return ""
	}
	limit, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return ""
	}
	machines := rangeSize(n.BootstrapRange) + rangeSize(n.IPRange)
	if machines <= limit {
		return ""
	}
	want := min(2*machines, 1<<20)
	return fmt.Sprintf("network.bootstrap_range and network.ip_range hold %d machines but this host's neighbour (ARP) table takes %d entries (net.ipv4.neigh.default.gc_thresh3): past that many machines at once the kernel drops their packets (\"neighbor table overflow\"); raise it, e.g. sysctl -w net.ipv4.neigh.default.gc_thresh3=%d net.ipv4.neigh.default.gc_thresh2=%d net.ipv4.neigh.default.gc_thresh1=%d",
		machines, limit, want, want/2, want/4)
}

// warnNeighbours logs NeighbourWarning once per start.
func (s *Supervisor) warnNeighbours() {
	s.mu.Lock()
	n := s.network
	s.mu.Unlock()
	if w := NeighbourWarning(n); w != "" {
		s.log.Warn("network larger than the kernel's neighbour table", "warning", w)
	}
}
