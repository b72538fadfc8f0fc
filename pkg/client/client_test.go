package client_test

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/client"
	"mayu/pkg/client/clienttest"
	"mayu/pkg/host"
	"mayu/pkg/store"
)

const serial = "0800278e158a-0"

var bootTime = time.Date(2016, 8, 9, 15, 49, 2, 344687863, time.UTC)

// newFake starts the fake admin API with one machine in state st.
func newFake(t *testing.T, st host.State) (*store.Memory, *clienttest.Server, *httptest.Server) {
	t.Helper()
	mem := store.NewMemory()
	t.Cleanup(func() { _ = mem.Close() })
	_, err := mem.Create(serial, store.Step{Message: "host created", Apply: func(h *host.Host) error {
		h.Enabled = true
		h.State = st
		h.InternalAddr = net.ParseIP("192.168.2.21").To4()
		h.MacAddresses = []string{"08:00:27:8e:15:8a"} // reported with its facts: DHCP can ignore it once installed
		h.Profile = "core-services"
		h.FleetMetadata = host.FleetMeta{"role-core=true"}
		return nil
	}})
	require.NoError(t, err)
	fake := clienttest.New(mem, func() time.Time { return bootTime })
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return mem, fake, srv
}

func newClient(t *testing.T, baseURL string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{BaseURL: baseURL, Timeout: 10 * time.Second, Token: clienttest.AdminToken})
	require.NoError(t, err)
	return c
}

func TestSetters(t *testing.T) {
	tests := []struct {
		name    string
		from    host.State
		call    func(c *client.Client) error
		path    string
		body    string
		message string
		check   func(t *testing.T, h host.Host)
	}{
		{
			name: "metadata", from: host.Running,
			call: func(c *client.Client) error {
				return c.SetMetadata(context.Background(), serial, []string{"a=b", "c=d"})
			},
			path:    "/admin/host/" + serial + "/set_metadata",
			body:    `{"FleetMetadata":["a=b","c=d"]}`,
			message: "updated host metadata",
			check:   func(t *testing.T, h host.Host) { assert.Equal(t, host.FleetMeta{"a=b", "c=d"}, h.FleetMetadata) },
		},
		{
			name: "metadata cleared", from: host.Running,
			call:    func(c *client.Client) error { return c.SetMetadata(context.Background(), serial, nil) },
			path:    "/admin/host/" + serial + "/set_metadata",
			body:    `{"FleetMetadata":[]}`,
			message: "updated host metadata",
			check:   func(t *testing.T, h host.Host) { assert.Empty(t, h.FleetMetadata) },
		},
		{
			name: "provider id", from: host.Running,
			call:    func(c *client.Client) error { return c.SetProviderID(context.Background(), serial, "rack-7/u12") },
			path:    "/admin/host/" + serial + "/set_provider_id",
			body:    `{"ProviderId":"rack-7/u12"}`,
			message: "updated host provider id",
			check:   func(t *testing.T, h host.Host) { assert.Equal(t, "rack-7/u12", h.ProviderId) },
		},
		{
			name: "ipmi address", from: host.Running,
			call: func(c *client.Client) error {
				return c.SetIPMIAddr(context.Background(), serial, net.ParseIP("10.0.0.5"))
			},
			path:    "/admin/host/" + serial + "/set_ipmi_addr",
			body:    `{"IPMIAddr":"10.0.0.5"}`,
			message: "updated host ipmi address",
			check:   func(t *testing.T, h host.Host) { assert.Equal(t, "10.0.0.5", h.IPMIAddr.String()) },
		},
		{
			name: "cabinet", from: host.Running,
			call:    func(c *client.Client) error { return c.SetCabinet(context.Background(), serial, 4) },
			path:    "/admin/host/" + serial + "/set_cabinet",
			body:    `{"Cabinet":4}`,
			message: "updated host cabinet",
			check:   func(t *testing.T, h host.Host) { assert.EqualValues(t, 4, h.Cabinet) },
		},
		{
			name: "state", from: host.Running,
			call:    func(c *client.Client) error { return c.SetState(context.Background(), serial, host.Configured) },
			path:    "/admin/host/" + serial + "/set_state",
			body:    `{"State":"configured"}`,
			message: "updated host state",
			check: func(t *testing.T, h host.Host) {
				assert.Equal(t, host.Configured, h.State)
				assert.True(t, h.KeepDiskData)
			},
		},
		{
			name: "etcd token", from: host.Running,
			call: func(c *client.Client) error {
				return c.SetEtcdClusterToken(context.Background(), serial, "416b381afbc752dfc77e48ba7a99ccc3")
			},
			path:    "/admin/host/" + serial + "/set_etcd_cluster_token",
			body:    `{"EtcdClusterToken":"416b381afbc752dfc77e48ba7a99ccc3"}`,
			message: "updated host etcd cluster token",
			check: func(t *testing.T, h host.Host) {
				assert.Equal(t, "416b381afbc752dfc77e48ba7a99ccc3", h.EtcdClusterToken)
			},
		},
		{
			name: "override", from: host.Running,
			call: func(c *client.Client) error {
				return c.Override(context.Background(), serial, map[string]any{"CoreOSVersion": "1122.2.0"})
			},
			path:    "/admin/host/" + serial + "/override",
			body:    `{"Overrides":{"CoreOSVersion":"1122.2.0"}}`,
			message: "updated host overrides: CoreOSVersion",
			check: func(t *testing.T, h host.Host) {
				assert.Equal(t, map[string]any{"CoreOSVersion": "1122.2.0"}, h.Overrides)
			},
		},
		{
			name: "mark fresh", from: host.Running,
			call:    func(c *client.Client) error { return c.MarkFresh(context.Background(), serial) },
			path:    "/admin/host/" + serial + "/mark_fresh",
			body:    `{}`,
			message: "host flagged as fresh",
			check: func(t *testing.T, h host.Host) {
				assert.Equal(t, host.Configured, h.State)
				assert.False(t, h.KeepDiskData)
			},
		},
		{
			name: "set installed", from: host.Installing,
			call:    func(c *client.Client) error { return c.SetInstalled(context.Background(), serial) },
			path:    "/admin/host/" + serial + "/set_installed",
			body:    `{}`,
			message: "updated state to installed",
			check:   func(t *testing.T, h host.Host) { assert.Equal(t, host.Installed, h.State) },
		},
		{
			name: "boot complete", from: host.Installed,
			call: func(c *client.Client) error {
				return c.BootComplete(context.Background(), serial, client.Versions{
					CoreOSVersion: "1068.6.0", MayuVersion: "0.11.1", DockerVersion: "1.10.3",
					EtcdVersion: "v2.2.5", FleetVersion: "v0.11.7", YochuVersion: "0.19.1",
					RktVersion: "1.3.0", K8sVersion: "1.3.4",
				})
			},
			path: "/admin/host/" + serial + "/boot_complete",
			body: `{"CoreOSVersion":"1068.6.0","MayuVersion":"0.11.1","DockerVersion":"1.10.3",` +
				`"FleetVersion":"v0.11.7","EtcdVersion":"v2.2.5","RktVersion":"1.3.0","K8sVersion":"1.3.4","YochuVersion":"0.19.1"}`,
			message: "updated state to running",
			check: func(t *testing.T, h host.Host) {
				assert.Equal(t, host.Running, h.State)
				assert.True(t, bootTime.Equal(h.LastBoot))
				assert.Equal(t, "1068.6.0", h.CoreOSVersion)
				assert.Equal(t, "0.11.1", h.MayuVersion)
				assert.Equal(t, "1.3.4", h.K8sVersion)
				assert.Equal(t, "0.19.1", h.YochuVersion)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mem, fake, srv := newFake(t, tc.from)
			c := newClient(t, srv.URL)
			require.NoError(t, tc.call(c))

			reqs := fake.Requests()
			require.Len(t, reqs, 1)
			assert.Equal(t, http.MethodPut, reqs[0].Method)
			assert.Equal(t, tc.path, reqs[0].Path)
			assert.Equal(t, "application/json", reqs[0].ContentType)
			assert.JSONEq(t, tc.body, reqs[0].Body)

			// The subject is Mayu 0.11's; the trailer names who asked: the
			// token's owner, or the machine on its own routes.
			principal := "admin:operator"
			if strings.HasSuffix(tc.path, "/set_installed") || strings.HasSuffix(tc.path, "/boot_complete") {
				principal = "machine:" + serial
			}
			msgs := mem.Messages()
			assert.Equal(t, serial+": "+tc.message+"\n\nPrincipal: "+principal+"\nRemote-Address: 127.0.0.1", msgs[len(msgs)-1])
			h, err := mem.Get(serial)
			require.NoError(t, err)
			tc.check(t, h)
		})
	}
}

func TestListAndGet(t *testing.T) {
	_, _, srv := newFake(t, host.Running)
	c := newClient(t, srv.URL)

	hosts, err := c.List(context.Background())
	require.NoError(t, err)
	require.Len(t, hosts, 1)
	assert.Equal(t, serial, hosts[0].Serial)
	assert.Equal(t, "192.168.2.21", hosts[0].InternalAddr.String())
	assert.Equal(t, host.Running, hosts[0].State)

	// Serials are matched the way mayu stores them: lower-cased.
	h, err := c.Get(context.Background(), "0800278E158A-0")
	require.NoError(t, err)
	assert.Equal(t, serial, h.Serial)

	_, err = c.Get(context.Background(), "nope")
	assert.ErrorIs(t, err, client.ErrNotFound)
	assert.EqualError(t, err, `client: host not found: "nope"`)
}

func TestServerErrors(t *testing.T) {
	tests := []struct {
		name   string
		from   host.State
		call   func(c *client.Client) error
		status int
		reason string
	}{
		{"unknown serial", host.Running,
			func(c *client.Client) error { return c.SetCabinet(context.Background(), "unknown-1", 1) },
			http.StatusNotFound, "store: host not found: unknown-1"},
		{"forbidden transition", host.Configured,
			func(c *client.Client) error { return c.SetState(context.Background(), serial, host.Running) },
			http.StatusConflict, "host: forbidden state transition from configured to running: a machine reports running itself when it boots " +
				`(boot_complete); Mayu 0.11's "set state running" meant reinstall with the data disk wiped, which is mayuctl mark-fresh`},
		{"installed before installing", host.Configured,
			func(c *client.Client) error { return c.SetInstalled(context.Background(), serial) },
			http.StatusConflict, "host: forbidden state transition from configured to installed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, srv := newFake(t, tc.from)
			err := tc.call(newClient(t, srv.URL))
			var ce *client.Error
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, tc.status, ce.Status)
			assert.Equal(t, tc.reason, ce.Reason)
			assert.Equal(t, tc.status == http.StatusNotFound, errors.Is(err, client.ErrNotFound))
		})
	}
}

func TestErrorReasons(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"plain text, first line only", 400, "bad cabinet\nstack trace\n", "mayu answered 400 Bad Request: bad cabinet"},
		{"echo JSON message", 404, `{"message":"Not Found"}`, "mayu answered 404 Not Found: Not Found"},
		{"empty body", 500, "", "mayu answered 500 Internal Server Error"},
		{"leading blank lines and control characters", 409, "\n\n  a\tb\x1b  \n", "mayu answered 409 Conflict: a b"},
		{"proxy error page", 502, "<html>\nbad gateway</html>", "mayu answered 502 Bad Gateway: <html>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			_, err := newClient(t, srv.URL).List(context.Background())
			assert.EqualError(t, err, tc.want)
		})
	}
}

func TestAnyTwoXXIsSuccess(t *testing.T) {
	for _, status := range []int{200, 201, 202, 204} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(status)
		}))
		err := newClient(t, srv.URL).MarkFresh(context.Background(), serial)
		assert.NoError(t, err, "status %d", status)
		srv.Close()
	}
}

func TestBadListBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("<html>welcome</html>"))
	}))
	defer srv.Close()
	_, err := newClient(t, srv.URL).List(context.Background())
	assert.ErrorIs(t, err, client.ErrBadResponse)
}

func TestRefusedBeforeSending(t *testing.T) {
	// Nothing listens here: a request that reached the network would fail
	// with ErrUnreachable instead of ErrInvalidArgument.
	c := newClient(t, "http://127.0.0.1:1")
	ctx := context.Background()
	tests := map[string]error{
		"path traversal serial": c.MarkFresh(ctx, "../../etc"),
		"empty serial":          c.SetCabinet(ctx, "", 1),
		"serial with slash":     c.SetProviderID(ctx, "a/b", "x"),
		"nil IPMI address":      c.SetIPMIAddr(ctx, serial, nil),
		"invalid state":         c.SetState(ctx, serial, host.State("bogus")),
		"no overrides":          c.Override(ctx, serial, nil),
		"empty override key":    c.Override(ctx, serial, map[string]any{" ": "x"}),
	}
	for name, err := range tests {
		assert.ErrorIs(t, err, client.ErrInvalidArgument, name)
	}
	assert.ErrorIs(t, c.MarkFresh(ctx, "../../etc"), host.ErrInvalidSerial)
}

func TestUnreachable(t *testing.T) {
	// A port that was just free: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	_, err = newClient(t, "http://"+addr).List(context.Background())
	assert.ErrorIs(t, err, client.ErrUnreachable)
	assert.Contains(t, err.Error(), "http://"+addr)
	assert.Contains(t, err.Error(), "connection refused")
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	c, err := client.New(client.Config{BaseURL: srv.URL, Timeout: 50 * time.Millisecond})
	require.NoError(t, err)
	_, err = c.List(context.Background())
	assert.ErrorIs(t, err, client.ErrUnreachable)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "no answer within 50ms")

	// The caller's context is honoured too.
	c, err = client.New(client.Config{BaseURL: srv.URL, Timeout: time.Minute})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.List(ctx)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  client.Config
		want string
		err  bool
	}{
		{"defaults", client.Config{}, "https://localhost:4080", false},
		{"no tls", client.Config{Host: "192.168.2.2", Port: 8080, NoTLS: true}, "http://192.168.2.2:8080", false},
		{"ipv6", client.Config{Host: "::1", NoTLS: true}, "http://[::1]:4080", false},
		{"bracketed ipv6", client.Config{Host: "[::1]"}, "https://[::1]:4080", false},
		{"base url wins", client.Config{BaseURL: "http://10.0.0.1:1234/", Host: "x"}, "http://10.0.0.1:1234", false},
		{"bad port", client.Config{Port: 70000}, "", true},
		{"negative port", client.Config{Port: -1}, "", true},
		{"host with path", client.Config{Host: "a/b"}, "", true},
		{"bad base url", client.Config{BaseURL: "ftp://x"}, "", true},
		{"missing CA file", client.Config{CAFile: "/nonexistent/ca.pem"}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(tc.cfg)
			if tc.err {
				assert.ErrorIs(t, err, client.ErrInvalidArgument)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.BaseURL())
		})
	}
}

func TestTLS(t *testing.T) {
	mem := store.NewMemory()
	defer mem.Close()
	srv := httptest.NewUnstartedServer(clienttest.New(mem, nil))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are the point
	srv.StartTLS()
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	port, err := strconv.Atoi(u.Port())
	require.NoError(t, err)

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile,
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600))
	garbage := filepath.Join(dir, "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not a certificate"), 0o600))

	list := func(cfg client.Config) error {
		// httptest's certificate is for 127.0.0.1 and example.com.
		cfg.Host, cfg.Port, cfg.Token = "127.0.0.1", port, clienttest.AdminToken
		c, err := client.New(cfg)
		if err != nil {
			return err
		}
		_, err = c.List(context.Background())
		return err
	}

	err = list(client.Config{})
	assert.ErrorIs(t, err, client.ErrUnreachable, "untrusted self-signed certificate must fail")
	assert.Contains(t, err.Error(), "certificate")

	assert.NoError(t, list(client.Config{CAFile: caFile}), "CA file trusts the server")
	assert.NoError(t, list(client.Config{Insecure: true}), "insecure skips verification")
	assert.ErrorIs(t, list(client.Config{CAFile: garbage}), client.ErrInvalidArgument)
	err = list(client.Config{CAFile: caFile, Insecure: true})
	assert.ErrorIs(t, err, client.ErrInvalidArgument, "--insecure with --ca-file is a contradiction")
	assert.ErrorContains(t, err, "--insecure and --ca-file")

	// Plain HTTP to a TLS port is a clear failure, not a hang.
	err = list(client.Config{NoTLS: true})
	var ce *client.Error
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, http.StatusBadRequest, ce.Status)
}

func TestOldMayuctlBodies(t *testing.T) {
	// Mayu 0.11's mayuctl sends a whole host record as the body; the fake
	// (like our daemon) must take the one field the route is about.
	mem, _, srv := newFake(t, host.Running)
	req, err := http.NewRequest(http.MethodPut, srv.URL+"/admin/host/"+serial+"/set_cabinet",
		strings.NewReader(`{"Cabinet":3,"ConnectedNIC":"","LastBoot":"0001-01-01T00:00:00Z","State":"unknown"}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json") // what 0.11's mayuctl sends
	req.Header.Set("Authorization", "Bearer "+clienttest.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusAccepted, resp.StatusCode)
	h, err := mem.Get(serial)
	require.NoError(t, err)
	assert.EqualValues(t, 3, h.Cabinet)
	assert.Equal(t, host.Running, h.State)
}

func TestOldMayuEmptyList(t *testing.T) {
	// Mayu 0.11 encodes an empty cluster as null.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("null\n"))
	}))
	defer srv.Close()
	hosts, err := newClient(t, srv.URL).List(context.Background())
	require.NoError(t, err)
	assert.Empty(t, hosts)
}

func TestOldMayuRecords(t *testing.T) {
	// A record as Mayu 0.11 serves it, with the oldest integer state.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`[{"Id":1,"Enabled":true,"Serial":"abc","MacAddresses":["08:00:27:8e:15:8a"],
			"InternalAddr":"192.168.2.21","ConnectedNIC":"eth0","FleetMetadata":["role-core=true"],
			"LastBoot":"2016-08-09T15:49:02.344687863+02:00","Profile":"core-services","State":3}]`))
	}))
	defer srv.Close()
	h, err := newClient(t, srv.URL).Get(context.Background(), "ABC")
	require.NoError(t, err)
	assert.Equal(t, host.Running, h.State)
	assert.Equal(t, "192.168.2.21", h.InternalAddr.String())
	assert.Equal(t, "2016-08-09 15:49:02.344687863 +0200 +0200", h.LastBoot.String())
}

// A machine's client sends its credential with every request.
func TestMachineToken(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Mayu-Machine-Token"))
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	c, err := client.New(client.Config{BaseURL: srv.URL, MachineToken: "tok-1"})
	require.NoError(t, err)
	require.NoError(t, c.BootComplete(context.Background(), "m1", client.Versions{}))
	c, err = client.New(client.Config{BaseURL: srv.URL})
	require.NoError(t, err)
	require.NoError(t, c.SetInstalled(context.Background(), "m1"))
	assert.Equal(t, []string{"tok-1", ""}, got)
}
