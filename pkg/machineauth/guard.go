// Package machineauth decides whether a request on a machine route (the
// first-stage script, the facts report that answers the final config,
// set_installed, boot_complete, the images of a serial) comes from the
// machine whose serial it names.
//
// A machine proves who it is by what mayu already knows of it, or by the
// credential mayu gave it. In mode "lease" (the default) a request about
// serial S from address X is accepted when
//
//	A. it carries S's credential (issued with S's first-stage script), or
//	B. X is S's InternalAddr (the static address mayu gave it), or
//	C. X holds a DHCP lease whose MAC is one of S's recorded MACs, or the
//	   MAC S was bound to when it first asked, or
//	D. X holds no lease and is the address S was bound from, or
//	E. S is not installed or running and nobody is bound to S yet: the
//	   first request binds S to its requester. With a lease table this
//	   needs a lease on X whose MAC is no other host's, nor bound to
//	   another serial, and S must have no MACs recorded. Without one
//	   (DHCP is not mayu's), a first-stage request for a configured
//	   serial with MACs recorded (a reinstall) binds it anew too:
//	   nothing else tells machines apart there.
//
// Mode "credential" accepts only A, except for the first-stage script
// (which hands the credential out, by A to E) and the images of a serial
// mayu has no record of (the default OS version's, served to anyone).
// Mode "off" accepts everything, as Mayu 0.11 did.
package machineauth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"mayu/pkg/host"
)

// Mode is how strictly machine routes are checked (--machine-auth).
type Mode string

// The modes; see the package documentation.
const (
	ModeLease      Mode = "lease"
	ModeCredential Mode = "credential"
	ModeOff        Mode = "off"
)

// ParseMode reads a --machine-auth value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.TrimSpace(s)); m {
	case ModeLease, ModeCredential, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("machine auth mode %q: want lease, credential or off", s)
}

// ErrForbidden: the request does not come from the machine it names (403).
var ErrForbidden = errors.New("forbidden")

// Header carries a machine's credential.
const Header = host.MachineTokenHeader

// Kind is the kind of machine route a request is on.
type Kind int

// The kinds of machine routes.
const (
	FirstStage Kind = iota // GET /first-stage-script/<serial>: hands out the credential
	Facts                  // POST of the facts, answered with the final config
	Machine                // set_installed, boot_complete
	Image                  // /images/<serial>/...
)

func (k Kind) String() string {
	return [...]string{"first-stage script", "final config", "machine report", "image"}[k]
}

// Request is one request about a machine.
type Request struct {
	Serial     string // normalized
	Source     net.IP // the address the request came from
	Credential string // the Header's value; "" when none was sent
	Kind       Kind
}

// Hosts is what the guard reads of the host records.
type Hosts interface {
	Host(serial string) (host.Host, bool)
	HostByMAC(mac string) (host.Host, bool)
}

// Leases maps addresses to the MACs holding their DHCP leases; LeaseFile
// is one.
type Leases interface {
	Lookup(ip net.IP) (mac string, ok bool)
	ByMAC(mac string) (net.IP, bool)
}

// Config configures a Guard.
type Config struct {
	Mode  Mode // "" is ModeLease
	Hosts Hosts
	// Leases is the lease table of the DHCP server that serves the
	// machines; nil when mayu cannot see it (--no-dnsmasq without
	// --dhcp-leases-file).
	Leases Leases
	// Dir keeps the bindings (credential hash, MAC and address of each
	// serial's first requester), one file per serial; "" keeps them in
	// memory only.
	Dir    string
	Logger *slog.Logger
	Rand   io.Reader        // crypto/rand when nil
	Now    func() time.Time // time.Now when nil
}

// Guard applies the rules. Safe for concurrent use.
type Guard struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	bindings map[string]binding
	byMAC    map[string]string // binding MAC -> serial

	saveMu sync.Map // serial -> *sync.Mutex: one write of a serial's file at a time
}

// New loads the bindings from cfg.Dir and returns the guard.
func New(cfg Config) (*Guard, error) {
	if cfg.Hosts == nil {
		return nil, errors.New("machineauth: Hosts is required")
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeLease
	}
	if _, err := ParseMode(string(cfg.Mode)); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	bs, err := loadBindings(cfg.Dir)
	if err != nil {
		return nil, err
	}
	g := &Guard{cfg: cfg, log: cfg.Logger, bindings: bs, byMAC: map[string]string{}}
	for s, b := range bs {
		if b.MAC != "" {
			g.byMAC[b.MAC] = s
		}
	}
	return g, nil
}

// Mode is the guard's mode.
func (g *Guard) Mode() Mode { return g.cfg.Mode }

// Authorize accepts r or returns an error wrapping ErrForbidden that says
// why, and logs the refusal. A first request that binds the serial (rule E)
// stores the binding before it returns.
func (g *Guard) Authorize(r Request) error {
	_, err := g.authorize(r, false)
	return err
}

// Issue authorizes a first-stage request and binds its serial to the
// requester with a new credential, which it returns (64 hex digits). In
// mode off it authorizes everything and returns "" (no credential).
func (g *Guard) Issue(r Request) (string, error) {
	r.Kind = FirstStage
	return g.authorize(r, true)
}

func (g *Guard) authorize(r Request, issue bool) (string, error) {
	if g.cfg.Mode == ModeOff {
		return "", nil
	}
	var token string
	if issue {
		b := make([]byte, 32)
		if _, err := io.ReadFull(g.cfg.Rand, b); err != nil {
			return "", fmt.Errorf("machineauth: credential: %w", err)
		}
		token = hex.EncodeToString(b)
	}
	g.mu.Lock()
	nb, reason := g.decideLocked(r)
	if reason != "" {
		g.mu.Unlock()
		g.log.Warn("machine request refused", "serial", r.Serial, "route", r.Kind.String(), "source", r.Source.String(), "reason", reason)
		return "", fmt.Errorf("%w: %s", ErrForbidden, reason)
	}
	if issue {
		if nb == nil {
			nb = g.rebindLocked(r)
		}
		nb.TokenSHA256 = digest(token)
		nb.Issued = g.cfg.Now().UTC()
	}
	if nb != nil {
		g.setLocked(*nb)
	}
	g.mu.Unlock()
	if nb != nil {
		if err := g.save(r.Serial); err != nil {
			return "", err
		}
	}
	return token, nil
}

// decideLocked applies the rules: it returns a refusal's reason, or for a
// first request (rule E) the binding to store.
func (g *Guard) decideLocked(r Request) (*binding, string) {
	h, known := g.cfg.Hosts.Host(r.Serial)
	b, bound := g.bindings[r.Serial]
	src := r.Source.String()
	if r.Credential != "" {
		if bound && b.TokenSHA256 != "" &&
			subtle.ConstantTimeCompare([]byte(digest(r.Credential)), []byte(b.TokenSHA256)) == 1 {
			return nil, ""
		}
		return nil, fmt.Sprintf("the credential sent is not the one mayu gave %s", r.Serial)
	}
	if r.Kind == Image && !known {
		return nil, "" // the default version's images, as /images/vmlinuz serves them
	}
	if g.cfg.Mode == ModeCredential && r.Kind != FirstStage {
		return nil, fmt.Sprintf("%s's credential is required (--machine-auth=credential) and none was sent", r.Serial)
	}
	if known && h.InternalAddr != nil && h.InternalAddr.Equal(r.Source) {
		return nil, ""
	}
	var mac string
	var leased bool
	if g.cfg.Leases != nil {
		mac, leased = g.cfg.Leases.Lookup(r.Source)
	}
	if leased && ((known && slices.Contains(h.MacAddresses, mac)) || (bound && b.MAC == mac)) {
		return nil, ""
	}
	if !leased && bound && b.Addr == src {
		return nil, ""
	}

	// Rule E: a first request binds the serial.
	who := src
	if leased {
		who += " (DHCP lease of " + mac + ")"
	}
	if known && h.State.IgnoredByDHCP() {
		return nil, fmt.Sprintf("%s is %s: it proves itself by its address %s or its credential, and %s has neither",
			r.Serial, h.State, h.InternalAddr, who)
	}
	if g.cfg.Leases == nil {
		// A reinstall: the machine was installed (it has MACs) and an
		// operator set it configured; it asks from whatever address the
		// external DHCP gave it now.
		rebind := r.Kind == FirstStage && known && (h.State == host.Configured || h.State == host.Unknown) && len(h.MacAddresses) > 0
		if bound && !rebind {
			return nil, fmt.Sprintf("%s is bound to the machine that asked for it from %s; %s is another", r.Serial, b.Addr, who)
		}
		return g.rebindLocked(r), ""
	}
	switch {
	case bound:
		return nil, fmt.Sprintf("%s is bound to the machine with MAC %s (address %s); %s is another", r.Serial, b.MAC, b.Addr, who)
	case known && len(h.MacAddresses) > 0:
		return nil, fmt.Sprintf("%s has MACs %s and %s holds no lease for any of them", r.Serial, strings.Join(h.MacAddresses, ","), who)
	case !leased:
		return nil, fmt.Sprintf("%s holds no DHCP lease from mayu: a machine asks from the address it was leased", src)
	}
	if o, ok := g.cfg.Hosts.HostByMAC(mac); ok && o.Serial != r.Serial {
		return nil, fmt.Sprintf("%s's lease is for %s, a MAC of %s: one machine has one serial", src, mac, o.Serial)
	}
	if s, ok := g.byMAC[mac]; ok && s != r.Serial {
		return nil, fmt.Sprintf("%s's lease is for %s, bound to serial %s already: one machine has one serial", src, mac, s)
	}
	return g.rebindLocked(r), ""
}

// rebindLocked is the binding of r's serial to r's requester.
func (g *Guard) rebindLocked(r Request) *binding {
	nb := g.bindings[r.Serial]
	nb.Serial, nb.Addr, nb.MAC = r.Serial, r.Source.String(), ""
	if g.cfg.Leases != nil {
		nb.MAC, _ = g.cfg.Leases.Lookup(r.Source)
	}
	return &nb
}

func (g *Guard) setLocked(b binding) {
	if old, ok := g.bindings[b.Serial]; ok && old.MAC != "" && g.byMAC[old.MAC] == b.Serial {
		delete(g.byMAC, old.MAC)
	}
	g.bindings[b.Serial] = b
	if b.MAC != "" {
		g.byMAC[b.MAC] = b.Serial
	}
}

// save writes the serial's current binding. Writes of one serial are
// serialized and each writes the binding as it is then, so the file ends
// as the last decision left it.
func (g *Guard) save(serial string) error {
	l, _ := g.saveMu.LoadOrStore(serial, &sync.Mutex{})
	mu := l.(*sync.Mutex)
	mu.Lock()
	defer mu.Unlock()
	g.mu.Lock()
	b := g.bindings[serial]
	g.mu.Unlock()
	return saveBinding(g.cfg.Dir, b)
}

// CheckFacts checks the MACs a facts report lists: the MAC of the
// requester's DHCP lease must be among them (a machine reports its own
// cards, the one it booted from included), and none may be the MAC another
// serial was bound by when its machine first asked (another machine's
// card, which DHCP would ignore once this serial is installed). A card
// that holds a lease elsewhere is not refused for that alone: a machine
// with two cabled NICs holds two leases. In mode off it accepts
// everything; without a lease table only the bindings are checked.
func (g *Guard) CheckFacts(r Request, macs []string) error {
	if g.cfg.Mode == ModeOff {
		return nil
	}
	var reason string
	if g.cfg.Leases != nil {
		if own, leased := g.cfg.Leases.Lookup(r.Source); leased && len(macs) > 0 && !slices.Contains(macs, own) {
			reason = fmt.Sprintf("the report lists MACs %s but not %s, whose DHCP lease %s asks from", strings.Join(macs, ","), own, r.Source)
		}
	}
	g.mu.Lock()
	for _, m := range macs {
		if s, ok := g.byMAC[m]; ok && s != r.Serial && reason == "" {
			reason = fmt.Sprintf("MAC %s is the card serial %s was bound by when its machine first asked: another machine's", m, s)
		}
	}
	g.mu.Unlock()
	if reason == "" {
		return nil
	}
	g.log.Warn("machine request refused", "serial", r.Serial, "route", r.Kind.String(), "source", r.Source.String(), "reason", reason)
	return fmt.Errorf("%w: %s", ErrForbidden, reason)
}

func digest(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}
