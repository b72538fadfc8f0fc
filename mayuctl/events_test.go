package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/client/clienttest"
	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/pkg/store"
	"mayu/pkg/store/gitdir"
	"mayu/pkg/timeline"
)

func TestEventsOfOneMachineAndOfAll(t *testing.T) {
	f := startFake(t, fixtureHosts()...)
	tl := f.fake.Timeline()
	t0 := time.Date(2026, 11, 29, 22, 50, 1, 500e6, time.UTC)
	tl.Publish(timeline.Event{Time: t0, Kind: timeline.DHCPAck, MAC: "08:00:27:00:00:01", IP: "192.168.2.120", Interface: "eth1"})
	tl.Publish(timeline.Event{Time: t0, Kind: timeline.HTTP, Serial: "s-0042", IP: "192.168.2.120", Method: "GET",
		Route: "/first-stage-script/:serial", Status: 200, Bytes: 1234, DurationSeconds: 0.0032})
	tl.Publish(timeline.Event{Time: t0, Kind: timeline.RenderFailed, Serial: "s-0042", File: "final",
		Reason: `template: last_stage: map has no entry for key "x"`})

	r := mayuctl(t, f.args("events", "S-0042")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, `2026-11-29T22:50:01.500Z s-0042 http mac=08:00:27:00:00:01 ip=192.168.2.120 method=GET route=/first-stage-script/:serial status=200 bytes=1234 duration=3.2ms
2026-11-29T22:50:01.500Z s-0042 render-failed file=final reason="template: last_stage: map has no entry for key \"x\""
`, r.stdout)

	r = mayuctl(t, f.args("events")...)
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 3)
	assert.Contains(t, lines[1], " mac=08:00:27:00:00:01 ", "the address's MAC, from its DHCP ack")
	assert.Equal(t, "2026-11-29T22:50:01.500Z - dhcp-ack mac=08:00:27:00:00:01 ip=192.168.2.120 interface=eth1", lines[0],
		"a MAC no record claims has no serial yet")

	r = mayuctl(t, f.args("events", "--json", "s-0042")...)
	require.Equal(t, 0, r.code, r.stderr)
	var e timeline.Event
	require.NoError(t, json.Unmarshal([]byte(strings.Split(r.stdout, "\n")[1]), &e))
	assert.Equal(t, timeline.RenderFailed, e.Kind)

	// The explanation joins mayuctl status, after Mayu 0.11's lines and
	// the serving instance's.
	r = mayuctl(t, f.args("status", "s-0042")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.True(t, strings.HasSuffix(r.stdout, "Enabled:             true\n"+
		"Instance:            rack-7:4080\n"+
		"Last step:           first-stage\n"+
		`Explanation:         final config render failed: template: last_stage: map has no entry for key "x"`+"\n"), r.stdout)

	r = mayuctl(t, f.args("events", "a", "b")...)
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "at most one serial")
	r = mayuctl(t, f.args("events", "../x")...)
	assert.Equal(t, 2, r.code, r.stderr)
	assert.Contains(t, r.stderr, "invalid serial")
}

func TestEventsFollow(t *testing.T) {
	f := startFake(t, fixtureHosts()...)
	tl := f.fake.Timeline()
	var out, errOut proctest.Output
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"mayuctl"}, f.args("events", "--follow", "s-0042")...), &out, &errOut)
	}()
	require.Eventually(t, func() bool { return tl.Subscribers() == 1 }, 30*time.Second, 10*time.Millisecond, errOut.String())
	tl.Publish(timeline.Event{Kind: timeline.State, Serial: "0800278e158a-0", From: "installed", To: "running"})
	tl.Publish(timeline.Event{Kind: timeline.State, Serial: "s-0042", From: "configured", To: "installing"})
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "to=installing") }, 30*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case code := <-done:
		assert.Equal(t, 0, code, errOut.String())
	case <-time.After(30 * time.Second):
		t.Fatal("mayuctl events --follow did not end with its context")
	}
	assert.Regexp(t, `^\S+ s-0042 state from=configured to=installing\n$`, out.String(), "one machine's events only")
}

func TestHistory(t *testing.T) {
	d, err := gitdir.Open(t.TempDir(), gitdir.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	h := fixtureHosts()[0]
	_, err = d.Create(h.Serial, store.Step{Message: "host created", Apply: func(r *host.Host) error { *r = h.Clone(); return nil }})
	require.NoError(t, err)
	srv := httptest.NewServer(clienttest.New(d, nil))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	f := fakeMayu{flags: []string{"--no-tls", "--host=" + u.Hostname(), "--port=" + u.Port(), "--token=" + clienttest.AdminToken}}

	require.Equal(t, 0, mayuctl(t, f.args("set", h.Serial, "metadata", "a=b")...).code)
	require.Equal(t, 0, mayuctl(t, f.args("set", h.Serial, "providerid", "rack-1")...).code)
	r := mayuctl(t, f.args("history", h.Serial)...)
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 3, r.stdout)
	line := regexp.MustCompile(`^([0-9a-f]{12})  (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)  (\S+)  (.+)$`)
	want := []struct{ who, msg string }{
		{"admin:operator", "updated host provider id"},
		{"admin:operator", "updated host metadata"},
		{"-", "host created"},
	}
	for i, l := range lines {
		m := line.FindStringSubmatch(l)
		require.NotNil(t, m, l)
		assert.Equal(t, want[i].who, m[3])
		assert.Equal(t, want[i].msg, m[4])
	}
	r = mayuctl(t, f.args("history", "--limit=1", h.Serial)...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, lines[0]+"\n", r.stdout)

	assert.Equal(t, 2, mayuctl(t, f.args("history")...).code)
	assert.Equal(t, 2, mayuctl(t, f.args("history", "--limit=-1", h.Serial)...).code)
	r = mayuctl(t, f.args("history", "nobody")...)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "404")
}
