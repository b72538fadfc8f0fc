//go:build nettest

package netns

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/dnsmasq"
	"mayu/pkg/proctest"
	"mayu/pkg/proctest/netlab"
	"mayu/pkg/timeline"
)

// A machine of its own namespace gets its lease from mayu's real dnsmasq,
// fetches iPXE over TFTP (and a file that is not there), walks the first
// stage over HTTP and is marked installed; its next PXE request is
// ignored. Its timeline holds all of it, the DHCP and TFTP lines of dnsmasq
// attached to its serial once its record claims its MAC, and the live
// stream shows another machine's DHCP exchange as it happens.
func TestNetTimeline(t *testing.T) {
	proctest.RequireFile(t, dnsmasq.DefaultBinary, "dnsmasq-base")
	l := netlab.New(t)
	m := startMayu(t, l)
	m.waitAnswers(t)
	m.waitDnsmasq(t, 0)

	// The live stream of every machine's events, opened before anything
	// happens.
	stream := openStream(t, m)

	a := l.NewMachine(t, "02:4d:41:59:57:01")
	lease := a.DHCP(t)
	require.Equal(t, "undionly.kpxe", lease["boot_file"])
	kpxe := filepath.Join(l.Dir, "kpxe-timeline")
	l.Run(t, "ip", "netns", "exec", a.NS, "tftp", "-m", "binary", netlab.ProvAddr, "-c", "get", "undionly.kpxe", kpxe)
	// tftp-hpa reports a missing file on stderr and still exits 0.
	l.Run(t, "ip", "netns", "exec", a.NS, "tftp", "-m", "binary", netlab.ProvAddr, "-c", "get", "no-such.kpxe", filepath.Join(l.Dir, "none"))

	const serial = "net-timeline-a"
	do := func(method, path, body string) {
		t.Helper()
		code, out := proctest.Do(t, a.HTTPClient(), method, m.Base+path, body)
		require.Less(t, code, 300, "%s %s: %s", method, path, out)
	}
	do("GET", "/ipxebootscript", "")
	do("GET", "/first-stage-script/"+serial, "")
	do("POST", "/final-cloud-config.yaml", fmt.Sprintf(`{"Serial":%q,"NetDevs":[{"Name":"eth0","MacAddress":%q}],"ConnectedNIC":"eth0"}`, serial, a.MAC))
	do("PUT", "/admin/host/"+serial+"/set_installed", "")

	// Installed: DHCP ignores the machine (the hosts file changes, then
	// dnsmasq re-reads it).
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := exec.CommandContext(ctx, "ip", "netns", "exec", a.NS, "busybox", "udhcpc", "-B", "-i", "eth0", "-f", "-q", "-n",
			"-t", "2", "-T", "1", "-s", "/bin/true", "-V", netlab.PXEVendor).Run()
		return err != nil
	}, 30*time.Second, 100*time.Millisecond, "the installed machine still gets a lease")

	var events []timeline.Event
	has := func(k timeline.Kind, match func(timeline.Event) bool) bool {
		for _, e := range events {
			if e.Kind == k && (match == nil || match(e)) {
				return true
			}
		}
		return false
	}
	ignored := func(e timeline.Event) bool { return e.Reason == "ignored" && e.MAC == a.MAC }
	require.Eventually(t, func() bool {
		code, body := m.Do("GET", "/admin/host/"+serial+"/events", "")
		require.Equal(t, 200, code, body)
		events = nil
		require.NoError(t, json.Unmarshal([]byte(body), &events))
		return has(timeline.DHCPIgnored, ignored)
	}, 30*time.Second, 100*time.Millisecond, "no dhcp-ignored event for the installed machine")

	for _, k := range []timeline.Kind{timeline.DHCPDiscover, timeline.DHCPOffer, timeline.DHCPRequest, timeline.DHCPAck} {
		assert.True(t, has(k, func(e timeline.Event) bool { return e.MAC == a.MAC }), "no %s of %s", k, a.MAC)
	}
	assert.True(t, has(timeline.DHCPAck, func(e timeline.Event) bool { return e.IP == a.Addr && e.Interface == "br0" }))
	assert.True(t, has(timeline.TFTPSent, func(e timeline.Event) bool {
		return e.File == "undionly.kpxe" && e.IP == a.Addr && e.MAC == a.MAC
	}), "no tftp-sent of undionly.kpxe to %s: %+v", a.Addr, events)
	assert.True(t, has(timeline.TFTPFailed, func(e timeline.Event) bool { return e.File == "no-such.kpxe" && e.Reason == "file not found" }))
	for _, route := range []string{"/ipxebootscript", "/first-stage-script/:serial", "/final-cloud-config.yaml", "/admin/host/:serial/set_installed"} {
		assert.True(t, has(timeline.HTTP, func(e timeline.Event) bool { return e.Route == route && e.Status < 300 && e.IP == a.Addr }), "no http %s", route)
	}
	assert.True(t, has(timeline.State, func(e timeline.Event) bool { return e.To == "installing" && e.Commit != "" }), "no state installing with its commit")
	assert.True(t, has(timeline.State, func(e timeline.Event) bool { return e.To == "installed" && e.Principal == "machine:"+serial }))
	for _, e := range events {
		assert.Equal(t, serial, e.Serial)
	}

	code, body := m.Do("GET", "/admin/host/"+serial+"/explain", "")
	require.Equal(t, 200, code, body)
	var x timeline.Explanation
	require.NoError(t, json.Unmarshal([]byte(body), &x))
	assert.Equal(t, timeline.StepInstalled, x.Step)
	assert.Contains(t, x.Cause, "DHCP ignores this MAC: host is installed")

	// The stream saw a's events as they were published: its TFTP transfer
	// before any record claimed its MAC (no serial yet, the MAC from its
	// DHCP ack). Another machine's DHCP reaches it as it happens.
	stream.await(t, func(e timeline.Event) bool { return e.Kind == timeline.TFTPSent && e.MAC == a.MAC && e.Serial == "" })
	b := l.NewMachine(t, "02:4d:41:59:57:02")
	b.DHCP(t)
	stream.await(t, func(e timeline.Event) bool { return e.Kind == timeline.DHCPAck && e.MAC == b.MAC && e.Serial == "" })

	// Stopping mayu ends the stream with its "end" message.
	require.NoError(t, m.Stop())
	select {
	case <-stream.ended:
		assert.True(t, stream.sawEnd, "the stream closed without its end message")
	case <-time.After(30 * time.Second):
		t.Fatal("the event stream did not end when mayu stopped")
	}
}

// eventStream reads GET /admin/events as a browser's EventSource would.
type eventStream struct {
	events chan timeline.Event
	ended  chan struct{}
	sawEnd bool
}

func openStream(t *testing.T, m *mayuProc) *eventStream {
	t.Helper()
	req, err := http.NewRequest("GET", m.Base+"/admin/events", nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+m.Token)
	c := *m.Client
	c.Timeout = 0 // a stream lasts
	resp, err := c.Do(req)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	s := &eventStream{events: make(chan timeline.Event, 1000), ended: make(chan struct{})}
	t.Cleanup(func() { resp.Body.Close() })
	go func() {
		defer close(s.ended)
		sc := bufio.NewScanner(resp.Body)
		var event string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "end":
				s.sawEnd = true
			case strings.HasPrefix(line, "data: ") && event == "":
				var e timeline.Event
				if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &e) == nil {
					select {
					case s.events <- e:
					default:
					}
				}
			case line == "":
				event = ""
			}
		}
		_, _ = io.Copy(io.Discard, resp.Body)
	}()
	return s
}

// await waits (30s at most) for an event of the stream that match accepts.
func (s *eventStream) await(t *testing.T, match func(timeline.Event) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case e := <-s.events:
			if match(e) {
				return
			}
		case <-deadline:
			t.Fatal("the awaited event did not come on the stream")
		}
	}
}
