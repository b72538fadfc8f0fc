package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/store"
	"mayu/pkg/store/gitdir"
	"mayu/pkg/timeline"
)

// withTimeline gives the env's provisioner a timeline that finds hosts
// through it.
func withTimeline(tl *timeline.Timeline) func(*envConfig) {
	return func(c *envConfig) { c.prov.Timeline = tl }
}

func newTimelineEnv(t *testing.T, opts ...func(*envConfig)) (*env, *timeline.Timeline) {
	tl := timeline.New(timeline.Config{})
	e := newEnv(t, append([]func(*envConfig){withTimeline(tl)}, opts...)...)
	tl.SetResolve(e.srv.prov.HostOf)
	return e, tl
}

func decodeEvents(t *testing.T, body string) []timeline.Event {
	t.Helper()
	var es []timeline.Event
	require.NoError(t, json.Unmarshal([]byte(body), &es), body)
	return es
}

func kinds(es []timeline.Event) []string {
	var out []string
	for _, e := range es {
		k := string(e.Kind)
		if e.Kind == timeline.HTTP {
			k += " " + e.Method + " " + e.Route + fmt.Sprint(" ", e.Status)
		}
		out = append(out, k)
	}
	return out
}

func TestHostEventsRecordAMachinesBoot(t *testing.T) {
	e, tl := newTimelineEnv(t)
	const serial, mac = "0800278e158a-0", "08:00:27:8e:15:8a"
	// What dnsmasq logs of the machine before it has a record.
	tl.Publish(timeline.Event{Kind: timeline.DHCPAck, MAC: mac, IP: "192.0.2.1"})
	tl.Publish(timeline.Event{Kind: timeline.TFTPSent, IP: "192.0.2.1", File: "undionly.kpxe"})

	machine := func(method, path, body string) int {
		return e.do(method, path, body, "Authorization", "").Code
	}
	require.Equal(t, 200, machine("GET", "/ipxebootscript", ""))
	require.Equal(t, 200, machine("GET", "/images/vmlinuz", ""))
	require.Equal(t, 200, machine("GET", "/first-stage-script/"+serial, ""))
	require.Equal(t, 200, machine("POST", "/final-cloud-config.yaml", facts))
	require.Equal(t, 200, machine("GET", "/images/"+serial+"/install_image.bin.bz2", ""))
	require.Equal(t, 202, machine("PUT", "/admin/host/"+serial+"/set_installed", "{}"))
	require.Equal(t, 200, e.do("GET", "/admin/hosts", "").Code, "an operator's read is not the machine's")
	tl.Reattribute() // as the store's notification does

	rec := e.do("GET", "/admin/host/"+serial+"/events", "")
	require.Equal(t, 200, rec.Code, rec.Body.String())
	assert.Equal(t, "application/json", strings.Split(rec.Header().Get("Content-Type"), ";")[0])
	got := decodeEvents(t, rec.Body.String())
	assert.Equal(t, []string{
		"dhcp-ack", "tftp-sent",
		"http GET /ipxebootscript 200", "http GET /images/vmlinuz 200",
		"state", "http GET /first-stage-script/:serial 200",
		"state", "http POST /final-cloud-config.yaml 200",
		"http GET /images/:serial/install_image.bin.bz2 200",
		"state", "http PUT /admin/host/:serial/set_installed 202",
	}, kinds(got))
	for _, ev := range got {
		assert.Equal(t, serial, ev.Serial)
	}
	img := got[8]
	assert.Equal(t, int64(len("0123456789abcdefghij")), img.Bytes)
	assert.Greater(t, img.DurationSeconds, 0.0)
	assert.Equal(t, mac, img.MAC, "the address's MAC, from the DHCP ack")
	assert.Equal(t, "installed", got[9].To)
	assert.Empty(t, got[9].Commit, "the memory store keeps no history")

	x := e.do("GET", "/admin/host/"+serial+"/explain", "")
	require.Equal(t, 200, x.Code, x.Body.String())
	var ex timeline.Explanation
	require.NoError(t, json.Unmarshal(x.Body.Bytes(), &ex))
	assert.Equal(t, timeline.StepInstalled, ex.Step)
	assert.True(t, ex.Progressing)

	assert.Equal(t, "[]\n", e.do("GET", "/admin/host/unknown/events", "").Body.String())
	assert.Equal(t, 404, e.do("GET", "/admin/host/unknown/explain", "").Code)
	assert.Equal(t, 400, e.do("GET", "/admin/host/..x/events", "").Code)
	assert.Equal(t, 404, e.do("GET", "/admin/host/"+serial+"/history", "").Code, "the memory store keeps no history")
	for _, p := range []string{"/admin/events", "/admin/host/" + serial + "/events", "/admin/host/" + serial + "/explain", "/admin/host/" + serial + "/history"} {
		assert.Equal(t, 401, e.do("GET", p, "", "Authorization", "").Code, p)
		assert.NotEqual(t, 401, e.do("GET", p, "", "Authorization", "Bearer "+e.tokens.readOnly).Code, "a read-only credential reads "+p)
	}
}

func TestRenderFailuresAndMissingImagesAreExplained(t *testing.T) {
	e, _ := newTimelineEnv(t)
	const serial = "0800278e158a-0"
	require.Equal(t, 200, e.do("GET", "/first-stage-script/"+serial, "").Code)
	e.render.err = fmt.Errorf(`template: last_stage: map has no entry for key "x"`)
	require.Equal(t, 500, e.do("POST", "/final-cloud-config.yaml", facts).Code)
	var ex timeline.Explanation
	require.NoError(t, json.Unmarshal(e.do("GET", "/admin/host/"+serial+"/explain", "").Body.Bytes(), &ex))
	assert.Equal(t, `final config render failed: template: last_stage: map has no entry for key "x"`, ex.Cause)
	assert.False(t, ex.Progressing)

	e.render.err = nil
	require.NoError(t, os.Remove(filepath.Join(e.dir, "images/1068.6.0/coreos_production_image.bin.bz2")))
	require.Equal(t, 200, e.do("POST", "/final-cloud-config.yaml", facts).Code)
	require.Equal(t, 404, e.do("GET", "/images/"+serial+"/install_image.bin.bz2", "").Code)
	require.NoError(t, json.Unmarshal(e.do("GET", "/admin/host/"+serial+"/explain", "").Body.Bytes(), &ex))
	assert.Equal(t, "image 1068.6.0 missing on disk", ex.Cause)

	// Every machine's at once, in the order of /admin/hosts.
	require.Equal(t, 200, e.do("GET", "/first-stage-script/other-1", "").Code)
	rec := e.do("GET", "/admin/explain", "", "Authorization", "Bearer "+e.tokens.readOnly)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	var all []timeline.Explanation
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &all))
	require.Len(t, all, 2)
	assert.Equal(t, serial, all[0].Serial)
	assert.Equal(t, ex, all[0])
	assert.Equal(t, "other-1", all[1].Serial)
	assert.Equal(t, timeline.StepFirstStage, all[1].Step)
	assert.Equal(t, 401, e.do("GET", "/admin/explain", "", "Authorization", "").Code)
}

func TestHistoryAndCommitsOfStateEvents(t *testing.T) {
	d, err := gitdir.Open(t.TempDir(), gitdir.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	e, _ := newTimelineEnv(t, func(c *envConfig) { c.prov.Store = d })
	const serial = "0800278e158a-0"
	require.Equal(t, 200, e.do("GET", "/first-stage-script/"+serial, "").Code)
	require.Equal(t, 200, e.do("POST", "/final-cloud-config.yaml", facts).Code)
	require.Equal(t, 202, e.do("PUT", "/admin/host/"+serial+"/set_installed", "{}").Code)
	require.Equal(t, 202, e.do("PUT", "/admin/host/"+serial+"/set_state", `{"State":"configured"}`).Code)

	rec := e.do("GET", "/admin/host/"+serial+"/history", "")
	require.Equal(t, 200, rec.Code, rec.Body.String())
	var commits []store.Commit
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &commits))
	require.NotEmpty(t, commits)
	assert.Equal(t, "updated host state", commits[0].Message)
	assert.Equal(t, "admin:alice", commits[0].Principal)
	assert.Equal(t, "host created", commits[len(commits)-1].Message)
	var limited []store.Commit
	require.NoError(t, json.Unmarshal(e.do("GET", "/admin/host/"+serial+"/history?limit=2", "").Body.Bytes(), &limited))
	assert.Equal(t, commits[:2], limited)
	assert.Equal(t, 400, e.do("GET", "/admin/host/"+serial+"/history?limit=x", "").Code)

	byMsg := map[string]string{}
	for _, c := range commits {
		if _, ok := byMsg[c.Message]; !ok {
			byMsg[c.Message] = c.Hash
		}
	}
	var states int
	for _, ev := range decodeEvents(t, e.do("GET", "/admin/host/"+serial+"/events", "").Body.String()) {
		if ev.Kind == timeline.State {
			states++
			assert.Equal(t, byMsg[ev.Message], ev.Commit, ev.Message)
		}
	}
	assert.Equal(t, 4, states)
}

// sseClient reads a server-sent event stream: each message as its id,
// event type and data.
type sseMessage struct{ id, event, data string }

func readSSE(t *testing.T, sc *bufio.Scanner, out chan<- sseMessage) {
	var m sseMessage
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if m.data != "" || m.event != "" {
				out <- m
			}
			m = sseMessage{}
		case strings.HasPrefix(line, "id: "):
			m.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			m.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			m.data = line[6:]
		case strings.HasPrefix(line, ": "):
			if line == ": heartbeat" {
				out <- sseMessage{event: "heartbeat"}
			}
		}
	}
	close(out)
}

func TestEventStreamOverRealHTTP(t *testing.T) {
	old := HeartbeatInterval
	HeartbeatInterval = 50 * time.Millisecond
	t.Cleanup(func() { HeartbeatInterval = old })
	e, tl := newTimelineEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(ctx, ln, "", "", 5*time.Second) }()
	base := "http://" + ln.Addr().String()

	open := func(query string, headers ...string) (*http.Response, chan sseMessage) {
		req, err := http.NewRequest("GET", base+"/admin/events"+query, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+e.tokens.readOnly)
		req.Header.Set("Accept", "text/event-stream")
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		require.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
		msgs := make(chan sseMessage, 100)
		go readSSE(t, bufio.NewScanner(resp.Body), msgs)
		return resp, msgs
	}
	next := func(msgs chan sseMessage, skipBeats bool) sseMessage {
		for {
			select {
			case m, ok := <-msgs:
				require.True(t, ok, "stream ended early")
				if skipBeats && m.event == "heartbeat" {
					continue
				}
				return m
			case <-time.After(10 * time.Second):
				t.Fatal("no message within 10s")
			}
		}
	}

	all, msgs := open("")
	defer all.Body.Close()
	one, oneMsgs := open("?serial=s2")
	defer one.Body.Close()
	assert.Equal(t, "heartbeat", next(msgs, false).event, "an idle stream gets heartbeats")
	deadline := time.Now().Add(10 * time.Second)
	for tl.Subscribers() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	tl.Publish(timeline.Event{Kind: timeline.DHCPDiscover, MAC: "08:00:27:00:00:01"})
	tl.Publish(timeline.Event{Kind: timeline.State, Serial: "s2", From: "configured", To: "installing"})
	m := next(msgs, true)
	var ev timeline.Event
	require.NoError(t, json.Unmarshal([]byte(m.data), &ev))
	assert.Equal(t, timeline.DHCPDiscover, ev.Kind)
	assert.Equal(t, fmt.Sprint(ev.Seq), m.id)
	m = next(msgs, true)
	require.NoError(t, json.Unmarshal([]byte(m.data), &ev))
	assert.Equal(t, "s2", ev.Serial)
	m = next(oneMsgs, true)
	require.NoError(t, json.Unmarshal([]byte(m.data), &ev))
	assert.Equal(t, "s2", ev.Serial, "?serial= keeps one machine's events")

	// A client that reconnects with Last-Event-ID gets what it missed.
	again, againMsgs := open("", "Last-Event-ID", "1")
	defer again.Body.Close()
	m = next(againMsgs, true)
	require.NoError(t, json.Unmarshal([]byte(m.data), &ev))
	assert.Equal(t, uint64(2), ev.Seq)

	// Without Accept: text/event-stream, the recent events as JSON.
	req, _ := http.NewRequest("GET", base+"/admin/events", nil)
	req.Header.Set("Authorization", "Bearer "+e.tokens.readOnly)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var recent []timeline.Event
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&recent))
	resp.Body.Close()
	assert.Len(t, recent, 2)

	// Shutdown ends the streams cleanly and is not held up by them.
	start := time.Now()
	stop()
	for {
		m, ok := <-msgs
		if !ok {
			break
		}
		if m.event == "end" {
			assert.Contains(t, m.data, "shutting down")
		}
	}
	require.NoError(t, <-served)
	assert.Less(t, time.Since(start), 4*time.Second, "shutdown waited for the streams")
}

func TestEventStreamsAreBounded(t *testing.T) {
	tl := timeline.New(timeline.Config{MaxSubscribers: 1})
	e := newEnv(t, withTimeline(tl))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() { _ = e.srv.Serve(ctx, ln, "", "", time.Second) }()
	get := func() *http.Response {
		req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/admin/events", nil)
		req.Header.Set("Authorization", "Bearer "+e.tokens.admin)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		return resp
	}
	first := get()
	defer first.Body.Close()
	require.Equal(t, 200, first.StatusCode)
	second := get()
	defer second.Body.Close()
	assert.Equal(t, 503, second.StatusCode)
}

// Without a DHCP ack of mayu's (proxyDHCP: the site's server leased the
// address), the boot script's ?mac= places its fetch: on the host whose
// record holds that MAC, once there is one. A malformed mac= places
// nothing.
func TestBootScriptFetchPlacedByItsMAC(t *testing.T) {
	e, tl := newTimelineEnv(t)
	const serial, mac = "0800278e158a-0", "08:00:27:8e:15:8a"
	machine := func(method, path, body string) int {
		return e.do(method, path, body, "Authorization", "").Code
	}
	require.Equal(t, 200, machine("GET", "/ipxebootscript?mac=08-00-27-8E-15-8A", ""), "before the record")
	require.Equal(t, 200, machine("GET", "/ipxebootscript?mac=not-a-mac", ""))
	require.Equal(t, 200, machine("GET", "/first-stage-script/"+serial, ""))
	require.Equal(t, 200, machine("POST", "/final-cloud-config.yaml", facts), "records the MAC")
	require.Equal(t, 200, machine("GET", "/ipxebootscript?mac="+mac, ""), "after the record")
	tl.Reattribute()

	got := decodeEvents(t, e.do("GET", "/admin/host/"+serial+"/events", "").Body.String())
	var boots []timeline.Event
	for _, ev := range got {
		if ev.Kind == timeline.HTTP && ev.Route == "/ipxebootscript" {
			boots = append(boots, ev)
		}
	}
	require.Len(t, boots, 2, "both fetches that named its MAC, not the malformed one: %v", kinds(got))
	for _, ev := range boots {
		assert.Equal(t, mac, ev.MAC)
		assert.Equal(t, serial, ev.Serial)
	}
}
