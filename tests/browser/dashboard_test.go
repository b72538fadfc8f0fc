//go:build browser

package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/png"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/host"
	"mayu/pkg/proctest"
	"mayu/tools/storm"
)

// updateScreenshot writes the screenshot to docs/dashboard.png (go test
// -tags browser ./browser/ -update-screenshot), the picture the README
// shows.
var updateScreenshot = flag.Bool("update-screenshot", false, "write the screenshot to docs/dashboard.png")

var browserConfig = proctest.Config(proctest.LoopConfig{
	IPStart: "10.9.0.21", IPEnd: "10.9.0.99",
	Profiles: []proctest.Profile{
		{Name: "core-services", Quantity: 3, Tags: []string{"role-core=true"}},
		{Name: "default", Tags: []string{"role-worker=true"}},
	},
})

// domCounts is what the page shows: the machines by state (the count
// boxes' ids without "count-") and by profile, and the table's rows.
type domCounts struct {
	States   map[string]string `json:"states"`
	Profiles map[string]string `json:"profiles"`
	Rows     int               `json:"rows"`
}

const readCounts = `(() => {
  const o = {states: {}, profiles: {}, rows: document.querySelectorAll("#hosts tr").length};
  document.querySelectorAll("#counts-state .count").forEach(d => { o.states[d.id.replace("count-", "")] = d.querySelector("b").textContent; });
  document.querySelectorAll("#counts-profile tr").forEach(r => { o.profiles[r.dataset.profile] = r.querySelector(".machines").textContent; });
  return o;
})()`

// apiCounts is the same, from GET /admin/hosts.
func apiCounts(hosts map[string]host.Host) domCounts {
	c := domCounts{States: map[string]string{}, Profiles: map[string]string{}, Rows: len(hosts)}
	n := map[string]int{"unknown": 0, "configured": 0, "installing": 0, "installed": 0, "running": 0}
	p := map[string]int{}
	for _, h := range hosts {
		n[string(h.State)]++
		p[h.Profile]++
	}
	for k, v := range n {
		c.States[k] = fmt.Sprint(v)
	}
	c.States["total"] = fmt.Sprint(len(hosts))
	for k, v := range p {
		c.Profiles[k] = fmt.Sprint(v)
	}
	return c
}

// The dashboard in a real browser against a real mayu during a storm: the
// counts it shows are /admin/hosts', a reinstall asked for through its
// confirmation dialog changes the record (and a cancelled one does not),
// a screenshot shows the expected parts, and every request the page made
// went to mayu's own loopback origin.
func TestBrowserDashboard(t *testing.T) {
	chromium := proctest.RequireCommand(t, "chromium", "chromium")
	bins := proctest.Build(t)
	d := proctest.StartMayu(t, bins.Mayu, proctest.Flags{Dir: t.TempDir(), ConfigText: browserConfig}, "--no-tls")
	d.WaitReady()
	origin := d.Base // http://127.0.0.1:<port>

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // root in CI
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.WindowSize(1400, 1000),
		chromedp.UserDataDir(t.TempDir()),
		// Nothing of Chromium's own to the outside (updates, safe
		// browsing, metrics): the test's network is loopback only.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
	)...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()

	// Every request the page makes, and every exception its script throws.
	var (
		mu         sync.Mutex
		requests   []string
		exceptions []string
	)
	require.NoError(t, chromedp.Listen(bctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			requests = append(requests, e.Request.URL)
		case *runtime.EventExceptionThrown:
			exceptions = append(exceptions, e.ExceptionDetails.Text)
		}
	}))
	// step runs actions, each bounded; eval and text read one value.
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, c := context.WithTimeout(bctx, 60*time.Second)
		defer c()
		require.NoError(t, chromedp.Do(sctx, actions...), what)
	}
	run := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		sctx, c := context.WithTimeout(bctx, 60*time.Second)
		defer c()
		v, err := chromedp.Run(sctx, a)
		require.NoError(t, err, what)
		return v
	}
	evalBool := func(what, expr string) bool {
		t.Helper()
		sctx, c := context.WithTimeout(bctx, 60*time.Second)
		defer c()
		v, err := chromedp.Run(sctx, chromedp.Evaluate[bool](expr))
		require.NoError(t, err, what)
		return v
	}
	step("open the page", chromedp.Navigate(origin+"/index.html"), chromedp.WaitVisible(chromedp.ID("login")))

	// The storm runs while the operator logs in and watches.
	const machines = 30
	stormDone := make(chan error, 1)
	go func() {
		res, err := storm.Run(ctx, storm.Config{BaseURL: d.Base, Machines: machines, Concurrency: 6, SerialPrefix: "web-",
			Client: d.AdminClient(), Timeout: 20 * time.Second})
		if err == nil && res.Completed != machines {
			err = fmt.Errorf("storm: %d of %d machines completed: %v", res.Completed, machines, res.Errors)
		}
		stormDone <- err
	}()
	step("log in", chromedp.SendKeys(chromedp.ID("token"), d.Token), chromedp.Click(chromedp.CSS("#login button")),
		chromedp.WaitNotVisible(chromedp.ID("login")))
	assert.Equal(t, d.Token, run("token kept in the tab", chromedp.Evaluate[string](`sessionStorage.getItem("mayu-admin-token")`)))
	require.NoError(t, <-stormDone)
	// A few machines that only registered, so not every one is running.
	for _, s := range []string{"web-late-0", "web-late-1"} {
		code, body := d.Do("GET", "/first-stage-script/"+s, "")
		require.Equal(t, 200, code, body)
	}

	// matches waits (bounded) until the page shows what /admin/hosts says.
	matches := func(what string) domCounts {
		t.Helper()
		var want, got domCounts
		deadline := time.Now().Add(45 * time.Second)
		for {
			want = apiCounts(d.Hosts())
			sctx, c := context.WithTimeout(bctx, 30*time.Second)
			var err error
			got, err = chromedp.Run(sctx, chromedp.Evaluate[domCounts](readCounts))
			c()
			require.NoError(t, err, what)
			if assert.ObjectsAreEqual(want, got) || time.Now().After(deadline) {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		require.Equal(t, want, got, "%s: the page's counts are not /admin/hosts'", what)
		return got
	}
	// The page follows mayu's event stream.
	waitTrue := func(what, expr string) {
		t.Helper()
		sctx, c := context.WithTimeout(bctx, 40*time.Second)
		defer c()
		_, err := chromedp.Run(sctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(30*time.Second)))
		require.NoError(t, err, what)
	}
	waitTrue("live", `document.getElementById("mode").textContent === "live"`)
	got := matches("counts after the storm")
	assert.Equal(t, "32", got.States["total"])
	assert.Equal(t, "30", got.States["running"])
	assert.Equal(t, "3", got.Profiles["core-services"])

	assert.Equal(t, "47 free, 32 used", run("pool", chromedp.Text(chromedp.ID("pool-free"))))
	assert.Equal(t, "ip_range 10.9.0.21 \u2013 10.9.0.99: 79 addresses to hand out", run("pool range", chromedp.Text(chromedp.ID("pool-range"))))

	// Reinstall one machine through the page, confirming in the dialog.
	serial := storm.Serial("web-", 7)
	row := fmt.Sprintf(`#hosts tr[data-serial=%q]`, serial)
	step("open the machine", chromedp.Click(chromedp.CSS(row)), chromedp.WaitVisible(chromedp.ID("detail")),
		chromedp.Click(chromedp.ID("act-reinstall")), chromedp.WaitVisible(chromedp.ID("confirm")))
	require.True(t, evalBool("dialog open", `document.getElementById("confirm").open`), "the reinstall waits for confirmation")
	// Behind the dialog: the machine's timeline (its fetches and state
	// changes during the storm) and mayu's explanation.
	waitTrue("timeline loaded", `document.querySelectorAll("#timeline td.kind").length > 0`)
	kinds := run("timeline kinds", chromedp.Evaluate[string](`Array.from(document.querySelectorAll("#timeline td.kind")).map(td => td.textContent).join(",")`))
	for _, k := range []string{"http", "state"} {
		assert.Contains(t, kinds, k, "the timeline shows %s events", k)
	}
	waitTrue("explanation", `document.getElementById("explanation").hasAttribute("data-from-server")`)
	assert.Contains(t, run("explanation", chromedp.Text(chromedp.ID("explanation"))), "state running, last step running")
	assert.Contains(t, run("read the question", chromedp.Text(chromedp.ID("confirm-text"))), serial)
	assert.Equal(t, host.Running, d.Hosts()[serial].State, "nothing happens before the confirmation")
	step("confirm", chromedp.Click(chromedp.ID("confirm-ok")))
	sctx, c := context.WithTimeout(bctx, 30*time.Second)
	_, err := chromedp.Run(sctx, chromedp.Poll[bool](`document.getElementById("action-result").textContent.includes("HTTP 202")`,
		chromedp.WithPollingTimeout(20*time.Second)))
	c()
	require.NoError(t, err, "the change is answered")
	assert.Equal(t, "PUT set_state: HTTP 202 \u2014 done", run("result", chromedp.Text(chromedp.ID("action-result"))))
	// The state change comes back over the stream onto the timeline.
	waitTrue("state event streamed", `Array.from(document.querySelectorAll("#timeline tr")).some(tr => tr.textContent.includes("running \u2192 configured"))`)
	h := d.Hosts()[serial]
	assert.Equal(t, host.Configured, h.State)
	assert.True(t, h.KeepDiskData)

	// A cancelled mark-fresh changes nothing.
	step("cancel", chromedp.Click(chromedp.ID("act-fresh")), chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("confirm-cancel")), chromedp.WaitNotVisible(chromedp.ID("confirm")))
	assert.Equal(t, "cancelled", run("result", chromedp.Text(chromedp.ID("action-result"))))
	assert.True(t, d.Hosts()[serial].KeepDiskData, "a cancelled mark-fresh wipes nothing")
	// Set metadata, confirmed.
	step("set metadata", chromedp.SetValue(chromedp.ID("metadata"), "role-worker=true, rack=b7"),
		chromedp.Click(chromedp.ID("act-metadata")), chromedp.WaitVisible(chromedp.ID("confirm")))
	assert.Contains(t, run("read the question", chromedp.Text(chromedp.ID("confirm-text"))), "role-worker=true,rack=b7")
	step("confirm metadata", chromedp.Click(chromedp.ID("confirm-ok")))
	waitTrue("metadata set", `document.getElementById("action-result").textContent.includes("set_metadata: HTTP 202")`)
	assert.Equal(t, host.FleetMeta{"role-worker=true", "rack=b7"}, d.Hosts()[serial].FleetMetadata)
	got = matches("counts after the reinstall")
	assert.Equal(t, "3", got.States["configured"])

	// The screenshot, and the parts it must show.
	sctx, c = context.WithTimeout(bctx, 60*time.Second)
	shot, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	c()
	require.NoError(t, err, "screenshot")
	img, err := png.Decode(bytes.NewReader(shot))
	require.NoError(t, err, "a PNG")
	assert.GreaterOrEqual(t, img.Bounds().Dx(), 1000)
	assert.Greater(t, colours(img), 8, "not a blank page")
	for _, sel := range []string{"#counts-state", "#counts-profile", "#pool", "#hosts", "#detail", "#explanation"} {
		visible := evalBool("visible "+sel, fmt.Sprintf(`(() => { const e = document.querySelector(%q); const r = e.getBoundingClientRect(); return !e.closest("[hidden]") && r.width > 0 && r.height > 0; })()`, sel))
		assert.True(t, visible, "%s shows", sel)
	}
	assert.True(t, evalBool("timeline", `document.getElementById("timeline").rows.length > 0 || !document.getElementById("timeline-empty").hidden`),
		"the machine's timeline, or the note that it has none, shows")
	out := t.TempDir() + "/dashboard.png"
	if *updateScreenshot {
		out = proctest.RepoPath(t, "docs", "dashboard.png")
	}
	require.NoError(t, os.WriteFile(out, shot, 0o644))
	t.Logf("screenshot: %s (%d bytes)", out, len(shot))

	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, requests)
	for _, r := range requests {
		u, err := url.Parse(r)
		require.NoError(t, err)
		assert.Equal(t, origin, u.Scheme+"://"+u.Host, "request to somewhere else: %s", r)
	}
	assert.Empty(t, exceptions, "the page's script threw")
	t.Logf("%d requests, all to %s", len(requests), origin)
	if b, err := json.Marshal(got); err == nil {
		t.Logf("page counts: %s", b)
	}
}

// colours counts the distinct colours of img (up to 1000).
func colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y && len(seen) < 1000; y += 3 {
		for x := b.Min.X; x < b.Max.X && len(seen) < 1000; x += 3 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
		}
	}
	return len(seen)
}
