package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"mayu/pkg/host"
	"mayu/pkg/provision"
	"mayu/pkg/store"
	"mayu/pkg/timeline"
)

// The timeline routes (all admin reads):
//
//	GET /admin/host/:serial/events   JSON array of the machine's events, oldest first
//	GET /admin/host/:serial/explain  JSON timeline.Explanation
//	GET /admin/explain               JSON array of every machine's timeline.Explanation, by serial
//	GET /admin/host/:serial/history  JSON array of store.Commit, newest first (?limit=N, default 100)
//	GET /admin/events                Accept: text/event-stream: the live stream of every
//	                                 machine's events (server-sent events, below);
//	                                 otherwise a JSON array of the recent events
//
// The stream: each event is one SSE message, "id: <seq>" and "data: <event
// JSON>" (the default "message" type); "event: dropped" with data
// {"dropped": N} says this client lost N events because it read too slowly;
// a comment line ": heartbeat" comes every HeartbeatInterval; "event: end"
// comes before the server closes the stream at shutdown. A Last-Event-ID
// header (or ?since=<seq>) replays the recent events after that one first;
// ?serial=<serial> keeps one machine's events only.

// HeartbeatInterval is how often an idle event stream gets a comment line,
// so proxies and clients see it is alive.
var HeartbeatInterval = 15 * time.Second

// streamWriteTimeout bounds one write to an event stream's client: a client
// that takes longer is gone, and its stream ends.
const streamWriteTimeout = 30 * time.Second

// historyScan bounds the commits read back for the commits of state events:
// a storm's worth; older state events keep no hash.
const historyScan = 4096

// eventSerialKey is where a handler that learns the serial from the body
// (the final config) leaves it for the HTTP event.
const eventSerialKey = "timeline.serial"

// machineFetch tells the routes whose fetches are steps of a machine's boot
// and go to its timeline: the boot script, images, the first-stage script
// and its helpers, the final config, the machine's own reports, and the
// mayuctl binary its final config fetches.
func machineFetch(c echo.Context) (route string, ok bool) {
	route = c.Path()
	switch route {
	case "/ipxebootscript", "/first-stage-script/:serial", "/hostinfo-helper", "/machine-serial.sh",
		"/final-cloud-config.yaml", "/final-ignition-config.json",
		"/images/vmlinuz", "/images/initrd.cpio.gz",
		"/images/:serial/vmlinuz", "/images/:serial/initrd.cpio.gz", "/images/:serial/install_image.bin.bz2",
		"/images/:serial/qemu/:file",
		"/admin/host/:serial/set_installed", "/admin/host/:serial/boot_complete":
		return route, true
	case "/yochu/*":
		return c.Request().URL.Path, true
	case "/*":
		if p := c.Request().URL.Path; p == "/mayuctl" {
			return p, true
		}
	}
	return "", false
}

// recordFetch puts a machine's fetch on its timeline: the serial from the
// route (or the body, eventSerialKey), else the timeline finds the host
// by the client's address.
func (s *Server) recordFetch(c echo.Context, start time.Time) {
	tl := s.prov.Timeline()
	if tl == nil {
		return
	}
	route, ok := machineFetch(c)
	if !ok {
		return
	}
	serial, _ := c.Get(eventSerialKey).(string)
	if serial == "" {
		if raw := c.Param("serial"); raw != "" {
			serial, _ = provision.Serial(raw)
		}
	}
	// The boot script's second request names the machine's MAC
	// (?mac=${netX/mac}, with installed_boot local and in proxyDHCP mode):
	// the one way to place it when mayu's dnsmasq leased the address no
	// MAC (proxyDHCP). Like the DHCP lines the timeline is built from, it
	// is what the client says, not proof of who it is.
	var mac string
	if route == "/ipxebootscript" {
		if m, err := host.NormalizeMAC(c.QueryParam("mac")); err == nil {
			mac = m
		}
	}
	res := c.Response()
	tl.Publish(timeline.Event{Kind: timeline.HTTP, Serial: serial, MAC: mac, IP: c.RealIP(), Method: c.Request().Method,
		Route: route, Status: res.Status, Bytes: res.Size, DurationSeconds: time.Since(start).Seconds()})
}

func (s *Server) timelineRoutes(admin *echo.Group) {
	admin.GET("/events", s.streamEvents, s.adminRead)
	admin.GET("/host/:serial/events", s.hostEvents, s.adminRead)
	admin.GET("/host/:serial/explain", s.explainHost, s.adminRead)
	admin.GET("/explain", s.explainAll, s.adminRead)
	admin.GET("/host/:serial/history", s.hostHistory, s.adminRead)
}

// timeline is the provisioner's timeline, or an error naming why there is
// none.
func (s *Server) timeline() (*timeline.Timeline, error) {
	tl := s.prov.Timeline()
	if tl == nil {
		return nil, fmt.Errorf("%w: this mayu keeps no timeline", errNotServed)
	}
	return tl, nil
}

// hostTimeline is the serial of a host route and the timeline.
func (s *Server) hostTimeline(c echo.Context) (string, *timeline.Timeline, error) {
	serial, err := provision.Serial(c.Param("serial"))
	if err != nil {
		return "", nil, err
	}
	tl, err := s.timeline()
	return serial, tl, err
}

// hostEvents answers the events of one machine, its state events with the
// hash of their commit when the store keeps history.
func (s *Server) hostEvents(c echo.Context) error {
	serial, tl, err := s.hostTimeline(c)
	if err != nil {
		return err
	}
	events := tl.Events(serial)
	s.addCommits(serial, events)
	if events == nil {
		events = []timeline.Event{}
	}
	return c.JSON(http.StatusOK, events)
}

// addCommits fills in the commit of each state event from the record's
// history: the newest commit with the event's message made no later than
// the event, not taken by a later event. The state events are published
// once their write is durable, so their commit is always older.
func (s *Server) addCommits(serial string, events []timeline.Event) {
	want := false
	for _, e := range events {
		want = want || (e.Kind == timeline.State && e.Commit == "")
	}
	if !want {
		return
	}
	commits, err := s.prov.History(serial, 0, historyScan)
	if err != nil {
		if !errors.Is(err, store.ErrNoHistory) {
			s.log.Warn("cannot read the history for the commits of state events", "serial", serial, "err", err)
		}
		return
	}
	used := map[string]bool{}
	for i := len(events) - 1; i >= 0; i-- {
		e := &events[i]
		if e.Kind != timeline.State || e.Commit != "" {
			continue
		}
		for _, c := range commits { // newest first
			if !used[c.Hash] && c.Message == e.Message && !c.Time.After(e.Time.Add(time.Second)) {
				// git times have whole seconds
				e.Commit, used[c.Hash] = c.Hash, true
				break
			}
		}
	}
}

// explainHost answers timeline.Explain for one machine.
func (s *Server) explainHost(c echo.Context) error {
	serial, tl, err := s.hostTimeline(c)
	if err != nil {
		return err
	}
	h, known := s.prov.Host(serial)
	if !known {
		return fmt.Errorf("%w: %s", store.ErrNotFound, serial)
	}
	x, err := s.explain(tl, h, map[string]bool{})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, x)
}

// explainAll answers timeline.Explain for every machine, in the order of
// GET /admin/hosts: what a dashboard shows beside each row.
func (s *Server) explainAll(c echo.Context) error {
	tl, err := s.timeline()
	if err != nil {
		return err
	}
	missing := map[string]bool{} // per image version, looked up once
	out := []timeline.Explanation{}
	for _, h := range s.prov.Hosts() {
		x, err := s.explain(tl, h, missing)
		if err != nil {
			return err
		}
		out = append(out, x)
	}
	return c.JSON(http.StatusOK, out)
}

// explain is timeline.Explain of h now, with its image looked up on disk
// (once per version in missing).
func (s *Server) explain(tl *timeline.Timeline, h host.Host, missing map[string]bool) (timeline.Explanation, error) {
	version, err := s.prov.ImageVersion(h.Serial)
	if err != nil {
		return timeline.Explanation{}, err
	}
	gone, ok := missing[version]
	if !ok {
		gone = s.imageMissing(version)
		missing[version] = gone
	}
	return timeline.Explain(timeline.Situation{
		Host: h, Known: true, Events: tl.Events(h.Serial), Now: time.Now(), Since: tl.Started(),
		ImageVersion: version, ImageMissing: gone,
	}), nil
}

// imageMissing tells whether a version's install image or PXE files are
// not in the images directory.
func (s *Server) imageMissing(version string) bool {
	if s.cfg.ImagesDir == "" {
		return false
	}
	for _, name := range []string{PXEKernelFile, PXEInitrdFile, installImage} {
		if fi, err := os.Stat(filepath.Join(s.cfg.ImagesDir, version, name)); err != nil || !fi.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// hostHistory answers the commits of one machine's record.
func (s *Server) hostHistory(c echo.Context) error {
	serial, err := provision.Serial(c.Param("serial"))
	if err != nil {
		return err
	}
	limit := 100
	if v := c.QueryParam("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
			return fmt.Errorf("%w: limit %q is not a count (0 is every commit)", errBadRequest, v)
		}
	}
	if _, known := s.prov.Host(serial); !known {
		return fmt.Errorf("%w: %s", store.ErrNotFound, serial)
	}
	commits, err := s.prov.History(serial, limit, 0)
	if err != nil {
		return err
	}
	if commits == nil {
		commits = []store.Commit{}
	}
	return c.JSON(http.StatusOK, commits)
}

// streamEvents is GET /admin/events: the live stream, or the recent events
// as JSON for a client that does not ask for a stream.
func (s *Server) streamEvents(c echo.Context) error {
	tl, err := s.timeline()
	if err != nil {
		return err
	}
	serial := ""
	if v := c.QueryParam("serial"); v != "" {
		if serial, err = provision.Serial(v); err != nil {
			return err
		}
	}
	keep := func(e timeline.Event) bool { return serial == "" || e.Serial == serial }
	if !strings.Contains(c.Request().Header.Get("Accept"), "text/event-stream") {
		out := []timeline.Event{}
		for _, e := range tl.Recent() {
			if keep(e) {
				out = append(out, e)
			}
		}
		return c.JSON(http.StatusOK, out)
	}
	var since uint64
	if v := c.Request().Header.Get("Last-Event-ID"); v != "" {
		since, _ = strconv.ParseUint(v, 10, 64)
	} else if v := c.QueryParam("since"); v != "" {
		if since, err = strconv.ParseUint(v, 10, 64); err != nil {
			return fmt.Errorf("%w: since %q is not an event number", errBadRequest, v)
		}
	}
	sub, err := tl.Subscribe(0)
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "too many event streams open; try again later")
	}
	defer sub.Close()

	w := c.Response()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(chunk string) error {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write([]byte(chunk)); err != nil {
			return err
		}
		return rc.Flush()
	}
	message := func(e timeline.Event) error {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return send(fmt.Sprintf("id: %d\ndata: %s\n\n", e.Seq, b))
	}
	if err := send(": mayu events\n\n"); err != nil {
		return nil
	}
	last := since
	if since > 0 {
		for _, e := range tl.Recent() {
			if e.Seq > since && keep(e) {
				if message(e) != nil {
					return nil
				}
				last = e.Seq
			}
		}
	}
	beat := time.NewTicker(HeartbeatInterval)
	defer beat.Stop()
	var dropped uint64
	for {
		var err error
		select {
		case <-c.Request().Context().Done():
			return nil
		case <-s.shutdown:
			_ = send("event: end\ndata: {\"reason\":\"mayu is shutting down\"}\n\n")
			return nil
		case <-beat.C:
			err = send(": heartbeat\n\n")
		case e, ok := <-sub.C():
			if !ok {
				_ = send("event: end\ndata: {\"reason\":\"the timeline closed\"}\n\n")
				return nil
			}
			if n := sub.Dropped(); n > dropped {
				err = send(fmt.Sprintf("event: dropped\ndata: {\"dropped\":%d}\n\n", n-dropped))
				dropped = n
			}
			if err == nil && e.Seq > last && keep(e) {
				err = message(e)
			}
		}
		if err != nil {
			return nil // the client is gone; nothing to answer
		}
	}
}
