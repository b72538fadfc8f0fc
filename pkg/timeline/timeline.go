package timeline

import (
	"sort"
	"sync"
	"time"
	"unsafe"
)

// Defaults of Config, chosen so a cluster of a few thousand machines keeps
// a whole boot per machine (an event is about 300 bytes; rings grow only
// as events arrive) and no fleet makes the timeline hold more than
// DefaultMaxBytes: 4,096 full host rings alone would be about 300 MB.
const (
	DefaultMaxBytes         = 16 << 20
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
	// MaxBytes bounds the memory of the host rings and the side table
	// together, in bytes (estimated: allocated event slots plus the
	// events' strings; Bytes). Past it the ring whose last event is
	// oldest goes first, a host's or a MAC's alike.
	MaxBytes int64
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
	hosts   rings // serial -> its events
	unknown rings // MAC -> events no host claims yet
	bytes   int64 // held by hosts and unknown (Bytes)
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
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
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
		hosts:   newRings(),
		unknown: newRings(),
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
		t.add(&t.hosts, t.hostRing(e.Serial), e)
	case e.MAC != "":
		t.add(&t.unknown, t.unknownRing(e.MAC), e)
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
	if r, ok := t.hosts.m[serial]; ok {
		return r.list()
	}
	return nil
}

// Unclaimed returns the events of MACs that no host claims yet, by MAC,
// oldest first.
func (t *Timeline) Unclaimed() map[string][]Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string][]Event, len(t.unknown.m))
	for mac, r := range t.unknown.m {
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
	macs := make([]string, 0, len(t.unknown.m))
	for mac := range t.unknown.m {
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
		r, ok := t.unknown.m[mac]
		if !ok {
			continue
		}
		t.drop(&t.unknown, r)
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
	t.bytes -= hr.bytes
	hr.reset()
	t.bytes += hr.bytes
	for _, e := range all {
		t.add(&t.hosts, hr, e)
	}
}

// hostRing returns serial's ring, made if missing after dropping the least
// recently active host when MaxHosts are kept.
func (t *Timeline) hostRing(serial string) *ring {
	return t.ringOf(&t.hosts, serial, t.cfg.MaxHosts, t.cfg.PerHost)
}

// unknownRing is hostRing for a MAC of the side table.
func (t *Timeline) unknownRing(mac string) *ring {
	return t.ringOf(&t.unknown, mac, t.cfg.MaxUnknownMACs, t.cfg.PerUnknownMAC)
}

// ringOf returns l's ring of key, made (for size events, allocated as
// they arrive) if missing, after dropping l's least recently active ring
// when l holds max of them. O(1): l is kept in order of activity.
func (t *Timeline) ringOf(l *rings, key string, max, size int) *ring {
	if r, ok := l.m[key]; ok {
		return r
	}
	if len(l.m) >= max {
		t.drop(l, l.tail)
	}
	r := &ring{key: key, cap: size}
	l.m[key] = r
	l.pushFront(r)
	return r
}

// add appends e to r (of list l), marks r the most recently active of l
// and drops the least recently active rings of either list, r excepted,
// while the rings hold more than Config.MaxBytes.
func (t *Timeline) add(l *rings, r *ring, e Event) {
	before := r.bytes
	r.add(e)
	t.bytes += r.bytes - before
	l.touch(r)
	t.trim(r)
}

// trim drops whole rings, the one whose last event is oldest first (host
// or side-table MAC alike), until the kept events fit Config.MaxBytes.
// keep is never dropped: a single ring is bounded by its event count.
func (t *Timeline) trim(keep *ring) {
	for t.bytes > t.cfg.MaxBytes {
		l, victim := &t.hosts, t.hosts.tail
		if u := t.unknown.tail; u != nil && u != keep && (victim == nil || victim == keep || u.lastSeq() < victim.lastSeq()) {
			l, victim = &t.unknown, u
		}
		if victim == nil || victim == keep {
			return
		}
		t.drop(l, victim)
	}
}

// drop forgets r, of list l, and its events.
func (t *Timeline) drop(l *rings, r *ring) {
	if r == nil {
		return
	}
	l.remove(r)
	delete(l.m, r.key)
	t.bytes -= r.bytes
}

// Bytes returns the estimated memory the host rings and the side table
// hold, in bytes: their allocated event slots plus the strings of the
// events kept. Config.MaxBytes bounds it.
func (t *Timeline) Bytes() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.bytes
}

// rings is a set of rings by key, in order of activity: head the ring
// that got an event last, tail the one whose last event is oldest.
type rings struct {
	m          map[string]*ring
	head, tail *ring
}

func newRings() rings { return rings{m: map[string]*ring{}} }

func (l *rings) pushFront(r *ring) {
	r.prev, r.next = nil, l.head
	if l.head != nil {
		l.head.prev = r
	}
	l.head = r
	if l.tail == nil {
		l.tail = r
	}
}

func (l *rings) remove(r *ring) {
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		l.head = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	} else {
		l.tail = r.prev
	}
	r.prev, r.next = nil, nil
}

func (l *rings) touch(r *ring) {
	if l.head == r {
		return
	}
	l.remove(r)
	l.pushFront(r)
}

// eventSlot is the size of an Event in a ring's buffer, before the bytes
// of its strings.
const eventSlot = int64(unsafe.Sizeof(Event{}))

// eventStrings estimates the bytes of e's strings (shared backing arrays
// counted as if they were not, an upper bound).
func eventStrings(e *Event) int64 {
	return int64(len(e.Kind) + len(e.Serial) + len(e.MAC) + len(e.IP) + len(e.Interface) + len(e.File) +
		len(e.Method) + len(e.Route) + len(e.From) + len(e.To) + len(e.Commit) + len(e.Message) +
		len(e.Principal) + len(e.Reason))
}

// ring is a fixed-capacity circular buffer of events that allocates as it
// fills (its buffer grows by doubling up to the capacity), and knows the
// bytes it holds.
type ring struct {
	key        string
	buf        []Event
	cap        int
	start      int   // index of the oldest event once full
	bytes      int64 // eventSlot per allocated slot plus the events' strings
	prev, next *ring // its list's order of activity
}

func newRing(capacity int) *ring { return &ring{cap: capacity} }

func (r *ring) add(e Event) {
	if len(r.buf) < r.cap {
		if len(r.buf) == cap(r.buf) {
			n := min(max(2*cap(r.buf), 4), r.cap)
			buf := make([]Event, len(r.buf), n)
			copy(buf, r.buf)
			r.bytes += int64(n-cap(r.buf)) * eventSlot
			r.buf = buf
		}
		r.buf = append(r.buf, e)
		r.bytes += eventStrings(&e)
		return
	}
	r.bytes += eventStrings(&e) - eventStrings(&r.buf[r.start])
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

// reset empties r, keeping its buffer.
func (r *ring) reset() {
	clear(r.buf)
	r.buf, r.start = r.buf[:0], 0
	r.bytes = int64(cap(r.buf)) * eventSlot
}

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
