package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"mayu/pkg/store"
	"mayu/pkg/timeline"
)

// ErrStreamEnded is returned by Follow when mayu ended the event stream
// (it is shutting down).
var ErrStreamEnded = errors.New("client: mayu ended the event stream")

// streamIdle is how long a stream may stay silent before Follow gives up:
// mayu sends a heartbeat every 15 seconds.
const streamIdle = 60 * time.Second

// Events returns one machine's events, oldest first (GET
// /admin/host/<serial>/events).
func (c *Client) Events(ctx context.Context, serial string) ([]timeline.Event, error) {
	s, err := normalizeSerial(serial)
	if err != nil {
		return nil, err
	}
	var out []timeline.Event
	return out, c.getJSON(ctx, "/admin/host/"+url.PathEscape(s)+"/events", &out)
}

// RecentEvents returns the last events of every machine, oldest first (GET
// /admin/events without a stream).
func (c *Client) RecentEvents(ctx context.Context) ([]timeline.Event, error) {
	var out []timeline.Event
	return out, c.getJSON(ctx, "/admin/events", &out)
}

// Explain returns how far a machine got and why it is not progressing
// (GET /admin/host/<serial>/explain).
func (c *Client) Explain(ctx context.Context, serial string) (timeline.Explanation, error) {
	s, err := normalizeSerial(serial)
	if err != nil {
		return timeline.Explanation{}, err
	}
	var out timeline.Explanation
	return out, c.getJSON(ctx, "/admin/host/"+url.PathEscape(s)+"/explain", &out)
}

// History returns the commits of a machine's record, newest first, at
// most limit of them (0: all) (GET /admin/host/<serial>/history, whose
// JSON is store.Commit's).
func (c *Client) History(ctx context.Context, serial string, limit int) ([]store.Commit, error) {
	s, err := normalizeSerial(serial)
	if err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, fmt.Errorf("%w: limit %d", ErrInvalidArgument, limit)
	}
	var out []store.Commit
	return out, c.getJSON(ctx, "/admin/host/"+url.PathEscape(s)+"/history?limit="+strconv.Itoa(limit), &out)
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	body, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: GET %s: %w", ErrBadResponse, path, err)
	}
	return nil
}

// FollowOptions says what Follow streams and where it goes.
type FollowOptions struct {
	// Serial keeps one machine's events; "" streams every machine's.
	Serial string
	// OnEvent is called for each event, in order; an error ends Follow
	// with it.
	OnEvent func(timeline.Event) error
	// OnDropped, if set, is told when mayu dropped n events for this
	// client because it read too slowly.
	OnDropped func(n uint64)
}

// Follow streams the live events (GET /admin/events, server-sent events)
// until ctx is done (nil), mayu ends the stream (ErrStreamEnded), the
// connection fails or stays silent past a minute (ErrUnreachable), or
// OnEvent fails.
func (c *Client) Follow(parent context.Context, o FollowOptions) error {
	q := ""
	if o.Serial != "" {
		s, err := normalizeSerial(o.Serial)
		if err != nil {
			return err
		}
		q = "?serial=" + url.QueryEscape(s)
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	u := c.base.JoinPath("/admin/events").String() + q
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	req.Header.Set("User-Agent", c.agent)
	req.Header.Set("Accept", "text/event-stream")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	// The answer's headers come within the usual timeout; the stream
	// itself lasts as long as it is not silent.
	var silent atomic.Bool
	idle := time.AfterFunc(c.timeout, func() { silent.Store(true); cancel() })
	defer idle.Stop()
	resp, err := c.http.Do(req)
	if err != nil {
		switch {
		case silent.Load():
			return fmt.Errorf("%w at %s: no answer within %s", ErrUnreachable, c.base, c.timeout)
		case parent.Err() != nil:
			return nil
		}
		return c.unreachable(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxReasonBytes))
		return &Error{Status: resp.StatusCode, Reason: reason(raw), Method: http.MethodGet, URL: u}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return fmt.Errorf("%w: GET /admin/events answered %q, not an event stream (a mayu without the timeline?)", ErrBadResponse, ct)
	}
	idle.Reset(streamIdle)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var event, data string
	for sc.Scan() {
		idle.Reset(streamIdle)
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		case line == "":
			if err := c.dispatch(event, data, o); err != nil {
				return err
			}
			event, data = "", ""
		}
	}
	switch {
	case silent.Load():
		return fmt.Errorf("%w at %s: the event stream was silent for %s", ErrUnreachable, c.base, streamIdle)
	case parent.Err() != nil:
		return nil // the caller is done
	}
	if err := sc.Err(); err != nil {
		return c.unreachable(ctx, err)
	}
	return fmt.Errorf("%w at %s: the event stream closed", ErrUnreachable, c.base)
}

// dispatch handles one message of the stream.
func (c *Client) dispatch(event, data string, o FollowOptions) error {
	switch event {
	case "":
		if data == "" {
			return nil
		}
		var e timeline.Event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			return fmt.Errorf("%w: event stream: %w", ErrBadResponse, err)
		}
		if o.OnEvent != nil {
			return o.OnEvent(e)
		}
	case "dropped":
		var d struct {
			Dropped uint64 `json:"dropped"`
		}
		if json.Unmarshal([]byte(data), &d) == nil && o.OnDropped != nil {
			o.OnDropped(d.Dropped)
		}
	case "end":
		return ErrStreamEnded
	}
	return nil
}
