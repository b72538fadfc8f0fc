// Package provision holds the rules of a machine's life cycle: registering a
// new machine (profile, address, machine ID, etcd token), recording what it
// reports while installing, and every state change an operator or the
// machine itself asks for. The HTTP handlers, the CLI and the tests all go
// through these rules; the store only persists what they decide.
package provision

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"mayu/pkg/config"
	"mayu/pkg/host"
	"mayu/pkg/store"
)

// Errors the API maps to status codes.
var (
	// ErrRangeFull: ip_range has no free address left (503).
	ErrRangeFull = errors.New("provision: no free address left in network.ip_range")
	// ErrInvalid: a value in a request is malformed (400).
	ErrInvalid = errors.New("provision: invalid value")
)

// Audit messages, as Mayu users know them from git log.
const (
	MsgCreated          = "host created"
	MsgPredefined       = "updated with predefined settings"
	MsgInternalAddr     = "updated host InternalAddr"
	MsgProfile          = "updated host profile and metadata"
	MsgDefaultToken     = "set default etcd discovery token"
	MsgMACs             = "collected host mac addresses"
	MsgConnectedNIC     = "updated host connected nic"
	MsgIPMIAddr         = "updated host ipmi address"
	MsgInstalling       = "updated host state to installing"
	MsgInstalled        = "updated state to installed"
	MsgRunning          = "updated state to running"
	MsgMetadata         = "updated host metadata"
	MsgProviderID       = "updated host provider id"
	MsgCabinet          = "updated host cabinet"
	MsgState            = "updated host state"
	MsgEtcdToken        = "updated host etcd cluster token"
	MsgOverridesPrefix  = "updated host overrides: "
	MsgFresh            = "host flagged as fresh"
	ClusterTokenMessage = "Set default etcd cluster to '%s'"
)

// Config is what a Provisioner needs.
type Config struct {
	Cluster *config.Config
	Store   store.Store
	Logger  *slog.Logger
	// Rand is the source of machine IDs; crypto/rand when nil.
	Rand io.Reader
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Provisioner applies the life-cycle rules to the store.
type Provisioner struct {
	cfg   *config.Config
	store store.Store
	log   *slog.Logger
	rand  io.Reader
	now   func() time.Time

	// regMu guards the choice of address and profile, so that concurrent
	// first requests never share an address, never overshoot a profile's
	// quantity and create one record per serial. It is not held while the
	// record is written: a registration reserves its address and profile
	// (and its serial) under regMu, writes, then drops the reservation, so
	// registrations of a boot storm share the store's group commit.
	regMu    sync.Mutex
	ipLo     uint32
	ipHi     uint32
	ipNext   uint32 // no address below this one was free at the last allocation
	resIP    map[uint32]bool
	inflight map[string]*registration
}

// registration is a Register in progress; a second request for the same
// serial waits for it and shares its outcome.
type registration struct {
	profile string
	done    chan struct{}
	h       host.Host
	err     error
}

// New returns a Provisioner. The configuration must have been validated.
func New(cfg Config) (*Provisioner, error) {
	if cfg.Cluster == nil || cfg.Store == nil {
		return nil, errors.New("provision: config and store are required")
	}
	p := &Provisioner{cfg: cfg.Cluster, store: cfg.Store, log: cfg.Logger, rand: cfg.Rand, now: cfg.Now}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.rand == nil {
		p.rand = rand.Reader
	}
	if p.now == nil {
		p.now = time.Now
	}
	lo, hi := cfg.Cluster.Network.IPRange.Bounds()
	if lo == nil || hi == nil {
		return nil, fmt.Errorf("provision: network.ip_range %s-%s is not a valid range",
			cfg.Cluster.Network.IPRange.Start, cfg.Cluster.Network.IPRange.End)
	}
	p.ipLo, p.ipHi = config.IPToUint32(lo), config.IPToUint32(hi)
	p.ipNext = p.ipLo
	p.resIP, p.inflight = map[uint32]bool{}, map[string]*registration{}
	return p, nil
}

// Serial normalizes a serial from a request; the error wraps ErrInvalid.
func Serial(s string) (string, error) {
	n, err := host.NormalizeSerial(s)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return n, nil
}

// Register returns the record of serial, creating it on first sight with
// its profile, address, machine ID and etcd token. created tells whether it
// was new.
func (p *Provisioner) Register(serial string) (h host.Host, created bool, err error) {
	serial, err = Serial(serial)
	if err != nil {
		return host.Host{}, false, err
	}
	if h, err := p.store.Get(serial); err == nil {
		return h, false, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return host.Host{}, false, err
	}

	p.regMu.Lock()
	// Another request may have created it while we waited for the lock, or
	// be creating it now.
	if h, err := p.store.Get(serial); err == nil {
		p.regMu.Unlock()
		return h, false, nil
	}
	if reg := p.inflight[serial]; reg != nil {
		p.regMu.Unlock()
		<-reg.done
		return reg.h, false, reg.err
	}
	ip, err := p.freeIP()
	if err != nil {
		p.regMu.Unlock()
		p.log.Error("cannot register machine", "serial", serial, "err", err)
		return host.Host{}, false, err
	}
	prof := p.pickProfile()
	machineID, err := p.machineID(0, 0)
	if err != nil {
		p.regMu.Unlock()
		return host.Host{}, false, err
	}
	ipn := config.IPToUint32(ip)
	reg := &registration{profile: prof.Name, done: make(chan struct{}),
		err: errors.New("provision: registration did not finish")}
	p.resIP[ipn] = true
	p.inflight[serial] = reg
	p.ipNext = ipn + 1
	p.regMu.Unlock()
	defer func() {
		p.regMu.Lock()
		delete(p.resIP, ipn)
		delete(p.inflight, serial)
		if reg.err != nil && ipn < p.ipNext {
			p.ipNext = ipn // the address is free again
		}
		p.regMu.Unlock()
		close(reg.done)
	}()
	defaultToken := p.store.Cluster().Config.DefaultEtcdClusterToken
	version := p.cfg.CoreOSVersion(prof)

	h, err = p.store.Create(serial,
		store.Step{Message: MsgCreated, Apply: func(h *host.Host) error {
			h.Enabled = true
			h.State = host.Configured
			return nil
		}},
		store.Step{Message: MsgPredefined, Apply: func(h *host.Host) error {
			h.MachineID = machineID
			h.Hostname = machineID[:16]
			return nil
		}},
		store.Step{Message: MsgInternalAddr, Apply: func(h *host.Host) error {
			h.InternalAddr = ip
			return nil
		}},
		store.Step{Message: MsgProfile, Apply: func(h *host.Host) error {
			h.Profile = prof.Name
			h.FleetMetadata = host.FleetMeta(append([]string(nil), prof.Tags...))
			h.FleetDisableEngine = prof.DisableEngine
			h.CoreOSVersion = version
			h.EtcdClusterToken = prof.EtcdClusterToken
			return nil
		}},
		store.Step{Message: MsgDefaultToken, Apply: func(h *host.Host) error {
			if h.EtcdClusterToken == "" {
				h.EtcdClusterToken = defaultToken
			}
			return nil
		}},
	)
	reg.h, reg.err = h, err
	if err != nil {
		return host.Host{}, false, err
	}
	p.log.Info("registered new machine", "serial", serial, "profile", h.Profile, "ip", h.InternalAddr.String())
	return h, true, nil
}

// freeIP returns the lowest free address of ip_range. It scans from the
// last allocation first (addresses below it were taken then), and the whole
// range only when that finds nothing, so a registration costs O(1) lookups
// in a growing fleet. A full range is an error, never a hang.
func (p *Provisioner) freeIP() (net.IP, error) {
	scan := func(from, to uint32) net.IP {
		for n := from; n <= to && n >= from; n++ {
			if p.resIP[n] {
				continue
			}
			ip := config.Uint32ToIP(n)
			if _, err := p.store.ByIP(ip); errors.Is(err, store.ErrNotFound) {
				return ip
			}
			if n == to {
				break
			}
		}
		return nil
	}
	if p.ipNext <= p.ipHi {
		if ip := scan(p.ipNext, p.ipHi); ip != nil {
			return ip, nil
		}
	}
	if ip := scan(p.ipLo, p.ipHi); ip != nil {
		return ip, nil
	}
	return nil, fmt.Errorf("%w (%s-%s)", ErrRangeFull, p.cfg.Network.IPRange.Start, p.cfg.Network.IPRange.End)
}

// pickProfile returns the first profile in config order whose quantity is
// not reached yet, else the default profile.
func (p *Provisioner) pickProfile() config.Profile {
	for _, prof := range p.cfg.Profiles {
		if prof.Name == config.DefaultProfileName {
			continue
		}
		if p.profileCount(prof.Name) < prof.Quantity {
			return prof
		}
	}
	if prof, ok := p.cfg.Profile(config.DefaultProfileName); ok {
		return prof
	}
	return config.Profile{Name: config.DefaultProfileName}
}

// profileCount counts the hosts of a profile, the registrations in
// progress included. A registration's record lands in the store before its
// reservation is dropped, so each one is counted once: from the store if
// its record was there when ProfileCount read it, else as pending. If one
// landed during the read, the count is taken again.
func (p *Provisioner) profileCount(profile string) int {
	landed := func(serial string) bool {
		_, err := p.store.Get(serial)
		return err == nil
	}
	for {
		var waiting []string
		for serial, reg := range p.inflight {
			if reg.profile == profile && !landed(serial) {
				waiting = append(waiting, serial)
			}
		}
		n := p.store.ProfileCount(profile)
		stable := true
		for _, serial := range waiting {
			if landed(serial) {
				stable = false
				break
			}
		}
		if stable {
			return n + len(waiting)
		}
	}
}

// machineID is 16 random bytes in hex; byte 0 is the cabinet and byte 1 the
// machine on the cabinet.
func (p *Provisioner) machineID(cabinet, machineOnCabinet uint) (string, error) {
	b := make([]byte, 16)
	if _, err := io.ReadFull(p.rand, b); err != nil {
		return "", fmt.Errorf("provision: machine id: %w", err)
	}
	b[0], b[1] = byte(cabinet), byte(machineOnCabinet)
	return hex.EncodeToString(b), nil
}

// Facts is what the host-info helper reports while a machine installs.
type Facts struct {
	MACs         []string
	ConnectedNIC string
	IPMIAddr     string
}

// ReportFacts records a machine's MACs, connected NIC and IPMI address and
// moves it to installing: the machine has asked for its final config. An
// unknown serial is registered first.
func (p *Provisioner) ReportFacts(serial string, f Facts) (host.Host, error) {
	macs := make([]string, 0, len(f.MACs))
	for _, m := range f.MACs {
		n, err := host.NormalizeMAC(m)
		if err != nil {
			return host.Host{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if !contains(macs, n) {
			macs = append(macs, n)
		}
	}
	nic := strings.TrimSpace(f.ConnectedNIC)
	if err := checkIfName(nic); err != nil {
		return host.Host{}, err
	}
	var ipmi net.IP
	if s := strings.TrimSpace(f.IPMIAddr); s != "" {
		if ipmi = net.ParseIP(s); ipmi == nil {
			return host.Host{}, fmt.Errorf("%w: IPMI address %q does not parse", ErrInvalid, s)
		}
	}
	// Register only once the request is known to be good: a refused request
	// leaves no record behind.
	h, _, err := p.Register(serial)
	if err != nil {
		return host.Host{}, err
	}
	for _, m := range macs {
		if other, err := p.store.ByMAC(m); err == nil && other.Serial != h.Serial {
			p.log.Warn("MAC address already belongs to another machine", "mac", m, "serial", h.Serial, "other", other.Serial)
		}
	}
	return p.store.Update(h.Serial,
		store.Step{Message: MsgMACs, Apply: func(h *host.Host) error {
			if len(macs) > 0 {
				h.MacAddresses = macs
			}
			return nil
		}},
		store.Step{Message: MsgConnectedNIC, Apply: func(h *host.Host) error {
			h.ConnectedNIC = nic
			return nil
		}},
		store.Step{Message: MsgIPMIAddr, Apply: func(h *host.Host) error {
			if ipmi != nil {
				h.IPMIAddr = ipmi
			}
			return nil
		}},
		transition(MsgInstalling, host.Installing, nil),
	)
}

// SetInstalled marks the machine installed; DHCP then ignores its MACs.
func (p *Provisioner) SetInstalled(serial string) (host.Host, error) {
	return p.update(serial, transition(MsgInstalled, host.Installed, nil))
}

// Versions are the software versions a booted machine reports.
type Versions struct {
	CoreOSVersion, MayuVersion, DockerVersion, FleetVersion,
	EtcdVersion, RktVersion, K8sVersion, YochuVersion string
}

// BootComplete marks the machine running, sets LastBoot and copies the
// versions it reported (empty ones leave the record's value alone).
func (p *Provisioner) BootComplete(serial string, v Versions) (host.Host, error) {
	now := p.now().UTC()
	return p.update(serial, transition(MsgRunning, host.Running, func(h *host.Host) {
		h.LastBoot = now
		set := func(dst *string, src string) {
			if s := strings.TrimSpace(src); s != "" {
				*dst = s
			}
		}
		set(&h.CoreOSVersion, v.CoreOSVersion)
		set(&h.MayuVersion, v.MayuVersion)
		set(&h.DockerVersion, v.DockerVersion)
		set(&h.FleetVersion, v.FleetVersion)
		set(&h.EtcdVersion, v.EtcdVersion)
		set(&h.RktVersion, v.RktVersion)
		set(&h.K8sVersion, v.K8sVersion)
		set(&h.YochuVersion, v.YochuVersion)
	}))
}

// SetState is the operator's state change. Moving to configured (reinstall)
// keeps the disk data; MarkFresh is the variant that wipes it.
func (p *Provisioner) SetState(serial, state string) (host.Host, error) {
	st, err := host.ParseState(state)
	if err != nil {
		return host.Host{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return p.update(serial, transition(MsgState, st, func(h *host.Host) {
		if st == host.Configured {
			h.KeepDiskData = true
		}
	}))
}

// MarkFresh sends the machine back to configured with its disk data to be
// wiped at the next install.
func (p *Provisioner) MarkFresh(serial string) (host.Host, error) {
	return p.update(serial, transition(MsgFresh, host.Configured, func(h *host.Host) {
		h.KeepDiskData = false
	}))
}

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
		if err := checkValue("override "+k, k); err != nil {
			return host.Host{}, err
		}
		if err := checkValue("override "+k, overrides[k]); err != nil {
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

// SetClusterToken records the cluster's default etcd token in cluster.json.
func (p *Provisioner) SetClusterToken(token string) error {
	_, err := p.store.UpdateCluster(fmt.Sprintf(ClusterTokenMessage, token), func(c *store.Cluster) error {
		c.Config.DefaultEtcdClusterToken = token
		c.Config.EtcdDiscoveryURL = ""
		return nil
	})
	return err
}

func (p *Provisioner) set(serial, msg string, apply func(h *host.Host)) (host.Host, error) {
	return p.update(serial, store.Step{Message: msg, Apply: func(h *host.Host) error {
		apply(h)
		return nil
	}})
}

func (p *Provisioner) update(serial string, steps ...store.Step) (host.Host, error) {
	serial, err := Serial(serial)
	if err != nil {
		return host.Host{}, err
	}
	return p.store.Update(serial, steps...)
}

// transition is a step that checks the life cycle under the store's lock, so
// two concurrent requests cannot both pass the check on a stale state.
func transition(msg string, to host.State, also func(h *host.Host)) store.Step {
	return store.Step{Message: msg, Apply: func(h *host.Host) error {
		if err := h.State.CanTransition(to); err != nil {
			return err
		}
		h.State = to
		if also != nil {
			also(h)
		}
		return nil
	}}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// checkIfName accepts what Linux accepts as an interface name (at most 15
// characters, no white space or '/'), in the characters real names use. The
// value ends up in rendered configs, so anything else is refused up front
// rather than breaking the machine's final config later.
func checkIfName(name string) error {
	if len(name) > 15 {
		return fmt.Errorf("%w: interface name %q is longer than 15 characters", ErrInvalid, name[:15]+"...")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-@:", c)) {
			return fmt.Errorf("%w: interface name %q has character %q", ErrInvalid, name, c)
		}
	}
	return nil
}

// checkText refuses control characters and invalid UTF-8 in values that
// are rendered into configs.
func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, what)
	}
	for _, c := range s {
		if unicode.IsControl(c) {
			return fmt.Errorf("%w: %s has control character %q", ErrInvalid, what, c)
		}
	}
	return nil
}

// checkValue applies checkText to every string inside a JSON value.
func checkValue(what string, v interface{}) error {
	switch t := v.(type) {
	case string:
		return checkText(what, t)
	case []interface{}:
		for _, x := range t {
			if err := checkValue(what, x); err != nil {
				return err
			}
		}
	case map[string]interface{}:
		for k, x := range t {
			if err := checkText(what, k); err != nil {
				return err
			}
			if err := checkValue(what, x); err != nil {
				return err
			}
		}
	}
	return nil
}
