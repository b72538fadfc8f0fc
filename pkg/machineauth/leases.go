package machineauth

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"mayu/pkg/host"
)

// LeaseFile reads a dnsmasq lease file (--dhcp-leasefile): one line per
// lease, "<expiry> <mac> <ip> <hostname> <client-id>". It maps an IPv4
// address to the MAC that holds its lease and back. The file is read again
// whenever its size or modification time changed, so a lookup always sees
// the leases dnsmasq last wrote. Lines it cannot read (IPv6 leases, the
// "duid" line) are skipped. Safe for concurrent use.
type LeaseFile struct {
	path string
	log  *slog.Logger

	mu    sync.Mutex
	size  int64
	mtime time.Time
	seen  bool
	byIP  map[string]string // IPv4 address -> normalized MAC
	byMAC map[string]string // normalized MAC -> IPv4 address
}

// NewLeaseFile returns a reader of the lease file at path. The file need
// not exist yet (dnsmasq creates it): until it does, nobody holds a lease.
func NewLeaseFile(path string, log *slog.Logger) *LeaseFile {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &LeaseFile{path: path, log: log}
}

// Path is the file read.
func (l *LeaseFile) Path() string { return l.path }

// Lookup returns the MAC (normalized) that holds the lease of ip.
func (l *LeaseFile) Lookup(ip net.IP) (string, bool) {
	v4 := ip.To4()
	if v4 == nil {
		return "", false
	}
	key := v4.String()
	for try := 0; ; try++ {
		l.mu.Lock()
		l.refreshLocked()
		mac, ok := l.byIP[key]
		recent := time.Since(l.mtime) < missWindow
		l.mu.Unlock()
		// dnsmasq answers a REQUEST before it rewrites the whole file
		// (truncate, then write): a machine that asks right after its ACK,
		// or while the file is half written, would find no lease. A miss
		// while the file is changing is looked at again a little later.
		if ok || !recent || try == missRetries {
			return mac, ok
		}
		time.Sleep(missWait)
	}
}

// A miss in a lease file changed less than missWindow ago is retried
// missRetries times, missWait apart (the request waits, no lock is held).
const (
	missWindow  = 2 * time.Second
	missRetries = 8
	missWait    = 25 * time.Millisecond
)

// ByMAC returns the address leased to mac (normalized).
func (l *LeaseFile) ByMAC(mac string) (net.IP, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refreshLocked()
	ip, ok := l.byMAC[mac]
	if !ok {
		return nil, false
	}
	return net.ParseIP(ip), true
}

// refreshLocked re-reads the file if it changed. A file that cannot be
// read leaves the last leases read in place, and is logged once per
// change of its state.
func (l *LeaseFile) refreshLocked() {
	fi, err := os.Stat(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		l.byIP, l.byMAC, l.seen = nil, nil, false
		return
	}
	if err != nil {
		l.log.Warn("cannot stat the DHCP lease file", "path", l.path, "err", err)
		return
	}
	if l.seen && fi.Size() == l.size && fi.ModTime().Equal(l.mtime) {
		return
	}
	b, err := os.ReadFile(l.path)
	if err != nil {
		l.log.Warn("cannot read the DHCP lease file", "path", l.path, "err", err)
		return
	}
	l.byIP, l.byMAC = parseLeases(b)
	l.size, l.mtime, l.seen = fi.Size(), fi.ModTime(), true
	// A file that changed while it was read may have been read torn:
	// read it again at the next lookup.
	if after, err := os.Stat(l.path); err != nil || after.Size() != fi.Size() || !after.ModTime().Equal(fi.ModTime()) || int64(len(b)) != fi.Size() {
		l.seen = false
	}
}

// parseLeases reads dnsmasq's lease file format. dnsmasq keeps a lease in
// the file until it prunes it, and hands the address to no other MAC
// before: every lease in the file is held.
func parseLeases(b []byte) (byIP, byMAC map[string]string) {
	byIP, byMAC = map[string]string{}, map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		mac, err := host.NormalizeMAC(f[1])
		if err != nil {
			continue
		}
		ip := net.ParseIP(f[2]).To4()
		if ip == nil {
			continue
		}
		byIP[ip.String()] = mac
		byMAC[mac] = ip.String()
	}
	return byIP, byMAC
}
