// Package provision holds the rules of a machine's life cycle: registering a
// new machine (profile, address, machine ID, etcd token), recording what it
// reports while installing, and every state change an operator or the
// machine itself asks for. The HTTP handlers, the CLI and the tests all go
// through these rules; the store only persists what they decide.
package provision

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mayu/pkg/config"
	"mayu/pkg/host"
	"mayu/pkg/store"
	"mayu/pkg/timeline"
)

// Errors the API maps to status codes.
var (
	// ErrRangeFull: ip_range has no free address left (503). The store
	// allocates addresses, so it is the store's error.
	ErrRangeFull = store.ErrRangeFull
	// ErrInvalid: a value in a request is malformed (400).
	ErrInvalid = errors.New("provision: invalid value")
	// ErrConflict: the request contradicts the record (409), for example
	// marking installed a machine whose MACs DHCP does not know.
	ErrConflict = errors.New("provision: conflict")
	// ErrMACConflict (an ErrConflict): a MAC address report or setting
	// that would bind a serial to another machine's network cards.
	ErrMACConflict = fmt.Errorf("%w: MAC addresses", ErrConflict)
	// ErrTooLarge: the record would exceed MaxRecordBytes (413).
	ErrTooLarge = errors.New("provision: record too large")
)

// Audit messages, as Mayu users know them from git log.
const (
	MsgCreated          = "host created"
	MsgPredefined       = "updated with predefined settings"
	MsgInternalAddr     = "updated host InternalAddr"
	MsgProfile          = "updated host profile and metadata"
	MsgDefaultToken     = "set default etcd discovery token"
	MsgMACs             = "collected host mac addresses"
	MsgSetMACs          = "updated host mac addresses"
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
	// HTTPPort (--http-port) and NoTLS (--no-tls), with the cluster's
	// network.bind_addr, are where machines reach mayu: BaseURL and the
	// URLs of the final-template data are made of them.
	HTTPPort int
	NoTLS    bool
	// CACert is what machines trust mayu's HTTPS by (Site.CACert).
	CACert string
	// Discovery names the etcd discovery URL of the final-template data and
	// creates the cluster's default token (EnsureClusterToken). Nil leaves
	// the URL empty.
	Discovery Discovery
	Logger    *slog.Logger
	// Rand is the source of machine IDs; crypto/rand when nil.
	Rand io.Reader
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Timeline receives a state event for every write that changed a
	// machine's state or recorded a boot, and a render-failed event for
	// every final config that failed to render. Nil records nothing.
	Timeline *timeline.Timeline
}

// Discovery is the etcd discovery service as the rules use it;
// discovery.Service is one.
type Discovery interface {
	// URL is the discovery URL a machine's etcd gets for token.
	URL(token string) string
	// NewToken creates a registry for a cluster of size members.
	NewToken(ctx context.Context, size int) (string, error)
	// Check verifies that the service can work at all.
	Check(ctx context.Context) error
}

// Provisioner applies the life-cycle rules to the store. As returns views
// of it that share everything but the actor their writes name.
type Provisioner struct {
	*rules
	actor Actor
}

// rules is the state every view of a Provisioner shares.
type rules struct {
	cfg   *config.Config
	store store.Store
	site  Site
	disc  Discovery
	log   *slog.Logger
	tl    *timeline.Timeline
	// randMu serialises reads of rand, which need not be safe for
	// concurrent use.
	randMu sync.Mutex
	rand   io.Reader
	now    func() time.Time

	// alloc is what a new record asks the store for (store.Reserve): the
	// store picks its profile and address atomically against every
	// record, so registrations of a boot storm need no lock here and
	// share the store's group commit.
	alloc store.AllocRequest
	// regMu guards inflight: the registrations under way by serial, so
	// that concurrent first requests of one machine make one record and
	// share its outcome.
	regMu    sync.Mutex
	inflight map[string]*registration

	// counts are the life-cycle events since start (Counts).
	counts struct {
		registrations, finalConfigs, installs, bootCompletions atomic.Uint64
	}

	// macMu guards macClaims: MAC address -> serial of the write under way
	// that records it (claimMACs).
	macMu     sync.Mutex
	macClaims map[string]string
}

// New returns a Provisioner. The configuration must have been validated.
func New(cfg Config) (*Provisioner, error) {
	if cfg.Cluster == nil || cfg.Store == nil {
		return nil, errors.New("provision: config and store are required")
	}
	p := &Provisioner{rules: &rules{cfg: cfg.Cluster, store: cfg.Store, disc: cfg.Discovery, log: cfg.Logger, rand: cfg.Rand, now: cfg.Now, tl: cfg.Timeline,
		site: Site{Cluster: cfg.Cluster, HTTPPort: cfg.HTTPPort, NoTLS: cfg.NoTLS, CACert: cfg.CACert}}}
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
	p.alloc = allocRequest(cfg.Cluster)
	p.inflight = map[string]*registration{}
	p.macClaims = map[string]string{}
	return p, nil
}

// Actor is who asks for a change, as the audit trail names it.
type Actor struct {
	// Principal is "admin:<name>", "machine:<serial>", "anonymous", ...
	// (auth.Principal's String). Empty: a change of mayu's own (start-up,
	// a test), which names nobody.
	Principal string
	// Addr is the address the request came from (the client's, behind a
	// trusted proxy); may be empty.
	Addr string
}

// trailer is the commit-message body naming a: git trailers under the
// subject line, so `git log` shows who asked and `git log --format=%s`
// stays Mayu 0.11's subject.
func (a Actor) trailer() string {
	if a.Principal == "" {
		return ""
	}
	t := "\n\nPrincipal: " + oneLine(a.Principal)
	if a.Addr != "" {
		t += "\nRemote-Address: " + oneLine(a.Addr)
	}
	return t
}

// oneLine keeps a trailer value on its line whatever it holds.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == 0x85 || r == 0x2028 || r == 0x2029 {
			return ' '
		}
		return r
	}, s)
}

// As returns a view of p whose writes name a in their audit trail (a
// trailer under each commit's subject). The view shares p's store, locks
// and reservations; it is cheap, so make one per request.
func (p *Provisioner) As(a Actor) *Provisioner {
	return &Provisioner{rules: p.rules, actor: a}
}

// Serial normalizes a serial from a request; the error wraps ErrInvalid.
func Serial(s string) (string, error) {
	n, err := host.NormalizeSerial(s)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return n, nil
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
	return p.write(host.Host{}, steps, nil, p.updater(serial))
}

// transition is a step that checks the life cycle under the store's lock, so
// two concurrent requests cannot both pass the check on a stale state. A
// machine enters a state DHCP ignores (installed) only with a MAC address
// DHCP can ignore: without one it would PXE-boot and install again at every
// boot.
func transition(msg string, to host.State, also func(h *host.Host)) store.Step {
	return store.Step{Message: msg, Apply: func(h *host.Host) error {
		if err := h.State.CanTransition(to); err != nil {
			return err
		}
		if to.IgnoredByDHCP() && !h.State.IgnoredByDHCP() && len(h.MacAddresses) == 0 {
			return fmt.Errorf("%w: %s has no MAC address recorded, so DHCP could not ignore it once %s and it would PXE-boot "+
				"and install again forever; its MACs are recorded when it asks for its final config (or: mayuctl set %s macs ...)",
				ErrConflict, h.Serial, to, h.Serial)
		}
		h.State = to
		if also != nil {
			also(h)
		}
		return nil
	}}
}
