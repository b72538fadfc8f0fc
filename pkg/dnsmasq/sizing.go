package dnsmasq

import (
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
