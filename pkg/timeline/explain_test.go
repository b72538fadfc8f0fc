package timeline

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"mayu/pkg/host"
)

func TestExplain(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC)
	at := func(min int, e Event) Event { e.Time = t0.Add(time.Duration(min) * time.Minute); return e }
	mac := "08:00:27:8e:15:8a"
	boot := []Event{
		at(0, Event{Kind: DHCPDiscover, MAC: mac}),
		at(0, Event{Kind: DHCPAck, MAC: mac, IP: "192.168.2.120"}),
		at(1, Event{Kind: TFTPSent, File: "undionly.kpxe"}),
		at(1, Event{Kind: HTTP, Method: "GET", Route: "/ipxebootscript", Status: 200}),
		at(2, Event{Kind: HTTP, Method: "GET", Route: "/images/vmlinuz", Status: 200}),
		at(3, Event{Kind: HTTP, Method: "GET", Route: "/first-stage-script/:serial", Status: 200}),
	}
	h := func(state host.State) host.Host {
		return host.Host{Serial: "s1", State: state, MacAddresses: []string{mac}}
	}
	cases := []struct {
		name        string
		s           Situation
		step, cause string
		progressing bool
	}{
		{"nothing seen yet", Situation{Host: h(host.Configured), Known: true, Now: t0.Add(time.Minute), Since: t0},
			StepNone, "", true},
		{"nothing seen for long", Situation{Host: h(host.Configured), Known: true, Now: t0.Add(12 * time.Minute), Since: t0},
			StepNone, "no DHCP request seen from any MAC of this host for 12 min", false},
		{"booting", Situation{Host: h(host.Configured), Known: true, Events: boot, Now: t0.Add(4 * time.Minute)},
			StepFirstStage, "", true},
		{"stuck after the first stage", Situation{Host: h(host.Configured), Known: true, Events: boot, Now: t0.Add(20 * time.Minute)},
			StepFirstStage, "nothing heard from this host for 17 min (last step: first-stage)", false},
		{"render failed", Situation{Host: h(host.Configured), Known: true, Now: t0.Add(4 * time.Minute),
			Events: append(boot[:6:6], at(4, Event{Kind: RenderFailed, File: "final", Reason: `template: x: map has no entry for key "y"`}))},
			StepFirstStage, `final config render failed: template: x: map has no entry for key "y"`, false},
		{"TFTP failed", Situation{Host: h(host.Configured), Known: true, Now: t0.Add(2 * time.Minute),
			Events: append(boot[:2:2], at(1, Event{Kind: TFTPFailed, File: "undionly.kpxe", Reason: "file not found"}))},
			StepDHCP, "TFTP of undionly.kpxe failed: file not found", false},
		{"image missing", Situation{Host: h(host.Installing), Known: true, Now: t0.Add(4 * time.Minute), ImageVersion: "1068.6.0", ImageMissing: true,
			Events: append(boot[:6:6], at(4, Event{Kind: HTTP, Method: "GET", Route: "/images/:serial/install_image.bin.bz2", Status: 404}))},
			StepFirstStage, "image 1068.6.0 missing on disk", false},
		{"image missing before anything", Situation{Host: h(host.Configured), Known: true, Now: t0, ImageVersion: "1068.6.0", ImageMissing: true},
			StepNone, "image 1068.6.0 missing on disk", false},
		{"installed but PXE-booting again", Situation{Host: h(host.Installed), Known: true, Now: t0.Add(30 * time.Minute),
			Events: []Event{at(29, Event{Kind: DHCPIgnored, MAC: mac, Reason: "ignored"})}},
			StepInstalled, "DHCP ignores this MAC: host is installed (it PXE-boots instead of booting its disk; to reinstall: mayuctl set s1 state configured)", false},
		{"installed, no boot_complete", Situation{Host: h(host.Installed), Known: true, Now: t0.Add(30 * time.Minute),
			Events: []Event{at(5, Event{Kind: State, From: "installing", To: "installed"})}},
			StepInstalled, "installed, but no boot_complete for 25 min: does the installed system boot and reach mayu?", false},
		{"running", Situation{Host: h(host.Running), Known: true, Now: t0.Add(time.Hour)},
			StepRunning, "", false},
		{"no address", Situation{Host: h(host.Configured), Known: true, Now: t0,
			Events: []Event{at(0, Event{Kind: DHCPIgnored, MAC: mac, Reason: "no address available"})}},
			StepNone, "DHCP does not answer 08:00:27:8e:15:8a: no address available", false},
		{"a reinstall starts over", Situation{Host: h(host.Configured), Known: true, Now: t0.Add(31 * time.Minute),
			Events: []Event{at(10, Event{Kind: State, To: "running"}), at(30, Event{Kind: DHCPAck, MAC: mac})}},
			StepDHCP, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := Explain(c.s)
			assert.Equal(t, c.step, x.Step)
			assert.Equal(t, c.cause, x.Cause)
			assert.Equal(t, c.progressing, x.Progressing)
			assert.Equal(t, "s1", x.Serial)
		})
	}
}
