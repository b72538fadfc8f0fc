package storm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Stages of the PXE side of a boot, in order, as reported. The HTTP life
// cycle (Steps) follows StageBootScript; StageIgnored runs once the machine
// reported boot_complete.
const (
	StagePXEDHCP    = "DHCP PXE"            // DISCOVER/OFFER/REQUEST/ACK of the PXE ROM
	StageTFTP       = "TFTP boot file"      // the download of the boot file the ACK named
	StageIPXEDHCP   = "DHCP iPXE"           // the same exchange again, with option 175
	StageBootScript = "GET /ipxebootscript" // the URL iPXE's ACK named
	StageIgnored    = "DHCP ignored"        // a DISCOVER after installation that must get no OFFER
)

// PXEStages lists the stages in report order.
var PXEStages = []string{StagePXEDHCP, StageTFTP, StageIPXEDHCP, StageBootScript, StageIgnored}

// The PXE ROM's identity as a legacy BIOS x86 machine announces it (PXE
// specification 2.1, section 2.2.1: vendor class "PXEClient:Arch:xxxxx:
// UNDI:yyyzzz"; RFC 4578: option 93 client system architecture 0) and
// iPXE's option 175 (iPXE's encapsulated options; dnsmasq's manual:
// dhcp-match=set:ipxe,175). The sub-option sent is 19 (HTTP supported).
const PXEVendorClass = "PXEClient:Arch:00000:UNDI:002001"

var ipxeOption175 = []byte{19, 1, 1}

// PXEConfig describes the segment the simulated firmware runs on.
type PXEConfig struct {
	// Iface is the client interface, in the namespace the caller runs
	// in; its peer is dnsmasq's segment. Replies come back as broadcasts
	// (every request sets the broadcast flag, as PXE ROMs do).
	Iface string
	// Prefix makes the MACs: machine i's PXE NIC is MACs(Prefix, i)[0].
	Prefix string
	// BootFile is the file the PXE ACK must name (undionly.kpxe) and
	// BootScriptURL the URL the iPXE ACK must name.
	BootFile      string
	BootScriptURL string
	// TFTPDir receives the downloads (removed after each check).
	TFTPDir string
	// Timeout bounds one DHCP reply wait; Tries is how many times a
	// DISCOVER or REQUEST is sent before the stage fails (a retry each).
	Timeout time.Duration
	Tries   int
	// IgnoreWait is how long a DISCOVER of an installed machine is
	// watched for an (unwanted) OFFER; RebootDelay is how long after
	// boot_complete it is sent. A real machine reboots after set_installed
	// and its firmware takes seconds before it DHCPs again.
	IgnoreWait  time.Duration
	RebootDelay time.Duration
	// HTTPTimeout bounds each request of a machine's HTTP client.
	HTTPTimeout time.Duration
}

// PXE plays many PXE ROMs and iPXEs on one interface. One UDP socket bound
// to port 68 on Iface receives every reply; replies are routed to the
// waiting machine by transaction ID (RFC 2131 section 2: xid is chosen by
// the client and copied into the server's reply).
type PXE struct {
	cfg     PXEConfig
	conn    *net.UDPConn
	rec     *recorder
	retries atomic.Int64

	mu      sync.Mutex
	waiters map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
	stray   int // replies nobody waited for (late, or duplicates)

	ignored   sync.WaitGroup
	answered  atomic.Int64 // installed machines that still got an OFFER
	readDone  chan struct{}
	closeOnce sync.Once
}

// NewPXE opens the client socket on cfg.Iface and starts reading replies.
// It needs CAP_NET_RAW (SO_BINDTODEVICE) and a free UDP port 68.
func NewPXE(cfg PXEConfig) (*PXE, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 4 * time.Second
	}
	if cfg.Tries <= 0 {
		cfg.Tries = 4
	}
	if cfg.IgnoreWait <= 0 {
		cfg.IgnoreWait = 3 * time.Second
	}
	if cfg.RebootDelay <= 0 {
		cfg.RebootDelay = 2 * time.Second
	}
	if cfg.HTTPTimeout <= 0 {
		cfg.HTTPTimeout = time.Minute
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1); serr != nil {
				return
			}
			if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); serr != nil {
				return
			}
			// Every machine's replies land here: a buffer past
			// net.core.rmem_max (root may) keeps a burst from being dropped.
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 16<<20)
			serr = syscall.BindToDevice(int(fd), cfg.Iface)
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:68")
	if err != nil {
		return nil, fmt.Errorf("storm: DHCP client socket on %s: %w", cfg.Iface, err)
	}
	conn := pc.(*net.UDPConn)
	p := &PXE{cfg: cfg, conn: conn, rec: newRecorder(nil), waiters: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{},
		readDone: make(chan struct{})}
	go p.read()
	return p, nil
}

// read routes every reply to the machine waiting for its xid.
func (p *PXE) read() {
	defer close(p.readDone)
	buf := make([]byte, 4096)
	for {
		n, _, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		p.mu.Lock()
		ch, ok := p.waiters[m.TransactionID]
		if !ok {
			p.stray++
		}
		p.mu.Unlock()
		if ok {
			select {
			case ch <- m:
			default: // a duplicate the machine no longer reads
			}
		}
	}
}

// Close waits for the pending ignore checks, then closes the socket.
func (p *PXE) Close() error {
	p.ignored.Wait()
	var err error
	p.closeOnce.Do(func() { err = p.conn.Close(); <-p.readDone })
	return err
}

// PXEResult is what the PXE side measured.
type PXEResult struct {
	Stages map[string]Stats `json:"stages"`
	// Errors counts failures by kind, as Result.Errors.
	Errors  map[string]int `json:"errors,omitempty"`
	Retries int            `json:"retries"`
	// Answered counts installed machines whose DISCOVER still got an OFFER.
	Answered int `json:"answered_after_install"`
	Stray    int `json:"stray_replies"`
}

// Result waits for the pending ignore checks and summarizes.
func (p *PXE) Result() *PXEResult {
	p.ignored.Wait()
	p.rec.mu.Lock()
	defer p.rec.mu.Unlock()
	r := &PXEResult{Stages: p.rec.stats(), Retries: int(p.retries.Load()), Answered: int(p.answered.Load())}
	if len(p.rec.errs) > 0 {
		r.Errors = map[string]int{}
		for k, v := range p.rec.errs {
			r.Errors[k] = v
		}
	}
	p.mu.Lock()
	r.Stray = p.stray
	p.mu.Unlock()
	return r
}

// Boot plays machine i from power-on to the boot script: the PXE ROM's
// DHCP, the TFTP download of the boot file, iPXE's DHCP with option 175
// and the boot script. It returns an HTTP client whose connections come
// from the machine's leased address (as the installing OS's would), for
// the HTTP life cycle that follows. It is Config.Prepare's shape.
func (p *PXE) Boot(ctx context.Context, i int) (*http.Client, error) {
	mac, err := net.ParseMAC(MACs(p.cfg.Prefix, i)[0])
	if err != nil {
		return nil, err
	}
	pxeOpts := []dhcpv4.Modifier{
		dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(PXEVendorClass)),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(1472)),
	}
	ack, err := p.stage(StagePXEDHCP, i, func() (*dhcpv4.DHCPv4, error) { return p.exchange(ctx, mac, pxeOpts) })
	if err != nil {
		return nil, err
	}
	if ack.BootFileName != p.cfg.BootFile {
		return nil, p.fail(StagePXEDHCP, i, fmt.Errorf("ACK names boot file %q, want %q", ack.BootFileName, p.cfg.BootFile))
	}
	server := ack.ServerIPAddr
	if server == nil || server.IsUnspecified() {
		server = ack.ServerIdentifier()
	}
	if _, err := p.stage(StageTFTP, i, func() (*dhcpv4.DHCPv4, error) {
		return nil, p.tftp(ctx, server, ack.BootFileName, i)
	}); err != nil {
		return nil, err
	}
	ipxeOpts := append(pxeOpts[:len(pxeOpts):len(pxeOpts)],
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(175), ipxeOption175)),
		dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE")))
	ack2, err := p.stage(StageIPXEDHCP, i, func() (*dhcpv4.DHCPv4, error) { return p.exchange(ctx, mac, ipxeOpts) })
	if err != nil {
		return nil, err
	}
	if ack2.BootFileName != p.cfg.BootScriptURL {
		return nil, p.fail(StageIPXEDHCP, i, fmt.Errorf("ACK names %q, want %q", ack2.BootFileName, p.cfg.BootScriptURL))
	}
	if !ack2.YourIPAddr.Equal(ack.YourIPAddr) {
		return nil, p.fail(StageIPXEDHCP, i, fmt.Errorf("iPXE got %s, the PXE ROM %s", ack2.YourIPAddr, ack.YourIPAddr))
	}
	client := MachineClient(ack2.YourIPAddr, p.cfg.HTTPTimeout)
	if _, err := p.stage(StageBootScript, i, func() (*dhcpv4.DHCPv4, error) {
		status, n, _, err := Do(ctx, client, p.cfg.HTTPTimeout, http.MethodGet, ack2.BootFileName, nil, nil)
		if err == nil && (status != http.StatusOK || n == 0) {
			err = fmt.Errorf("status %d, %d bytes", status, n)
		}
		return nil, err
	}); err != nil {
		client.CloseIdleConnections()
		return nil, err
	}
	return client, nil
}

// Installed starts the last check of machine i in the background: its PXE
// ROM DHCPs again RebootDelay after installation and must get no OFFER
// within IgnoreWait (dnsmasq ignores installed MACs). Result waits for it. It is
// Config.Done's shape.
func (p *PXE) Installed(ctx context.Context, i int) {
	mac, err := net.ParseMAC(MACs(p.cfg.Prefix, i)[0])
	if err != nil {
		return
	}
	p.ignored.Add(1)
	go func() {
		defer p.ignored.Done()
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.cfg.RebootDelay):
		}
		start := time.Now()
		d, err := dhcpv4.NewDiscovery(mac, dhcpv4.WithBroadcast(true),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier(PXEVendorClass)),
			dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
		if err == nil {
			var offer *dhcpv4.DHCPv4
			offer, err = p.roundTrip(ctx, d, dhcpv4.MessageTypeOffer, p.cfg.IgnoreWait)
			switch {
			case err == nil:
				p.answered.Add(1)
				err = fmt.Errorf("installed machine offered %s", offer.YourIPAddr)
			case errors.Is(err, errNoReply):
				err = nil
			}
		}
		p.rec.add(Event{Machine: i, Route: StageIgnored, Err: err, OK: err == nil, Duration: time.Since(start)})
	}()
}

// stage runs fn as one timed stage of machine i.
func (p *PXE) stage(name string, i int, fn func() (*dhcpv4.DHCPv4, error)) (*dhcpv4.DHCPv4, error) {
	start := time.Now()
	m, err := fn()
	p.rec.add(Event{Machine: i, Route: name, Err: err, OK: err == nil, Duration: time.Since(start)})
	if err != nil {
		return nil, fmt.Errorf("%s machine %d: %w", name, i, err)
	}
	return m, nil
}

// fail records a check that failed after the stage's exchange succeeded.
func (p *PXE) fail(name string, i int, err error) error {
	p.rec.add(Event{Machine: i, Route: name + " answer", Err: err})
	return fmt.Errorf("%s machine %d: %w", name, i, err)
}

var errNoReply = errors.New("no reply")

// exchange is DISCOVER -> OFFER -> REQUEST -> ACK (RFC 2131 section 3.1)
// with opts in both requests, as PXE ROMs and iPXE send them.
func (p *PXE) exchange(ctx context.Context, mac net.HardwareAddr, opts []dhcpv4.Modifier) (*dhcpv4.DHCPv4, error) {
	d, err := dhcpv4.NewDiscovery(mac, opts...)
	if err != nil {
		return nil, err
	}
	offer, err := p.retry(ctx, d, dhcpv4.MessageTypeOffer)
	if err != nil {
		return nil, fmt.Errorf("DISCOVER: %w", err)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, opts...)
	if err != nil {
		return nil, err
	}
	ack, err := p.retry(ctx, req, dhcpv4.MessageTypeAck)
	if err != nil {
		return nil, fmt.Errorf("REQUEST: %w", err)
	}
	return ack, nil
}

// retry sends m up to Tries times, Timeout apart, until a reply of type
// want arrives.
func (p *PXE) retry(ctx context.Context, m *dhcpv4.DHCPv4, want dhcpv4.MessageType) (*dhcpv4.DHCPv4, error) {
	var err error
	for try := 0; try < p.cfg.Tries; try++ {
		if try > 0 {
			p.retries.Add(1)
		}
		var r *dhcpv4.DHCPv4
		r, err = p.roundTrip(ctx, m, want, p.cfg.Timeout)
		if err == nil || !errors.Is(err, errNoReply) {
			return r, err
		}
	}
	return nil, fmt.Errorf("%w after %d tries", err, p.cfg.Tries)
}

// roundTrip broadcasts m and waits up to wait for a reply of type want
// with m's xid; a NAK ends the wait with an error.
func (p *PXE) roundTrip(ctx context.Context, m *dhcpv4.DHCPv4, want dhcpv4.MessageType, wait time.Duration) (*dhcpv4.DHCPv4, error) {
	ch := make(chan *dhcpv4.DHCPv4, 4)
	p.mu.Lock()
	if _, busy := p.waiters[m.TransactionID]; busy {
		p.mu.Unlock()
		return nil, errors.New("transaction ID in use")
	}
	p.waiters[m.TransactionID] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.waiters, m.TransactionID)
		p.mu.Unlock()
	}()
	if _, err := p.conn.WriteToUDP(m.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err != nil {
		return nil, err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
			return nil, errNoReply
		case r := <-ch:
			switch r.MessageType() {
			case want:
				return r, nil
			case dhcpv4.MessageTypeNak:
				return nil, fmt.Errorf("NAK: %s", r.Message())
			}
		}
	}
}

// tftp downloads name from server with busybox's TFTP client (RFC 1350,
// block size option of RFC 2348 at 1432 bytes, what iPXE's and many PXE
// ROMs' UNDI stacks ask for) and checks that something arrived.
func (p *PXE) tftp(ctx context.Context, server net.IP, name string, i int) error {
	out := filepath.Join(p.cfg.TFTPDir, fmt.Sprintf("boot-%d", i))
	defer os.Remove(out)
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, "busybox", "tftp", "-g", "-b", "1432", "-r", name, "-l", out, server.String())
	msg, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("busybox tftp: %w: %s", err, strings.TrimSpace(string(msg)))
	}
	fi, err := os.Stat(out)
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		return errors.New("empty download")
	}
	return nil
}

// MachineClient is an HTTP client whose connections leave from addr (the
// machine's leased address, which the caller's namespace must hold or
// route locally), so mayu's machine authentication sees what it would see
// of a real machine.
func MachineClient(addr net.IP, timeout time.Duration) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: addr}, Timeout: timeout}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: d.DialContext, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second,
	}}
}
