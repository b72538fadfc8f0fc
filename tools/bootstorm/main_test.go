package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/tools/storm"
)

func TestParseMix(t *testing.T) {
	tests := []struct {
		in      string
		want    storm.Mix
		wantErr string
	}{
		{"", storm.Mix{}, ""},
		{"hosts=0.05", storm.Mix{Hosts: 0.05}, ""},
		{"hosts=0.1, range=2", storm.Mix{Hosts: 0.1, Range: 2}, ""},
		{"range=x", storm.Mix{}, "rate must be a number"},
		{"hosts=101", storm.Mix{}, "rate must be a number"},
		{"bogus=1", storm.Mix{}, "unknown request kind"},
		{"hosts", storm.Mix{}, "want name=rate"},
	}
	for _, tt := range tests {
		got, err := parseMix(tt.in)
		if tt.wantErr != "" {
			assert.ErrorContains(t, err, tt.wantErr, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got, tt.in)
	}
}

func TestCheckURLKeepsToLoopback(t *testing.T) {
	tests := []struct {
		url    string
		remote bool
		ok     bool
	}{
		{"http://127.0.0.1:4080", false, true},
		{"https://[::1]:4080/", false, true},
		{"http://localhost:4080", false, true},
		{"http://192.168.2.2:4080", false, false},
		{"http://mayu.example:4080", false, false},
		{"http://192.168.2.2:4080", true, true},
		{"ftp://127.0.0.1", false, false},
		{"127.0.0.1:4080", false, false},
	}
	for _, tt := range tests {
		err := checkURL(tt.url, tt.remote)
		assert.Equal(t, tt.ok, err == nil, "%s remote=%v: %v", tt.url, tt.remote, err)
	}
}

// fakeMayu answers the life cycle and lists what it saw.
func fakeMayu(t *testing.T) *httptest.Server {
	var n atomic.Int64
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	seen := []string{}
	mux := http.NewServeMux()
	mux.HandleFunc("/first-stage-script/", func(w http.ResponseWriter, r *http.Request) {
		<-mu
		seen = append(seen, strings.TrimPrefix(r.URL.Path, "/first-stage-script/"))
		mu <- struct{}{}
		_, _ = w.Write([]byte("#!/bin/sh\n"))
	})
	mux.HandleFunc("/final-cloud-config.yaml", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("#cloud-config\n")) })
	mux.HandleFunc("/admin/host/", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	mux.HandleFunc("/admin/hosts", func(w http.ResponseWriter, r *http.Request) {
		<-mu
		defer func() { mu <- struct{}{} }()
		var b strings.Builder
		b.WriteString("[")
		for i, s := range seen {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"Serial":%q,"State":"running","InternalAddr":"10.0.%d.%d","Profile":"default"}`, s, i/250, i%250+1)
		}
		b.WriteString("]")
		n.Add(1)
		_, _ = w.Write([]byte(b.String()))
	})
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

func TestRunPrintsJSONAndExitsZero(t *testing.T) {
	ts := fakeMayu(t)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"-url", ts.URL, "-machines", "20", "-concurrency", "4", "-serial-prefix", "cli-",
		"-preload", "5", "-mix", "hosts=0.1", "-json"}, &out, &errb)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", out.String(), errb.String())
	var rep struct {
		Preload int
		Storm   struct {
			Completed int                    `json:"completed"`
			Routes    map[string]storm.Stats `json:"routes"`
		} `json:"storm"`
		Check struct {
			Hosts int `json:"hosts"`
		} `json:"check"`
		Failures []string `json:"failures"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
	assert.Equal(t, 5, rep.Preload)
	assert.Equal(t, 20, rep.Storm.Completed)
	assert.Equal(t, 2, rep.Storm.Routes[storm.RouteHosts].Count)
	assert.Equal(t, 25, rep.Check.Hosts, "5 preloaded and 20 storm machines")
	assert.Empty(t, rep.Failures)
}

func TestRunFailsOnAFailedCheck(t *testing.T) {
	// A server that forgets every machine: the storm itself succeeds, the
	// end-state check does not.
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/admin/hosts":
			_, _ = w.Write([]byte("[]"))
		case r.Method == http.MethodPut:
			w.WriteHeader(http.StatusAccepted)
		default:
			_, _ = w.Write([]byte("ok\n"))
		}
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"-url", ts.URL, "-machines", "3", "-concurrency", "1", "-serial-prefix", "x-"}, &out, &errb)
	assert.Equal(t, 1, code, out.String())
	assert.Contains(t, out.String(), "FAILED")
	assert.Contains(t, out.String(), "storm machine missing: 3: x-000000")

	out.Reset()
	code = run(context.Background(), []string{"-url", ts.URL, "-machines", "3", "-concurrency", "1", "-no-check"}, &out, &errb)
	assert.Equal(t, 0, code, out.String())

	code = run(context.Background(), []string{"-url", "http://192.168.2.2:4080", "-machines", "1"}, &out, &errb)
	assert.Equal(t, 2, code, "a remote URL needs -allow-remote")
	assert.Contains(t, errb.String(), "not a loopback address")
}
