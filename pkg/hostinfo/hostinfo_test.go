package hostinfo_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/hostinfo"
	"mayu/pkg/hostinfo/hostinfotest"
)

// machine is a typical server: two onboard NICs, an InfiniBand card, a
// bridge and a bond, loopback, DHCP default route on eth1.
func machine() hostinfotest.System {
	return hostinfotest.System{
		DMI: map[string]string{
			"product_serial": "To be filled by O.E.M.\n",
			"chassis_serial": "  CZ J 4021 7X \n",
			"board_serial":   "BRD123\n",
		},
		NICs: []hostinfotest.NIC{
			{Name: "lo", Address: "00:00:00:00:00:00", Virtual: true},
			{Name: "eth1", Address: "08:00:27:8E:15:8B"},
			{Name: "eth0", Address: "08:00:27:8e:15:8a"},
			{Name: "br0", Address: "08:00:27:8e:15:8a", Virtual: true},
			{Name: "bond0", Address: "02:00:00:00:00:01", Virtual: true},
			{Name: "ib0", Address: "80:00:02:08:fe:80:00:00:00:00:00:00:f4:52:14:03:00:7b:cb:a1"},
			{Name: "odd0", Address: "02:00:00:00:00:02", NoDevice: true},
		},
		Route: hostinfotest.RouteHeader +
			"eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n" +
			"eth1\t00000000\t0202A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
			"eth1\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n",
	}
}

func collector(t *testing.T, s hostinfotest.System) *hostinfo.Collector {
	t.Helper()
	sys, proc := hostinfotest.Write(t, t.TempDir(), s)
	return hostinfo.New(hostinfo.Config{SysRoot: sys, ProcRoot: proc, IPMITool: "-"})
}

func TestSerial(t *testing.T) {
	tests := []struct {
		name string
		dmi  map[string]string
		want string
		err  bool
	}{
		{"product serial, spaces become dashes", map[string]string{"product_serial": "VMware-56 4d 1c\n", "chassis_serial": "x"}, "VMware-56-4d-1c", false},
		{"placeholder product, chassis used", map[string]string{"product_serial": "To be filled by O.E.M.", "chassis_serial": "CH 42"}, "CH-42", false},
		{"VirtualBox zero skipped, board used", map[string]string{"product_serial": "0", "chassis_serial": "", "board_serial": "BRD-7"}, "BRD-7", false},
		{"unreadable product, chassis used", map[string]string{"chassis_serial": "C1"}, "C1", false},
		// Mayu 0.11 used the first placeholder: every board of the model
		// then shared one record. mayu refuses placeholders now.
		{"only placeholders: no serial", map[string]string{"product_serial": "0", "chassis_serial": "Default string"}, "", true},
		{"placeholders, then the system UUID", map[string]string{"product_serial": "0", "chassis_serial": "Default string",
			"board_serial": "None", "product_uuid": "4c4c4544-0042-3510-8052-b4c04f4b4e31\n"}, "4c4c4544-0042-3510-8052-b4c04f4b4e31", false},
		{"seed's VirtualBox serial", map[string]string{"product_serial": "0800278e158a-0"}, "0800278e158a-0", false},
		{"nothing at all", map[string]string{"product_serial": "", "chassis_serial": " \n"}, "", true},
		{"no DMI files", map[string]string{}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := collector(t, hostinfotest.System{DMI: tc.dmi}).Serial()
			if tc.err {
				assert.ErrorIs(t, err, hostinfo.ErrNoSerial)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestNetDevs(t *testing.T) {
	devs, err := collector(t, machine()).NetDevs()
	require.NoError(t, err)
	// lo, br0, bond0 are virtual, odd0 has no device, ib0 has no Ethernet
	// MAC; MACs come out lower-case; sorted by name.
	assert.Equal(t, []hostinfo.NetDev{
		{Name: "eth0", MacAddress: "08:00:27:8e:15:8a"},
		{Name: "eth1", MacAddress: "08:00:27:8e:15:8b"},
	}, devs)

	_, err = hostinfo.New(hostinfo.Config{SysRoot: t.TempDir()}).NetDevs()
	assert.ErrorIs(t, err, hostinfo.ErrRead)
}

func TestConnectedNIC(t *testing.T) {
	h := hostinfotest.RouteHeader
	tests := []struct {
		name, route, want string
	}{
		{"default via gateway", h + "eth1\t00000000\t0202A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n", "eth1"},
		{"lowest metric wins", h +
			"eth1\t00000000\t0202A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
			"eth0\t00000000\t0102A8C0\t0003\t0\t0\t10\t00000000\t0\t0\t0\n", "eth0"},
		{"device route without gateway counts", h + "eth2\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n", "eth2"},
		{"route that is down is ignored", h +
			"eth0\t00000000\t0102A8C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n" +
			"eth1\t00000000\t0202A8C0\t0003\t0\t0\t500\t00000000\t0\t0\t0\n", "eth1"},
		{"no default route", h + "eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n", ""},
		{"garbage lines are skipped", h + "eth0 zz\nbad\tline\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := collector(t, hostinfotest.System{Route: tc.route}).ConnectedNIC()
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
	_, err := collector(t, hostinfotest.System{}).ConnectedNIC()
	assert.ErrorIs(t, err, hostinfo.ErrRead)
}

const lanPrint = `Set in Progress         : Set Complete
Auth Type Support       : NONE MD2 MD5 PASSWORD
IP Address Source       : Static Address
IP Address              : 10.0.0.17
Subnet Mask             : 255.255.255.0
MAC Address             : 0c:c4:7a:aa:bb:cc
Default Gateway IP      : 10.0.0.1
`

func TestParseIPMILanPrint(t *testing.T) {
	assert.Equal(t, net.ParseIP("10.0.0.17").To4(), hostinfo.ParseIPMILanPrint([]byte(lanPrint)))
	assert.Nil(t, hostinfo.ParseIPMILanPrint([]byte("IP Address Source : DHCP\nIP Address : 0.0.0.0\n")))
	assert.Nil(t, hostinfo.ParseIPMILanPrint([]byte("Could not open device at /dev/ipmi0\n")))
}

func TestIPMIAddress(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755))
		return p
	}
	tests := []struct {
		name, tool string
		want       net.IP
	}{
		{"BMC answers", script("ok", "[ \"$1 $2\" = 'lan print' ] || exit 3\ncat <<'EOF'\n"+lanPrint+"EOF\n"), net.ParseIP("10.0.0.17").To4()},
		{"no BMC", script("fail", "echo 'Could not open device at /dev/ipmi0' >&2; exit 1\n"), nil},
		{"no ipmitool", filepath.Join(dir, "absent"), nil},
		{"turned off", "-", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := hostinfo.New(hostinfo.Config{IPMITool: tc.tool})
			assert.Equal(t, tc.want, c.IPMIAddress(context.Background()))
		})
	}
}

func TestCollectAndPost(t *testing.T) {
	var got hostinfo.Info
	var raw []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, http.MethodPost, r.Method)
		assert.Equal(t, "/final-cloud-config.yaml", r.URL.Path)
		assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
		raw, _ = io.ReadAll(r.Body)
		assert.NoError(t, json.Unmarshal(raw, &got))
		_, _ = io.WriteString(w, "#cloud-config\nhostname: x\n")
	}))
	defer srv.Close()

	c := collector(t, machine())
	info, err := c.Collect(context.Background())
	require.NoError(t, err)
	answer, err := hostinfo.Post(context.Background(), srv.Client(), srv.URL+"/final-cloud-config.yaml", info)
	require.NoError(t, err)
	assert.Equal(t, "#cloud-config\nhostname: x\n", string(answer))

	// The exact wire form Mayu 0.11's daemon decodes.
	assert.JSONEq(t, `{"Serial":"CZ-J-4021-7X",
		"NetDevs":[{"Name":"eth0","MacAddress":"08:00:27:8e:15:8a"},{"Name":"eth1","MacAddress":"08:00:27:8e:15:8b"}],
		"IPMIAddress":"","ConnectedNIC":"eth1"}`, string(raw))
	assert.Equal(t, info, got)
}

func TestPostFailures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "IP range full\nmore", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	_, err := hostinfo.Post(context.Background(), srv.Client(), srv.URL, hostinfo.Info{Serial: "x"})
	assert.ErrorIs(t, err, hostinfo.ErrPost)
	assert.Contains(t, err.Error(), "503 Service Unavailable: IP range full")
	assert.NotContains(t, err.Error(), "more")

	srv.Close()
	_, err = hostinfo.Post(context.Background(), http.DefaultClient, srv.URL, hostinfo.Info{Serial: "x"})
	assert.ErrorIs(t, err, hostinfo.ErrPost)
}

func TestInfoWireCompat(t *testing.T) {
	// What Mayu 0.11's helper sends decodes into Info, null NetDevs and all.
	var in hostinfo.Info
	require.NoError(t, json.Unmarshal([]byte(`{"Serial":"s","NetDevs":null,"IPMIAddress":"10.0.0.9","ConnectedNIC":""}`), &in))
	assert.Equal(t, "10.0.0.9", in.IPMIAddress.String())
	b, err := json.Marshal(hostinfo.Info{Serial: "s", IPMIAddress: net.ParseIP("10.0.0.9").To4()})
	require.NoError(t, err)
	assert.JSONEq(t, `{"Serial":"s","NetDevs":null,"IPMIAddress":"10.0.0.9","ConnectedNIC":""}`, string(b))
}
