package dnsmasq

import (
	"bufio"
	"log/slog"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/timeline"
)

// testdata/log-dhcp-2.90.log is the output of a real dnsmasq 2.90 run with
// --log-facility=- --log-dhcp in a network namespace (tftp-root
// /tmp/tmp.zX5KDz6CR0/tftp, hosts file "08:00:27:aa:bb:02,ignore"): busybox
// udhcpc as a PXE client (…:01) got a lease, tftp-hpa fetched
// undionly.kpxe and asked for missing.kpxe, the ignored MAC (…:02) sent two
// DISCOVERs, and a client (…:03) asked for 10.9.9.9 and got another
// address.
func TestLogParserOnARealRun(t *testing.T) {
	f, err := os.Open("testdata/log-dhcp-2.90.log")
	require.NoError(t, err)
	defer f.Close()
	p := LogParser{TFTPRoot: "/tmp/tmp.zX5KDz6CR0/tftp"}
	var got []timeline.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if e, ok := p.Parse(sc.Text()); ok {
			got = append(got, e)
		}
	}
	require.NoError(t, sc.Err())

	m1, m2, m3 := "08:00:27:aa:bb:01", "08:00:27:aa:bb:02", "08:00:27:aa:bb:03"
	want := []timeline.Event{
		{Kind: timeline.DHCPDiscover, MAC: m1, Interface: "br0"},
		{Kind: timeline.DHCPOffer, MAC: m1, IP: "192.168.7.138", Interface: "br0"},
		{Kind: timeline.DHCPDiscover, MAC: m1, Interface: "br0"},
		{Kind: timeline.DHCPOffer, MAC: m1, IP: "192.168.7.138", Interface: "br0"},
		{Kind: timeline.DHCPRequest, MAC: m1, IP: "192.168.7.138", Interface: "br0"},
		{Kind: timeline.DHCPAck, MAC: m1, IP: "192.168.7.138", Interface: "br0"},
		{Kind: timeline.TFTPSent, File: "undionly.kpxe", IP: "192.168.7.50"},
		{Kind: timeline.TFTPFailed, File: "missing.kpxe", IP: "192.168.7.50", Reason: "file not found"},
		{Kind: timeline.DHCPIgnored, MAC: m2, Interface: "br0", Reason: "ignored"},
		{Kind: timeline.DHCPIgnored, MAC: m2, Interface: "br0", Reason: "ignored"},
		{Kind: timeline.DHCPDiscover, MAC: m3, IP: "10.9.9.9", Interface: "br0"},
		{Kind: timeline.DHCPOffer, MAC: m3, IP: "192.168.7.140", Interface: "br0"},
		{Kind: timeline.DHCPDiscover, MAC: m3, IP: "10.9.9.9", Interface: "br0"},
		{Kind: timeline.DHCPOffer, MAC: m3, IP: "192.168.7.140", Interface: "br0"},
		{Kind: timeline.DHCPRequest, MAC: m3, IP: "192.168.7.140", Interface: "br0"},
		{Kind: timeline.DHCPAck, MAC: m3, IP: "192.168.7.140", Interface: "br0"},
	}
	assert.Equal(t, want, got)
}

// Lines of forms the real run above did not produce, written as dnsmasq's
// sources print them (without --log-dhcp there is no transaction ID).
func TestLogParserOtherForms(t *testing.T) {
	p := LogParser{}
	cases := []struct {
		line string
		want timeline.Event
		ok   bool
	}{
		{"dnsmasq-dhcp[7]: DHCPACK(eth1) 192.168.2.120 08:00:27:8E:15:8A core-1", timeline.Event{Kind: timeline.DHCPAck, MAC: "08:00:27:8e:15:8a", IP: "192.168.2.120", Interface: "eth1"}, true},
		{"dnsmasq-dhcp[7]: 12 DHCPNAK(eth1) 10.0.0.9 08:00:27:8e:15:8a wrong network", timeline.Event{Kind: timeline.DHCPNak, MAC: "08:00:27:8e:15:8a", IP: "10.0.0.9", Interface: "eth1", Reason: "wrong network"}, true},
		{"dnsmasq-dhcp[7]: 12 DHCPDISCOVER(eth1) 08:00:27:8e:15:8a no address available", timeline.Event{Kind: timeline.DHCPIgnored, MAC: "08:00:27:8e:15:8a", Interface: "eth1", Reason: "no address available"}, true},
		{"dnsmasq-tftp[7]: failed sending /srv/tftp/ipxe.efi to 192.168.2.101", timeline.Event{Kind: timeline.TFTPFailed, File: "ipxe.efi", IP: "192.168.2.101", Reason: "transfer failed"}, true},
		{"dnsmasq-tftp[7]: file /srv/tftp/x not found", timeline.Event{Kind: timeline.TFTPFailed, File: "x", Reason: "file not found"}, true},
		{"dnsmasq-dhcp[7]: 12 DHCPRELEASE(eth1) 192.168.2.120 08:00:27:8e:15:8a", timeline.Event{}, false},
		{"dnsmasq-dhcp[7]: 12 DHCPDISCOVER(ib0) 20:00:00:00:00:00:00:00:00:00", timeline.Event{}, false},
		{"dnsmasq-dhcp[7]: 12 tags: pxe, br0", timeline.Event{}, false},
		{"dnsmasq[7]: started, version 2.90 cachesize 150", timeline.Event{}, false},
		{"something else: sent /a to b", timeline.Event{}, false},
		{"", timeline.Event{}, false},
	}
	for _, c := range cases {
		got, ok := p.Parse(c.line)
		assert.Equal(t, c.ok, ok, c.line)
		assert.Equal(t, c.want, got, c.line)
	}
}

func TestDHCPDetailLinesGoToDebug(t *testing.T) {
	assert.True(t, isDHCPDetail("dnsmasq-dhcp[1]: 2204089210 sent size:  4 option: 54 server-identifier  192.168.7.2"))
	assert.True(t, isDHCPDetail("dnsmasq-dhcp[1]: 2204089210 tags: pxe, br0"))
	assert.False(t, isDHCPDetail("dnsmasq-dhcp[1]: 2204089210 DHCPACK(br0) 192.168.7.138 08:00:27:aa:bb:01 "))
	assert.False(t, isDHCPDetail("dnsmasq-dhcp[1]: DHCP, sockets bound exclusively to interface br0"))
	assert.False(t, isDHCPDetail("dnsmasq-tftp[1]: sent /x to 1.2.3.4"))

	// outputLog hands the events to OnEvent and still logs every line.
	sink := &logSink{}
	var got []timeline.Event
	o := &outputLog{log: slog.New(sink), tail: lastLines{n: 2}, onEvent: func(e timeline.Event) { got = append(got, e) }}
	_, _ = o.Write([]byte("dnsmasq-dhcp[1]: 9 DHCPDISCOVER(br0) 08:00:27:aa:bb:01 \ndnsmasq-dhcp[1]: 9 tags: br0\n"))
	require.Len(t, got, 1)
	assert.Equal(t, timeline.DHCPDiscover, got[0].Kind)
	assert.Equal(t, []slog.Level{slog.LevelInfo, slog.LevelDebug}, sink.levels)
}
