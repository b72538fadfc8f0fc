// Package timeline keeps what happened to each machine while it booted: the
// DHCP exchanges and TFTP transfers dnsmasq logged for its MACs, every HTTP
// fetch it made, its state changes with their commits and the renders that
// failed for it. Everything is held in memory, bounded (a ring per host, a
// bounded number of hosts, a bounded side table for MACs no host claims
// yet), and published on a bus whose subscribers never slow the daemon.
//
// The state changes are also in git (the cluster directory's commits); the
// timeline is the operator's short-term view of a boot, lost on restart.
package timeline

import "time"

// Kind names what an Event records. Its values are interface: they are the
// "kind" of the JSON form, which mayuctl, the dashboard and scripts match.
type Kind string

// The kinds of events. DHCP and TFTP events come from dnsmasq's log
// (--log-dhcp; see dnsmasq(8), "--log-dhcp" and "--enable-tftp"); HTTP events
// from mayu's own routes; state and render events from the provisioner.
const (
	// DHCPDiscover: a DHCPDISCOVER from MAC (dnsmasq "DHCPDISCOVER(iface) mac").
	DHCPDiscover Kind = "dhcp-discover"
	// DHCPOffer: dnsmasq offered IP to MAC.
	DHCPOffer Kind = "dhcp-offer"
	// DHCPRequest: a DHCPREQUEST from MAC for IP.
	DHCPRequest Kind = "dhcp-request"
	// DHCPAck: dnsmasq acknowledged IP to MAC.
	DHCPAck Kind = "dhcp-ack"
	// DHCPNak: dnsmasq refused MAC's request; Reason holds dnsmasq's words.
	DHCPNak Kind = "dhcp-nak"
	// DHCPIgnored: dnsmasq ignored MAC's packet; Reason holds dnsmasq's
	// words ("ignored" for a MAC the hosts file marks ignore, "no address
	// available", ...).
	DHCPIgnored Kind = "dhcp-ignored"
	// TFTPSent: dnsmasq sent File to IP.
	TFTPSent Kind = "tftp-sent"
	// TFTPFailed: a TFTP transfer of File to IP failed (file not found,
	// timeout, refused); Reason holds dnsmasq's words.
	TFTPFailed Kind = "tftp-failed"
	// HTTP: the machine fetched Route with Method; Status, Bytes and
	// DurationSeconds describe the answer.
	HTTP Kind = "http"
	// State: the machine's record moved From one state To another (equal
	// for a step that kept the state, such as a boot completed again) in
	// Commit, with Message.
	State Kind = "state"
	// RenderFailed: a config for the machine could not be rendered; File
	// names the template or config ("first-stage", "final"), Reason why.
	RenderFailed Kind = "render-failed"
)

// Kinds lists every kind, in the order a boot meets them.
var Kinds = []Kind{DHCPDiscover, DHCPOffer, DHCPRequest, DHCPAck, DHCPNak, DHCPIgnored,
	TFTPSent, TFTPFailed, HTTP, State, RenderFailed}

// IsDHCP reports whether k is one of the dhcp-* kinds.
func (k Kind) IsDHCP() bool {
	switch k {
	case DHCPDiscover, DHCPOffer, DHCPRequest, DHCPAck, DHCPNak, DHCPIgnored:
		return true
	}
	return false
}

// IsTFTP reports whether k is one of the tftp-* kinds.
func (k Kind) IsTFTP() bool { return k == TFTPSent || k == TFTPFailed }

// Event is one thing that happened to a machine. Its JSON form is the
// interface of GET /admin/host/<serial>/events, GET /admin/events and
// mayuctl events:
//
//	{
//	  "seq": 42,                           // order of publication, from 1; SSE id
//	  "time": "2026-11-29T22:50:01.5Z",    // RFC 3339, UTC
//	  "kind": "dhcp-ack",                  // one of Kinds
//	  "serial": "0800278e158a-0",          // empty until a host claims the MAC
//	  "mac": "08:00:27:8e:15:8a",          // lower case, colons
//	  "ip": "192.168.2.120",
//	  "interface": "eth1",                 // dhcp-*: dnsmasq's interface
//	  "file": "undionly.kpxe",             // tftp-*, render-failed
//	  "method": "GET", "route": "/first-stage-script/:serial",
//	  "status": 200, "bytes": 1234, "duration_seconds": 0.003,   // http
//	  "from": "configured", "to": "installing",                  // state
//	  "commit": "3f2a…", "message": "updated host state to installing",
//	  "principal": "admin:ops",                                   // who made the commit
//	  "reason": "no address available"     // dhcp-nak/ignored, tftp-failed, render-failed
//	}
//
// Fields a kind does not use are left out; a zero status, byte count or
// duration is left out too.
type Event struct {
	Seq             uint64    `json:"seq"`
	Time            time.Time `json:"time"`
	Kind            Kind      `json:"kind"`
	Serial          string    `json:"serial,omitempty"`
	MAC             string    `json:"mac,omitempty"`
	IP              string    `json:"ip,omitempty"`
	Interface       string    `json:"interface,omitempty"`
	File            string    `json:"file,omitempty"`
	Method          string    `json:"method,omitempty"`
	Route           string    `json:"route,omitempty"`
	Status          int       `json:"status,omitempty"`
	Bytes           int64     `json:"bytes,omitempty"`
	DurationSeconds float64   `json:"duration_seconds,omitempty"`
	From            string    `json:"from,omitempty"`
	To              string    `json:"to,omitempty"`
	Commit          string    `json:"commit,omitempty"`
	Message         string    `json:"message,omitempty"`
	Principal       string    `json:"principal,omitempty"`
	Reason          string    `json:"reason,omitempty"`
}
