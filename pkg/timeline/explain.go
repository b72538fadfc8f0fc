package timeline

import (
	"fmt"
	"strings"
	"time"

	"mayu/pkg/host"
)

// DefaultStall is how long a machine may go without an event before it
// counts as not progressing: a PXE boot, install and reboot take minutes,
// and a machine waiting that long between two steps is stuck.
const DefaultStall = 10 * time.Minute

// The steps of a boot, as Explanation.Step names them, in order.
const (
	StepNone        = "none"         // nothing seen of the machine
	StepDHCP        = "dhcp"         // a DHCP exchange
	StepTFTP        = "tftp"         // iPXE fetched over TFTP
	StepBootScript  = "boot-script"  // GET /ipxebootscript
	StepPXEImage    = "pxe-image"    // GET /images/vmlinuz or initrd
	StepFirstStage  = "first-stage"  // GET /first-stage-script/<serial>
	StepFinalConfig = "final-config" // POST /final-*-config: installing
	StepInstall     = "install"      // GET /images/<serial>/install_image...
	StepInstalled   = "installed"    // set_installed
	StepRunning     = "running"      // boot_complete
)

// Situation is what Explain looks at: one machine's record, its events
// and what the configuration says about its images.
type Situation struct {
	// Host is the machine's record; Known is false for a serial mayu has
	// no record of.
	Host  host.Host
	Known bool
	// Events are the machine's events, oldest first (Timeline.Events).
	Events []Event
	// Now is the time of the question; Since is when the timeline began
	// (the daemon's start): nothing can have been seen before it.
	Now, Since time.Time
	// ImageVersion is the OS version the machine's images come from;
	// ImageMissing is true when that version's images are not on disk.
	ImageVersion string
	ImageMissing bool
	// Stall is how long without an event counts as not progressing;
	// DefaultStall when 0.
	Stall time.Duration
}

// Explanation says how far a machine got and, when it is not
// progressing, the likely cause in one line. Its JSON form is the answer
// of GET /admin/host/<serial>/explain:
//
//	{"serial": "0800278e158a-0", "state": "installing",
//	 "step": "final-config",                 // one of the Step* names
//	 "last_event": "2026-11-29T22:50:01Z",   // absent when nothing was seen
//	 "progressing": false,
//	 "cause": "image 1068.6.0 missing on disk"}  // absent when progressing or done
type Explanation struct {
	Serial      string     `json:"serial"`
	State       string     `json:"state,omitempty"`
	Step        string     `json:"step"`
	LastEvent   *time.Time `json:"last_event,omitempty"`
	Progressing bool       `json:"progressing"`
	Cause       string     `json:"cause,omitempty"`
}

// Explain is the one place that tells why a machine is not progressing;
// the API, mayuctl status and the dashboard all show its answer. The
// causes, most specific first: the record's own state (running is done;
// installed but ignored by DHCP while it PXE-boots again), a render that
// failed, missing images, DHCP not answering, a failed TFTP transfer or
// HTTP fetch, then silence longer than Stall.
func Explain(s Situation) Explanation {
	if s.Stall <= 0 {
		s.Stall = DefaultStall
	}
	x := Explanation{Serial: s.Host.Serial, State: string(s.Host.State), Step: StepNone}
	var last *Event
	for i := range s.Events {
		e := &s.Events[i]
		switch st := stepOf(*e); {
		case st == "":
		case st == StepDHCP && stepRank(x.Step) > stepRank(StepDHCP):
			x.Step = st // a new boot starts over
		case stepRank(st) > stepRank(x.Step):
			x.Step = st
		}
		last = e
	}
	if last != nil {
		t := last.Time
		x.LastEvent = &t
	}
	if s.Known {
		switch s.Host.State {
		case host.Running:
			x.Step = StepRunning
		case host.Installed:
			if stepRank(x.Step) < stepRank(StepInstalled) {
				x.Step = StepInstalled
			}
		}
	}
	x.Cause = cause(s, last, x.Step)
	x.Progressing = x.Cause == "" && s.Host.State != host.Running
	return x
}

// cause is Explain's one line, "" when nothing is wrong.
func cause(s Situation, last *Event, step string) string {
	state := s.Host.State
	if s.Known && state == host.Running {
		return ""
	}
	if f := failure(s.Events); f != nil {
		switch f.Kind {
		case DHCPIgnored:
			if f.Reason == "ignored" && s.Known && state.IgnoredByDHCP() {
				return fmt.Sprintf("DHCP ignores this MAC: host is %s (it PXE-boots instead of booting its disk; to reinstall: mayuctl set %s state configured)", state, s.Host.Serial)
			}
			return fmt.Sprintf("DHCP does not answer %s: %s", f.MAC, f.Reason)
		case DHCPNak:
			return fmt.Sprintf("DHCP refused %s: %s", f.MAC, f.Reason)
		case RenderFailed:
			what := f.File
			if what == "final" {
				what = "final config"
			} else if what == "first-stage" {
				what = "first-stage script"
			}
			return fmt.Sprintf("%s render failed: %s", what, f.Reason)
		case TFTPFailed:
			return fmt.Sprintf("TFTP of %s failed: %s", f.File, f.Reason)
		case HTTP:
			if s.ImageMissing && strings.HasPrefix(f.Route, "/images/") {
				return fmt.Sprintf("image %s missing on disk", s.ImageVersion)
			}
			return fmt.Sprintf("%s %s answered %d", f.Method, f.Route, f.Status)
		}
	}
	if s.ImageMissing && !(s.Known && state.IgnoredByDHCP()) {
		return fmt.Sprintf("image %s missing on disk", s.ImageVersion)
	}
	from := s.Since
	if last != nil {
		from = last.Time
	}
	quiet := s.Now.Sub(from)
	if quiet < s.Stall {
		return ""
	}
	if s.Known && state == host.Installed {
		return fmt.Sprintf("installed, but no boot_complete for %s: does the installed system boot and reach mayu?", roundDur(quiet))
	}
	if !hasDHCP(s.Events) {
		return fmt.Sprintf("no DHCP request seen from any MAC of this host for %s", roundDur(quiet))
	}
	return fmt.Sprintf("nothing heard from this host for %s (last step: %s)", roundDur(quiet), step)
}

// failure is the most telling failure since the machine's last step of
// progress, nil if there is none: a render failure or a TFTP failure says
// more than the HTTP error or the retries that follow it.
func failure(es []Event) *Event {
	var best *Event
	rank := func(e *Event) int {
		switch e.Kind {
		case RenderFailed:
			return 4
		case TFTPFailed:
			return 3
		case DHCPIgnored, DHCPNak:
			return 2
		case HTTP:
			if e.Status >= 400 {
				return 1
			}
		}
		return 0
	}
	for i := len(es) - 1; i >= 0; i-- {
		e := &es[i]
		if stepOf(*e) != "" {
			break
		}
		if r := rank(e); r > 0 && (best == nil || r > rank(best)) {
			best = e
		}
	}
	return best
}

func hasDHCP(es []Event) bool {
	for _, e := range es {
		if e.Kind.IsDHCP() {
			return true
		}
	}
	return false
}

// stepOf is the boot step an event shows the machine reached, "" for an
// event that shows none (a failure, an ignored request).
func stepOf(e Event) string {
	switch e.Kind {
	case DHCPDiscover, DHCPOffer, DHCPRequest, DHCPAck:
		return StepDHCP
	case TFTPSent:
		return StepTFTP
	case State:
		switch host.State(e.To) {
		case host.Running:
			return StepRunning
		case host.Installed:
			return StepInstalled
		case host.Installing:
			return StepFinalConfig
		}
	case HTTP:
		if e.Status >= 400 {
			return ""
		}
		r := e.Route
		switch {
		case r == "/ipxebootscript":
			return StepBootScript
		case r == "/images/vmlinuz" || r == "/images/initrd.cpio.gz" ||
			r == "/images/:serial/vmlinuz" || r == "/images/:serial/initrd.cpio.gz":
			return StepPXEImage
		case strings.HasPrefix(r, "/first-stage-script/"), r == "/hostinfo-helper", r == "/machine-serial.sh":
			return StepFirstStage
		case strings.HasPrefix(r, "/final-"):
			return StepFinalConfig
		case strings.HasPrefix(r, "/images/:serial/"):
			return StepInstall
		}
	}
	return ""
}

// stepRank orders the steps of one boot.
func stepRank(s string) int {
	for i, n := range []string{StepNone, StepDHCP, StepTFTP, StepBootScript, StepPXEImage, StepFirstStage,
		StepFinalConfig, StepInstall, StepInstalled, StepRunning} {
		if n == s {
			return i
		}
	}
	return 0
}

func roundDur(d time.Duration) string {
	switch {
	case d >= time.Hour:
		return d.Round(time.Minute).String()
	case d >= time.Minute:
		return fmt.Sprintf("%d min", int(d.Round(time.Minute)/time.Minute))
	default:
		return d.Round(time.Second).String()
	}
}
