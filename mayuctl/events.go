package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"mayu/pkg/client"
	"mayu/pkg/timeline"
)

// eventTimeFormat is the time column of mayuctl events: UTC, milliseconds.
const eventTimeFormat = "2006-01-02T15:04:05.000Z"

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:      "events",
		Usage:     "show what happened to the machines while they booted (DHCP, TFTP, HTTP, state changes)",
		UsageText: "mayuctl events [--follow] [--json] [serial]",
		Description: `One line per event: time (UTC), serial ("-" while no record claims the
MAC), kind, then key=value details. Kinds: dhcp-discover, dhcp-offer,
dhcp-request, dhcp-ack, dhcp-nak, dhcp-ignored, tftp-sent, tftp-failed,
http, state, render-failed. mayu keeps the last events of each machine in
memory (lost when it restarts); the state changes are also in git
(mayuctl history).

Examples:
   mayuctl --no-tls events 0800278e158a-0
   mayuctl --no-tls events --follow
   mayuctl --no-tls events --json 0800278e158a-0 | jq .kind`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "stream new events as they happen, until interrupted"},
			&cli.BoolFlag{Name: "json", Usage: "print each event as one line of JSON (mayu's event object)"},
		},
		Action: func(cCtx *cli.Context) error {
			if cCtx.Args().Len() > 1 {
				return usagef("events takes at most one serial, got %d arguments", cCtx.Args().Len())
			}
			c, err := newClient(cCtx)
			if err != nil {
				return err
			}
			serial := cCtx.Args().First()
			w := cCtx.App.Writer
			emit := func(e timeline.Event) error { return writeEvent(w, e, cCtx.Bool("json")) }
			ctx := requestContext(cCtx)
			if cCtx.Bool("follow") {
				err := c.Follow(ctx, client.FollowOptions{Serial: serial, OnEvent: emit, OnDropped: func(n uint64) {
					fmt.Fprintf(cCtx.App.ErrWriter, "mayuctl: %d events dropped: mayuctl read too slowly\n", n)
				}})
				if errors.Is(err, client.ErrStreamEnded) {
					fmt.Fprintln(cCtx.App.ErrWriter, "mayuctl: mayu ended the event stream (it is shutting down)")
					return nil
				}
				if err != nil {
					return failure("events", err)
				}
				return nil
			}
			var events []timeline.Event
			if serial != "" {
				events, err = c.Events(ctx, serial)
			} else {
				events, err = c.RecentEvents(ctx)
			}
			if err != nil {
				return failure("events", err)
			}
			for _, e := range events {
				if err := emit(e); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// writeEvent prints one event, as a line of text or of JSON.
func writeEvent(w io.Writer, e timeline.Event, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	_, err := io.WriteString(w, formatEvent(e)+"\n")
	return err
}

// formatEvent is one line: time, serial, kind, key=value details, every
// value through printable (a MAC or reason comes from the network).
func formatEvent(e timeline.Event) string {
	serial := e.Serial
	if serial == "" {
		serial = "-"
	}
	parts := []string{e.Time.UTC().Format(eventTimeFormat), printable(serial), string(e.Kind)}
	add := func(k, v string) {
		if v == "" {
			return
		}
		if strings.ContainsAny(v, " \"=") {
			v = strconv.Quote(v)
		}
		parts = append(parts, k+"="+printable(v))
	}
	add("mac", e.MAC)
	add("ip", e.IP)
	add("interface", e.Interface)
	add("file", e.File)
	add("method", e.Method)
	add("route", e.Route)
	if e.Status != 0 {
		add("status", strconv.Itoa(e.Status))
	}
	if e.Kind == timeline.HTTP {
		add("bytes", strconv.FormatInt(e.Bytes, 10))
		add("duration", time.Duration(e.DurationSeconds*float64(time.Second)).Round(time.Microsecond).String())
	}
	add("from", e.From)
	add("to", e.To)
	add("message", e.Message)
	add("principal", e.Principal)
	add("commit", e.Commit)
	add("reason", e.Reason)
	return strings.Join(parts, " ")
}

func historyCommand() *cli.Command {
	return &cli.Command{
		Name:      "history",
		Usage:     "show the commits of one machine's record in the cluster directory",
		UsageText: "mayuctl history [--limit=N] <serial>",
		Description: `One line per commit, newest first: hash, time (UTC), who asked for the
change (the commit's Principal trailer; "-" for mayu's own changes and
Mayu 0.11's commits), and the message.

Examples:
   mayuctl --no-tls history 0800278e158a-0
   mayuctl --no-tls history --limit=0 0800278e158a-0    # every commit`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "limit", Value: 100, Usage: "print at most this many commits (0: all)"},
		},
		Action: func(cCtx *cli.Context) error {
			if err := wantArgs(cCtx, 1, "<serial>"); err != nil {
				return err
			}
			if cCtx.Int("limit") < 0 {
				return usagef("history: --limit must be 0 (all) or more, not %d", cCtx.Int("limit"))
			}
			c, err := newClient(cCtx)
			if err != nil {
				return err
			}
			serial := cCtx.Args().First()
			commits, err := c.History(requestContext(cCtx), serial, cCtx.Int("limit"))
			if err != nil {
				return failure("history "+serial, err)
			}
			var b strings.Builder
			for _, cm := range commits {
				who := cm.Principal
				if who == "" {
					who = "-"
				}
				fmt.Fprintf(&b, "%s  %s  %s  %s\n", shortHash(cm.Hash), cm.Time.UTC().Format(time.RFC3339),
					printable(who), printable(cm.Message))
			}
			_, err = io.WriteString(cCtx.App.Writer, b.String())
			return err
		},
	}
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// writeExplanation adds the explanation of a machine that is not
// progressing to mayuctl status: two lines in status's "Key:  value"
// layout after Mayu 0.11's, so scripts reading those keep working. A mayu
// without the route (0.11) or a machine that progresses adds nothing.
func writeExplanation(w io.Writer, x timeline.Explanation) error {
	if x.Cause == "" {
		return nil
	}
	_, err := fmt.Fprintf(w, "%-*s%s\n%-*s%s\n", statusKeyWidth, "Last step:", printable(x.Step),
		statusKeyWidth, "Explanation:", printable(x.Cause))
	return err
}
