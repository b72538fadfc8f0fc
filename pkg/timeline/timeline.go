package timeline

import (
	"sort"
	"sync"
	"time"
)

// Defaults of Config, chosen so a cluster of a few thousand machines keeps
// a whole boot per machine in a few tens of megabytes at most (an event is
// about 300 bytes; rings grow only as events arrive).
const (
	DefaultPerHost          = 256
	DefaultMaxHosts         = 4096
	DefaultMaxUnknownMACs   = 1024
	DefaultPerUnknownMAC    = 64
	DefaultRecent           = 1024
	DefaultMaxLeases        = 4096
	DefaultSubscriberBuffer = 256
	DefaultMaxSubscribers   = 64
)

// Config bounds a Timeline. Zero fields take the defaults above.
type Config struct {
	// PerHost is the number of events kept per host; the oldest go first.
	PerHost int
	// MaxHosts is the number of hosts with events kept; the host whose
	// last event is oldest goes first.
	MaxHosts int
	// MaxUnknownMACs is the number of MACs that no host claims yet whose
	// events are kept, waiting for a host to claim them (Reattribute).
	MaxUnknownMACs int
	// PerUnknownMAC is the number of events kept per such MAC.
	PerUnknownMAC int
	// Recent is the number of events of all machines kept for
	// Recent (GET /admin/events without streaming).
	Recent int
	// MaxLeases bounds the addresses remembered from dhcp-ack events, by
	// which an event that has only an IP (a TFTP transfer, an HTTP fetch
	// from a bootstrap address) gets its MAC; the oldest goes first.
	MaxLeases int
	// SubscriberBuffer is a subscriber's default buffer, in events.
	SubscriberBuffer int
	// MaxSubscribers bounds the live subscribers; Subscribe refuses more.
	MaxSubscribers int
	// Resolve names the host of a MAC or IP address (either may be empty),
	// or returns "" when no host claims them. It is called without the
	// timeline's lock held, at Publish of an event without a serial and in
	// Reattribute. Nil resolves nothing; SetResolve sets it later.
	Resolve func(mac, ip string) string
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Timeline holds the events of every machine and fans them out to
// subscribers. Its methods are safe for concurrent use; none blocks on a
// subscriber.
type Timeline struct {
	cfg Config

	mu      sync.Mutex
	seq     uint64
	hosts   map[string]*ring // serial -> its events
	unknown map[string]*ring // MAC -> events no host claims yet
	recent  *ring
	leases  leases
	subs    map[*Subscription]struct{}
	obs     []func(Event)
	closed  bool
	resolve func(mac, ip string) string
	started time.Time
}

// New returns an empty Timeline bounded by cfg.
func New(cfg Config) *Timeline {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.PerHost, DefaultPerHost)
	def(&cfg.MaxHosts, DefaultMaxHosts)
	def(&cfg.MaxUnknownMACs, DefaultMaxUnknownMACs)
	def(&cfg.PerUnknownMAC, DefaultPerUnknownMAC)
	def(&cfg.Recent, DefaultRecent)
	def(&cfg.MaxLeases, DefaultMaxLeases)
	def(&cfg.SubscriberBuffer, DefaultSubscriberBuffer)
	def(&cfg.MaxSubscribers, DefaultMaxSubscribers)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Timeline{
		cfg:     cfg,
		hosts:   map[string]*ring{},
		unknown: map[string]*ring{},
		recent:  newRing(cfg.Recent),
		leases:  leases{max: cfg.MaxLeases, mac: map[string]string{}},
		subs:    map[*Subscription]struct{}{},
		resolve: cfg.Resolve,
		started: cfg.Now().UTC(),
	}
}

// Started is when the timeline began: nothing before it was seen.
func (t *Timeline) Started() time.Time { return t.started }

// SetResolve replaces Config.Resolve, for a daemon whose hosts are known
// only after the timeline had to exist (dnsmasq starts publishing first).
func (t *Timeline) SetResolve(fn func(mac, ip string) string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.resolve = fn
}

// Publish records e and hands it to every subscriber, returning it as
// recorded: Seq assigned, Time set (UTC) when zero, MAC filled in from the
// last dhcp-ack of its IP when it has only an IP, Serial resolved from MAC
// or IP when empty and a host claims them. An event no host claims but
// with a MAC waits in the side table for Reattribute; one with neither
// serial nor MAC is only in Recent and on the bus. A nil Timeline drops
// the event, so callers need not check.
func (t *Timeline) Publish(e Event) Event {
	if t == nil {
		return e
	}
	if e.Time.IsZero() {
		e.Time = t.cfg.Now()
	}
	e.Time = e.Time.UTC()

	t.mu.Lock()
	if e.Kind == DHCPAck && e.MAC != "" && e.IP != "" {
		t.leases.put(e.IP, e.MAC)
	}
	if e.MAC == "" && e.IP != "" {
		e.MAC = t.leases.mac[e.IP]
	}
	resolve := t.resolve
	t.mu.Unlock()
	if e.Serial == "" && (e.MAC != "" || e.IP != "") && resolve != nil {
		e.Serial = resolve(e.MAC, e.IP)
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	e.Seq = t.seq
	t.recent.add(e)
	switch {
	case e.Serial != "":
		t.hostRing(e.Serial).add(e)
	case e.MAC != "":
		t.unknownRing(e.MAC).add(e)
	}
	for _, fn := range t.obs {
		fn(e)
	}
	for s := range t.subs {
		s.offer(e)
	}
	return e
}

// Observe adds fn, called with every event Publish records, in order and
// before the subscribers get it: for exact counts (metrics), where a
// subscriber could lose events. fn runs under the timeline's lock, so it
// must be quick, must not block and must not call the Timeline.
func (t *Timeline) Observe(fn func(Event)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.obs = append(t.obs, fn)
}

// Events returns the events kept for serial, oldest first (nil for a
// serial with none).
func (t *Timeline) Events(serial string) []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r, ok := t.hosts[serial]; ok {
		return r.list()
	}
	return nil
}

// Unclaimed returns the events of MACs that no host claims yet, by MAC,
// oldest first.
func (t *Timeline) Unclaimed() map[string][]Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string][]Event, len(t.unknown))
	for mac, r := range t.unknown {
		out[mac] = r.list()
	}
	return out
}

// Recent returns the last events of all machines (claimed or not), oldest
// first, at most Config.Recent of them.
func (t *Timeline) Recent() []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.recent.list()
}

// Attach moves the side table's events of macs to serial's ring, in order,
// as when a host has just claimed those MACs. Events already on the bus are
// not published again.
func (t *Timeline) Attach(serial string, macs ...string) {
	if serial == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.attachLocked(serial, macs)
}

// Reattribute asks Config.Resolve about every MAC of the side table and
// attaches the events of those a host now claims. Call it after the hosts
// changed (store.Subscribe).
func (t *Timeline) Reattribute() {
	t.mu.Lock()
	resolve := t.resolve
	if resolve == nil {
		t.mu.Unlock()
		return
	}
	macs := make([]string, 0, len(t.unknown))
	for mac := range t.unknown {
		macs = append(macs, mac)
	}
	t.mu.Unlock()
	claims := map[string][]string{}
	for _, mac := range macs {
		if serial := resolve(mac, ""); serial != "" {
			claims[serial] = append(claims[serial], mac)
		}
	}
	if len(claims) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for serial, ms := range claims {
		t.attachLocked(serial, ms)
	}
}

func (t *Timeline) attachLocked(serial string, macs []string) {
	var moved []Event
	for _, mac := range macs {
		r, ok := t.unknown[mac]
		if !ok {
			continue
		}
		delete(t.unknown, mac)
		for _, e := range r.list() {
			e.Serial = serial
			moved = append(moved, e)
		}
	}
	if len(moved) == 0 {
		return
	}
	hr := t.hostRing(serial)
	all := append(hr.list(), moved...)
	sort.SliceStable(all, func(i, j int) bool { return all[i].Seq < all[j].Seq })
	hr.reset()
	for _, e := range all {
		hr.add(e)
	}
}

// hostRing returns serial's ring, making room under MaxHosts by dropping
// the host whose last event is the oldest.
func (t *Timeline) hostRing(serial string) *ring {
	return ringOf(t.hosts, serial, t.cfg.MaxHosts, t.cfg.PerHost)
}

// unknownRing is hostRing for a MAC of the side table.
func (t *Timeline) unknownRing(mac string) *ring {
	return ringOf(t.unknown, mac, t.cfg.MaxUnknownMACs, t.cfg.PerUnknownMAC)
}

// ringOf returns m's ring of key, made (of size events) if missing, after
// dropping the least recently active ring when m holds max of them.
func ringOf(m map[string]*ring, key string, max, size int) *ring {
	if r, ok := m[key]; ok {
		return r
	}
	if len(m) >= max {
		delete(m, oldest(m))
	}
	r := newRing(size)
	m[key] = r
	return r
}

// oldest returns the key whose ring's last event has the lowest Seq. It is
// linear in the number of rings, paid only when a bound is reached.
func oldest(m map[string]*ring) string {
	var key string
	var low uint64
	first := true
	for k, r := range m {
		if s := r.lastSeq(); first || s < low {
			key, low, first = k, s, false
		}
	}
	return key
}

// ring is a fixed-capacity circular buffer of events that allocates as it
// fills.
type ring struct {
	buf   []Event
	cap   int
	start int // index of the oldest event once full
}

func newRing(capacity int) *ring { return &ring{cap: capacity} }

func (r *ring) add(e Event) {
	if len(r.buf) < r.cap {
		r.buf = append(r.buf, e)
		return
	}
	r.buf[r.start] = e
	r.start = (r.start + 1) % r.cap
}

func (r *ring) list() []Event {
	if len(r.buf) == 0 {
		return nil
	}
	out := make([]Event, 0, len(r.buf))
	out = append(out, r.buf[r.start:]...)
	return append(out, r.buf[:r.start]...)
}

func (r *ring) lastSeq() uint64 {
	if len(r.buf) == 0 {
		return 0
	}
	i := r.start - 1
	if i < 0 {
		i = len(r.buf) - 1
	}
	return r.buf[i].Seq
}

func (r *ring) reset() { r.buf, r.start = r.buf[:0], 0 }

// leases remembers the MAC of each address dnsmasq acknowledged, bounded,
// the oldest address forgotten first.
type leases struct {
	max   int
	mac   map[string]string // IP -> MAC
	order []string          // IPs, oldest first
}

func (l *leases) put(ip, mac string) {
	if _, ok := l.mac[ip]; !ok {
		if len(l.order) >= l.max {
			delete(l.mac, l.order[0])
			l.order = l.order[1:]
		}
		l.order = append(l.order, ip)
	}
	l.mac[ip] = mac
}
