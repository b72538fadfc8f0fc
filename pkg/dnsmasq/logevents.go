package dnsmasq

import (
	"net"
	"path/filepath"
	"regexp"
	"strings"

	"mayu/pkg/host"
	"mayu/pkg/timeline"
)

// LogParser turns the lines dnsmasq prints (with --log-facility=- and
// --log-dhcp, as the supervisor runs it) into timeline events. The formats
// are dnsmasq's log messages (src/rfc2131.c log_packet, src/tftp.c), as
// dnsmasq 2.90 prints them:
//
//	dnsmasq-dhcp[PID]: XID DHCPDISCOVER(IFACE) [REQUESTED-IP] MAC [ignored|REASON]
//	dnsmasq-dhcp[PID]: XID DHCPOFFER(IFACE) IP MAC [HOSTNAME]
//	dnsmasq-dhcp[PID]: XID DHCPREQUEST(IFACE) IP MAC [ignored|REASON]
//	dnsmasq-dhcp[PID]: XID DHCPACK(IFACE) IP MAC [HOSTNAME]
//	dnsmasq-dhcp[PID]: XID DHCPNAK(IFACE) IP MAC REASON
//	dnsmasq-tftp[PID]: sent PATH to IP
//	dnsmasq-tftp[PID]: failed sending PATH to IP
//	dnsmasq-tftp[PID]: file PATH not found for IP      (older: "file PATH not found")
//
// XID (the transaction ID) is printed only with --log-dhcp; both forms
// parse. Other lines (the --log-dhcp details, DNS, start-up) are not
// events.
type LogParser struct {
	// TFTPRoot, when set, is cut from the paths of TFTP lines, so File is
	// the name the client asked for ("undionly.kpxe"); else File is the
	// path's last element.
	TFTPRoot string
}

var (
	logPrefix = regexp.MustCompile(`^dnsmasq(-[a-z]+)?\[\d+\]: `)
	dhcpLine  = regexp.MustCompile(`^(?:\d+ )?(DHCP[A-Z]+)\(([^)]*)\) (.*)$`)
	tftpSent  = regexp.MustCompile(`^sent (.+) to (\S+)$`)
	tftpFail  = regexp.MustCompile(`^failed sending (.+) to (\S+)$`)
	tftpNone  = regexp.MustCompile(`^file (.+) not found(?: for (\S+))?$`)
)

// Parse returns the event a line records, or false for a line that records
// none. The event has no time, serial or sequence number: Publish sets
// them.
func (p LogParser) Parse(line string) (timeline.Event, bool) {
	line = strings.TrimRight(line, "\r\n ")
	loc := logPrefix.FindStringSubmatchIndex(line)
	if loc == nil {
		return timeline.Event{}, false
	}
	facility := ""
	if loc[2] >= 0 {
		facility = line[loc[2]+1 : loc[3]]
	}
	msg := line[loc[1]:]
	switch facility {
	case "dhcp":
		return parseDHCP(msg)
	case "tftp":
		return p.parseTFTP(msg)
	}
	return timeline.Event{}, false
}

func parseDHCP(msg string) (timeline.Event, bool) {
	m := dhcpLine.FindStringSubmatch(msg)
	if m == nil {
		return timeline.Event{}, false
	}
	e := timeline.Event{Interface: m[2]}
	fields := strings.Fields(m[3])
	at := -1
	for i, f := range fields {
		if mac, err := host.NormalizeMAC(f); err == nil {
			e.MAC, at = mac, i
			break
		}
	}
	if at < 0 {
		return timeline.Event{}, false // not an Ethernet client: no MAC to key it by
	}
	for _, f := range fields[:at] {
		if ip := net.ParseIP(f); ip != nil {
			e.IP = ip.String()
		}
	}
	extra := strings.Join(fields[at+1:], " ")
	switch m[1] {
	case "DHCPDISCOVER", "DHCPREQUEST":
		e.Kind = timeline.DHCPDiscover
		if m[1] == "DHCPREQUEST" {
			e.Kind = timeline.DHCPRequest
		}
		if extra != "" {
			// dnsmasq does not answer: "ignored" (a hosts-file ignore),
			// "no address available", "wrong network", ...
			e.Kind, e.Reason = timeline.DHCPIgnored, extra
		}
	case "DHCPOFFER":
		e.Kind = timeline.DHCPOffer
	case "DHCPACK":
		e.Kind = timeline.DHCPAck
	case "DHCPNAK":
		e.Kind, e.Reason = timeline.DHCPNak, extra
	default: // DHCPINFORM, DHCPRELEASE, DHCPDECLINE: not steps of a boot
		return timeline.Event{}, false
	}
	return e, true
}

func (p LogParser) parseTFTP(msg string) (timeline.Event, bool) {
	if m := tftpSent.FindStringSubmatch(msg); m != nil {
		return timeline.Event{Kind: timeline.TFTPSent, File: p.file(m[1]), IP: m[2]}, true
	}
	if m := tftpFail.FindStringSubmatch(msg); m != nil {
		return timeline.Event{Kind: timeline.TFTPFailed, File: p.file(m[1]), IP: m[2], Reason: "transfer failed"}, true
	}
	if m := tftpNone.FindStringSubmatch(msg); m != nil {
		return timeline.Event{Kind: timeline.TFTPFailed, File: p.file(m[1]), IP: m[2], Reason: "file not found"}, true
	}
	return timeline.Event{}, false
}

func (p LogParser) file(path string) string {
	if p.TFTPRoot != "" {
		if rel, err := filepath.Rel(p.TFTPRoot, path); err == nil && !strings.HasPrefix(rel, "..") {
			return rel
		}
	}
	return filepath.Base(path)
}

// isDHCPDetail tells a --log-dhcp detail line ("XID tags: ...", "XID sent
// size: ..."), which is logged at debug level so the packet lines stand out.
func isDHCPDetail(line string) bool {
	loc := logPrefix.FindStringIndex(line)
	if loc == nil || !strings.HasPrefix(line, "dnsmasq-dhcp[") {
		return false
	}
	msg := line[loc[1]:]
	sp := strings.IndexByte(msg, ' ')
	if sp <= 0 || strings.Trim(msg[:sp], "0123456789") != "" {
		return false
	}
	return !strings.HasPrefix(msg[sp+1:], "DHCP")
}
