package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/proctest"
	"mayu/tools/storm"
)

// metricLine returns the value of the sample line of a text exposition
// that starts with series ("name" or "name{labels}"), or "" if none.
func metricLine(body, series string) string {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	return ""
}

// The real binary after a small storm: /metrics needs the admin
// credential, counts what the storm did, and `promtool check metrics`
// (Prometheus' own linter of names, units, help and types) finds nothing
// to say about a real scrape.
func TestProcessMetricsPassPromtool(t *testing.T) {
	promtool := proctest.RequireCommand(t, "promtool", "prometheus")
	d := startDaemon(t, t.TempDir(), "--no-tls")
	d.WaitReady()

	const machines = 20
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := storm.Run(ctx, storm.Config{
		BaseURL: d.Base, Machines: machines, Concurrency: 8, SerialPrefix: "metrics-",
		Client: d.AdminClient(), Timeout: 10 * time.Second,
	})
	require.NoError(t, err)
	require.Equal(t, machines, res.Completed, "storm errors: %v", res.Errors)

	code, _ := proctest.DoWith(t, d.Client, nil, "GET", d.Base+"/metrics", "")
	assert.Equal(t, 401, code, "no credential, no metrics")
	code, body := d.Do("GET", "/metrics", "")
	require.Equal(t, 200, code, body)

	for series, want := range map[string]string{
		"mayu_registrations_total":                               "20",
		"mayu_final_configs_total":                               "20",
		"mayu_installs_total":                                    "20",
		"mayu_boot_completions_total":                            "20",
		`mayu_machines{profile="core-services",state="running"}`: "3",
		`mayu_machines{profile="default",state="running"}`:       "17",
		`mayu_profile_free_slots{profile="core-services"}`:       "0",
		// processConfig: 10.9.0.21-99 less its router/DNS (10.9.0.1 is
		// outside): 79, twenty taken.
		"mayu_ip_range_addresses":      "79",
		"mayu_ip_range_free_addresses": "59",
		`mayu_http_requests_total{code="200",method="GET",route="/first-stage-script/:serial"}`: "20",
	} {
		assert.Equal(t, want, metricLine(body, series), series)
	}
	assert.Contains(t, body, `mayu_build_info{commit=`)
	assert.NotEmpty(t, metricLine(body, "mayu_store_commit_batch_size_count"))

	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	assert.NoError(t, err, "promtool check metrics:\n%s", out.String())
	assert.Empty(t, strings.TrimSpace(out.String()), "promtool check metrics has something to say")
}

// --metrics-no-auth opens /metrics, and only it.
func TestProcessMetricsNoAuth(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--no-tls", "--metrics-no-auth")
	d.WaitReady()
	code, body := proctest.DoWith(t, d.Client, nil, "GET", d.Base+"/metrics", "")
	assert.Equal(t, 200, code)
	assert.Contains(t, body, "mayu_build_info")
	code, _ = proctest.DoWith(t, d.Client, nil, "GET", d.Base+"/admin/hosts", "")
	assert.Equal(t, 401, code)
}
