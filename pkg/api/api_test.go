package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"mayu/pkg/config"
	"mayu/pkg/host"
	"mayu/pkg/provision"
	"mayu/pkg/render"
	"mayu/pkg/store"
	"mayu/pkg/store/storetest"
)

const testConfig = `
default_coreos_version: 1068.6.0
network:
  pxe: true
  interface: eth1
  bind_addr: 192.168.2.2
  bootstrap_range: {start: 192.168.2.100, end: 192.168.2.200}
  ip_range: {start: 192.168.2.21, end: %s}
profiles:
  - name: core-services
    quantity: 3
    tags: ["role-core=true"]
templates_env:
  ssh_authorized_keys: ["ssh-rsa AAAA"]
`

// fakeRenderer records what it was asked to render. The real templates are
// tested in package render and by the process tests.
type fakeRenderer struct {
	final  render.FinalData
	first  render.FirstStageData
	err    error
	panics bool
}

func (f *fakeRenderer) FirstStage(d render.FirstStageData) ([]byte, error) {
	f.first = d
	return []byte("#!/bin/bash\necho install " + d.InstallImageURL + "\n"), f.err
}

func (f *fakeRenderer) Final(d render.FinalData) ([]byte, error) {
	if f.panics {
		var m map[string]int
		m["boom"]++ // a bug in a renderer must not kill the daemon
	}
	f.final = d
	return []byte("#cloud-config\nhostname: " + d.Host.Hostname + "\n"), f.err
}

type env struct {
	t      *testing.T
	tokens testTokens
	srv    *Server
	store  store.Store
	mem    *store.Memory
	render *fakeRenderer
	dir    string
}

// envConfig is what a test may change before the server is built: the
// provisioner's settings and the server's.
type envConfig struct {
	prov provision.Config
	api  Config
}

func newEnv(t *testing.T, opts ...func(*envConfig)) *env {
	t.Helper()
	return newEnvWithRange(t, "192.168.2.99", opts...)
}

func newEnvWithRange(t *testing.T, rangeEnd string, opts ...func(*envConfig)) *env {
	t.Helper()
	cfg, err := config.Parse([]byte(fmt.Sprintf(testConfig, rangeEnd)))
	require.NoError(t, err)
	mem := store.NewMemory()
	t.Cleanup(func() { _ = mem.Close() })
	dir := t.TempDir()
	for _, f := range []struct{ path, content string }{
		{"images/1068.6.0/coreos_production_pxe.vmlinuz", "kernel-1068"},
		{"images/1068.6.0/coreos_production_pxe_image.cpio.gz", "initrd-1068"},
		{"images/1068.6.0/coreos_production_image.bin.bz2", "0123456789abcdefghij"},
		{"images/1068.6.0/arm64/coreos_production_image.bin.bz2", "arm64-image"},
		{"images/1122.2.0/coreos_production_image.bin.bz2", "image-1122"},
		{"images/qemu/1068.6.0/coreos_production_qemu.vmlinuz", "qemu-kernel"},
		{"yochu/etcd/v2.2.5/etcd", "etcd-binary"},
		{"static/index.html", "<html>dashboard</html>"},
		{"static/infopusher", "helper-binary"},
		{"static/arm64/infopusher", "arm64-helper"},
		{"secret.txt", "do not serve"},
	} {
		p := filepath.Join(dir, f.path)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(f.content), 0o644))
	}
	fr := &fakeRenderer{}
	toks := newTestTokens(t)
	c := envConfig{
		prov: provision.Config{Cluster: cfg, Store: mem, HTTPPort: 4080, NoTLS: true},
		api: Config{
			Access:    Access{Tokens: toks.set},
			Renderer:  fr,
			ImagesDir: filepath.Join(dir, "images"), YochuDir: filepath.Join(dir, "yochu"), StaticHTMLDir: filepath.Join(dir, "static"),
			Version: "1.2.3",
		},
	}
	for _, o := range opts {
		o(&c)
	}
	prov, err := provision.New(c.prov)
	require.NoError(t, err)
	require.NoError(t, prov.SetClusterToken("41f07d10ab835b22071a32d5c1b75a6d"))
	c.api.Provisioner = prov
	srv, err := New(c.api)
	require.NoError(t, err)
	return &env{t: t, tokens: toks, srv: srv, store: c.prov.Store, mem: mem, render: fr, dir: dir}
}

// do serves one request as mayuctl sends it to mayu's bind address, with
// the admin token (and a JSON content type on a PUT or POST); headers (name, value pairs) replace those, and a value
// of "" removes the header.
func (e *env) do(method, path, body string, headers ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	req.Host = "192.168.2.2:4080"
	req.Header.Set("Authorization", "Bearer "+e.tokens.admin)
	if method == "PUT" || method == "POST" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		switch {
		case strings.EqualFold(headers[i], "Host"):
			req.Host = headers[i+1]
		case headers[i+1] == "":
			req.Header.Del(headers[i])
		default:
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	return rec
}

func (e *env) host(serial string) host.Host {
	e.t.Helper()
	h, err := e.store.Get(serial)
	require.NoError(e.t, err)
	return h
}

func TestWelcomeAndBootScript(t *testing.T) {
	e := newEnv(t)
	rec := e.do("GET", "/", "")
	assert.Equal(t, 200, rec.Code)
	assert.Contains(t, rec.Body.String(), "1.2.3")

	rec = e.do("GET", "/ipxebootscript", "")
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, "#!ipxe\n"+
		"kernel http://192.168.2.2:4080/images/vmlinuz initrd=initrd.cpio.gz coreos.autologin maybe-install-coreos=stable console=ttyS0,115200n8 mayu=http://192.168.2.2:4080 next-script=http://192.168.2.2:4080/first-stage-script/__SERIAL__\n"+
		"initrd http://192.168.2.2:4080/images/initrd.cpio.gz\n"+
		"boot\n", rec.Body.String())

	tls := newEnv(t, func(c *envConfig) { c.prov.NoTLS = false })
	assert.Contains(t, tls.do("GET", "/ipxebootscript", "").Body.String(), "mayu=https://192.168.2.2:4080 ")
}

func TestFirstStageScriptRegisters(t *testing.T) {
	e := newEnv(t)
	rec := e.do("GET", "/first-stage-script/0800278E158A-0", "")
	require.Equal(t, 200, rec.Code, rec.Body.String())
	assert.Contains(t, rec.Body.String(), "http://192.168.2.2:4080/images/0800278e158a-0/install_image.bin.bz2")
	h := e.host("0800278e158a-0")
	assert.Equal(t, host.Configured, h.State)
	assert.Equal(t, "core-services", h.Profile)
	assert.Equal(t, render.FirstStageData{
		HostInfoHelperURL: "http://192.168.2.2:4080/hostinfo-helper",
		CloudConfigURL:    "http://192.168.2.2:4080/final-cloud-config.yaml",
		InstallImageURL:   "http://192.168.2.2:4080/images/0800278e158a-0/install_image.bin.bz2",
		SetInstalledURL:   "http://192.168.2.2:4080/admin/host/__SERIAL__/set_installed",
		MayuURL:           "http://192.168.2.2:4080",
		MayuVersion:       "1.2.3",
		MachineID:         h.MachineID,
	}, e.render.first)

	ign := newEnv(t, func(c *envConfig) { c.api.UseIgnition = true })
	require.Equal(t, 200, ign.do("GET", "/first-stage-script/x", "").Code)
	assert.Equal(t, "http://192.168.2.2:4080/final-ignition-config.json", ign.render.first.IgnitionConfigURL)
	assert.Empty(t, ign.render.first.CloudConfigURL)

	for _, bad := range []string{"..%2Fetc", "a%20b", "%2e%2e", strings.Repeat("x", 200)} {
		rec := e.do("GET", "/first-stage-script/"+bad, "")
		assert.Equal(t, 400, rec.Code, bad)
		assert.Equal(t, 1, strings.Count(rec.Body.String(), "\n"), "one-line reason")
	}
}

func TestRangeFullIs503(t *testing.T) {
	e := newEnvWithRange(t, "192.168.2.21")
	require.Equal(t, 200, e.do("GET", "/first-stage-script/a", "").Code)
	rec := e.do("GET", "/first-stage-script/b", "")
	assert.Equal(t, 503, rec.Code)
	assert.Contains(t, rec.Body.String(), "no free address")
}

const facts = `{"Serial":"0800278e158a-0","NetDevs":[{"Name":"eth0","MacAddress":"08:00:27:8E:15:8A"},{"Name":"eth1","MacAddress":"08:00:27:8e:15:8b"}],"IPMIAddress":"10.0.0.9","ConnectedNIC":"eth0"}`

func TestFinalConfig(t *testing.T) {
	e := newEnv(t)
	rec := e.do("POST", "/final-cloud-config.yaml", facts)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	h := e.host("0800278e158a-0")
	assert.Equal(t, "#cloud-config\nhostname: "+h.Hostname+"\n", rec.Body.String())
	assert.Equal(t, host.Installing, h.State)
	assert.Equal(t, []string{"08:00:27:8e:15:8a", "08:00:27:8e:15:8b"}, h.MacAddresses)
	assert.Equal(t, "eth0", h.ConnectedNIC)
	assert.Equal(t, "10.0.0.9", h.IPMIAddr.String())

	d := e.render.final
	assert.Empty(t, d.EtcdDiscoveryUrl, "no discovery configured")
	assert.Equal(t, "http://192.168.2.2:4080/admin/host/0800278e158a-0/boot_complete", d.PostBootURL)
	assert.Equal(t, "192.168.2.2", d.MayuHost)
	assert.Equal(t, 4080, d.MayuPort)
	assert.True(t, d.NoTLS)
	assert.Equal(t, "eth1", d.ClusterNetwork.Interface)

	// Asking again mid-install is fine.
	assert.Equal(t, 200, e.do("POST", "/final-cloud-config.yaml", facts).Code)

	tests := []struct {
		name, path, body string
		code             int
		reason           string
	}{
		{"wrong flavour", "/final-ignition-config.json", facts, 404, "serves cloud-config"},
		{"not json", "/final-cloud-config.yaml", "{", 400, "not valid JSON"},
		{"no serial", "/final-cloud-config.yaml", `{"NetDevs":[]}`, 400, "no Serial"},
		{"bad mac", "/final-cloud-config.yaml", `{"Serial":"zz","NetDevs":[{"Name":"e","MacAddress":"nope"}]}`, 400, "invalid MAC"},
		{"bad ipmi", "/final-cloud-config.yaml", `{"Serial":"zz","IPMIAddress":"x.y"}`, 400, "invalid IP address: x.y"},
		{"bad serial", "/final-cloud-config.yaml", `{"Serial":"../../etc"}`, 400, "invalid serial"},
		{"too large", "/final-cloud-config.yaml", `{"Serial":"` + strings.Repeat("a", 2<<20) + `"}`, 413, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := e.do("POST", tt.path, tt.body)
			assert.Equal(t, tt.code, rec.Code)
			assert.Contains(t, rec.Body.String(), tt.reason)
		})
	}
	_, err := e.store.Get("zz")
	assert.ErrorIs(t, err, store.ErrNotFound, "a refused request leaves no record")
}

func TestFinalConfigUsesDiscoveryURL(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.prov.Discovery, c.api.Discovery = discoveryStub{}, discoveryStub{} })
	require.Equal(t, 200, e.do("POST", "/final-cloud-config.yaml", facts).Code)
	assert.Equal(t, "http://192.168.2.2:4080/etcd/41f07d10ab835b22071a32d5c1b75a6d", e.render.final.EtcdDiscoveryUrl)
}

func TestRendererFailuresAre500AndDoNotKill(t *testing.T) {
	e := newEnv(t)
	e.render.err = fmt.Errorf("%w: line 3: bad", render.ErrRender)
	rec := e.do("POST", "/final-cloud-config.yaml", facts)
	assert.Equal(t, 500, rec.Code)
	assert.Contains(t, rec.Body.String(), "line 3")

	e.render.err = nil
	e.render.panics = true
	rec = e.do("POST", "/final-cloud-config.yaml", facts)
	assert.Equal(t, 500, rec.Code)
	e.render.panics = false
	assert.Equal(t, 200, e.do("POST", "/final-cloud-config.yaml", facts).Code, "the server still answers")
}

func TestImages(t *testing.T) {
	e := newEnv(t)
	require.Equal(t, 200, e.do("GET", "/first-stage-script/m1", "").Code)
	tests := []struct {
		path string
		code int
		body string
	}{
		{"/images/vmlinuz", 200, "kernel-1068"},
		{"/images/initrd.cpio.gz", 200, "initrd-1068"},
		{"/images/m1/vmlinuz", 200, "kernel-1068"},
		{"/images/m1/install_image.bin.bz2", 200, "0123456789abcdefghij"},
		{"/images/m1/qemu/coreos_production_qemu.vmlinuz", 200, "qemu-kernel"},
		{"/images/m1/qemu/coreos_production_qemu.vmlinuz.sha256", 404, "does not exist"},
		{"/images/m1/qemu/..%2F..%2Fsecret.txt", 404, "no qemu asset"},
		{"/images/nobody/vmlinuz", 200, "kernel-1068"}, // as Mayu 0.11: the default version's image
		{"/images/nobody/install_image.bin.bz2", 200, "0123456789abcdefghij"},
		{"/images/m1/install_image.bin.bz2?arch=arm64", 200, "arm64-image"},
		{"/images/m1/install_image.bin.bz2?arch=amd64", 200, "0123456789abcdefghij"},
		{"/images/m1/install_image.bin.bz2?arch=..", 400, "no images for arch"},
		{"/images/m1/vmlinuz?arch=arm64", 404, "does not exist"},
		{"/images/..%2F..%2Fsecret.txt/vmlinuz", 400, "invalid serial"},
		{"/yochu/etcd/v2.2.5/etcd", 200, "etcd-binary"},
		{"/yochu/../secret.txt", 404, ""},
		{"/yochu/..%2F..%2Fsecret.txt", 404, ""},
		{"/index.html", 200, "<title>Mayu</title>"}, // built in, whatever the static directory holds
		{"/infopusher", 200, "helper-binary"},
		{"/hostinfo-helper", 200, "helper-binary"},
		{"/hostinfo-helper?arch=amd64", 200, "helper-binary"},
		{"/hostinfo-helper?arch=arm64", 200, "arm64-helper"},
		{"/hostinfo-helper?arch=../secret.txt", 400, "no host-info helper for arch"},
		{"/..%2Fsecret.txt", 404, ""},
		{"/nothing-here", 404, "does not exist"},
	}
	for _, tt := range tests {
		rec := e.do("GET", tt.path, "")
		assert.Equal(t, tt.code, rec.Code, tt.path)
		assert.Contains(t, rec.Body.String(), tt.body, tt.path)
		assert.NotContains(t, rec.Body.String(), "do not serve", tt.path)
	}

	rec := e.do("HEAD", "/infopusher", "")
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, "13", rec.Header().Get("Content-Length"))
	assert.Empty(t, rec.Body.String())
	rec = e.do("HEAD", "/index.html", "")
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, fmt.Sprint(len(dashboardPage)), rec.Header().Get("Content-Length"))

	rec = e.do("GET", "/images/m1/install_image.bin.bz2", "", "Range", "bytes=10-14")
	assert.Equal(t, 206, rec.Code)
	assert.Equal(t, "abcde", rec.Body.String())
	assert.Equal(t, "5", rec.Header().Get("Content-Length"))
	assert.NotEmpty(t, rec.Header().Get("Last-Modified"))

	// The host's version comes from its overrides first.
	_, err := e.srv.prov.Override("m1", map[string]interface{}{"CoreOSVersion": "1122.2.0"})
	require.NoError(t, err)
	assert.Equal(t, "image-1122", e.do("GET", "/images/m1/install_image.bin.bz2", "").Body.String())
	_, err = e.srv.prov.Override("m1", map[string]interface{}{"CoreOSVersion": ".."})
	require.ErrorIs(t, err, provision.ErrInvalid, "refused when written")
	// A hand-edited record can still hold one: the route refuses it too.
	_, err = e.mem.Update("m1", store.Step{Message: "hand edit", Apply: func(h *host.Host) error {
		h.Overrides["CoreOSVersion"] = ".."
		return nil
	}})
	require.NoError(t, err)
	assert.Equal(t, 400, e.do("GET", "/images/m1/install_image.bin.bz2", "").Code)
	_, err = e.srv.prov.Override("m1", map[string]interface{}{"CoreOSVersion": 1068})
	require.NoError(t, err)
	assert.Equal(t, 404, e.do("GET", "/images/m1/install_image.bin.bz2", "").Code, "a non-string override is formatted, not a crash")
}

func TestAdminLifeCycleAndSetters(t *testing.T) {
	e := newEnv(t)
	const s = "0800278e158a-0"
	require.Equal(t, 200, e.do("POST", "/final-cloud-config.yaml", facts).Code)

	put := func(action, body string) *httptest.ResponseRecorder {
		return e.do("PUT", "/admin/host/"+s+"/"+action, body, "Content-Type", "application/json")
	}
	require.Equal(t, 202, put("set_installed", "").Code)
	assert.Equal(t, host.Installed, e.host(s).State)

	require.Equal(t, 202, put("boot_complete", `{"Serial":"`+s+`","CoreOSVersion":"1068.6.0","DockerVersion":"1.10.3","State":"running"}`).Code)
	h := e.host(s)
	assert.Equal(t, host.Running, h.State)
	assert.Equal(t, "1.10.3", h.DockerVersion)
	assert.False(t, h.LastBoot.IsZero())
	require.Equal(t, 202, put("boot_complete", "").Code, "every boot, with or without versions")

	tests := []struct {
		action, body string
		check        func(h host.Host)
	}{
		{"set_metadata", `{"FleetMetadata":["role-core=true","zone=b"]}`, func(h host.Host) { assert.Equal(t, "role-core=true,zone=b", h.FleetMetadata.String()) }},
		{"set_provider_id", `{"ProviderId":"rack7"}`, func(h host.Host) { assert.Equal(t, "rack7", h.ProviderId) }},
		{"set_ipmi_addr", `{"IPMIAddr":"10.1.1.1"}`, func(h host.Host) { assert.Equal(t, "10.1.1.1", h.IPMIAddr.String()) }},
		{"set_cabinet", `{"Cabinet":4}`, func(h host.Host) { assert.EqualValues(t, 4, h.Cabinet) }},
		{"set_etcd_cluster_token", `{"EtcdClusterToken":"416b381afbc752dfc77e48ba7a99ccc3"}`, func(h host.Host) { assert.Equal(t, "416b381afbc752dfc77e48ba7a99ccc3", h.EtcdClusterToken) }},
		{"override", `{"Overrides":{"docker_version":"1.12"}}`, func(h host.Host) { assert.Equal(t, "1.12", h.Overrides["docker_version"]) }},
		{"set_state", `{"State":"configured"}`, func(h host.Host) { assert.Equal(t, host.Configured, h.State); assert.True(t, h.KeepDiskData) }},
		{"mark_fresh", ``, func(h host.Host) { assert.Equal(t, host.Configured, h.State); assert.False(t, h.KeepDiskData) }},
	}
	for _, tt := range tests {
		rec := put(tt.action, tt.body)
		require.Equal(t, 202, rec.Code, "%s: %s", tt.action, rec.Body.String())
		tt.check(e.host(s))
	}

	msgs := subjects(e.mem.Messages())
	for _, m := range []string{"updated state to installed", "updated state to running", "updated host metadata",
		"updated host provider id", "updated host ipmi address", "updated host cabinet", "updated host etcd cluster token",
		"updated host overrides: docker_version", "updated host state", "host flagged as fresh"} {
		assert.Contains(t, msgs, s+": "+m)
	}

	rec := e.do("GET", "/admin/hosts", "")
	require.Equal(t, 200, rec.Code)
	var hosts []host.Host
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &hosts))
	require.Len(t, hosts, 1)
	assert.Equal(t, s, hosts[0].Serial)
	want, _ := json.Marshal([]host.Host{e.host(s)})
	assert.JSONEq(t, string(want), rec.Body.String())
}

func TestAdminFailures(t *testing.T) {
	e := newEnv(t)
	require.Equal(t, 200, e.do("GET", "/first-stage-script/m1", "").Code)
	tests := []struct {
		name, path, body string
		code             int
		reason           string
	}{
		{"unknown serial", "/admin/host/nobody/set_state", `{"State":"configured"}`, 404, "host not found"},
		{"bad serial", "/admin/host/..%2F..%2Fx/set_state", `{"State":"configured"}`, 400, "invalid serial"},
		{"no such state", "/admin/host/m1/set_state", `{"State":"sleeping"}`, 400, "invalid state"},
		{"forbidden transition", "/admin/host/m1/set_installed", ``, 409, "forbidden state transition from configured to installed"},
		{"boot before install", "/admin/host/m1/boot_complete", `{}`, 409, "forbidden"},
		{"missing field", "/admin/host/m1/set_provider_id", `{"Serial":"m1"}`, 400, "no ProviderId"},
		{"wrong type", "/admin/host/m1/set_cabinet", `{"Cabinet":"four"}`, 400, "not valid JSON"},
		{"negative cabinet", "/admin/host/m1/set_cabinet", `{"Cabinet":-1}`, 400, ""},
		{"bad ipmi", "/admin/host/m1/set_ipmi_addr", `{"IPMIAddr":"300.1.1.1"}`, 400, "does not parse"},
		{"bad metadata", "/admin/host/m1/set_metadata", `{"FleetMetadata":"role"}`, 400, "FleetMetadata"},
		{"empty overrides", "/admin/host/m1/override", `{"Overrides":{}}`, 400, "no overrides"},
		{"garbage", "/admin/host/m1/set_state", `not json`, 400, "not valid JSON"},
		{"unknown action", "/admin/host/m1/explode", `{}`, 404, "no route PUT /admin/host/m1/explode"},
		{"wrong method", "/admin/host/m1/set_state", ``, 404, "no route DELETE"},
		{"huge body", "/admin/host/m1/override", `{"Overrides":{"k":"` + strings.Repeat("v", 2<<20) + `"}}`, 413, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := "PUT"
			if tt.name == "wrong method" {
				method = "DELETE"
			}
			rec := e.do(method, tt.path, tt.body)
			assert.Equal(t, tt.code, rec.Code, rec.Body.String())
			assert.Contains(t, rec.Body.String(), tt.reason)
			assert.LessOrEqual(t, strings.Count(rec.Body.String(), "\n"), 1, "one-line reason")
		})
	}
	assert.Equal(t, host.Configured, e.host("m1").State, "nothing refused changed the record")
}

// brokenStore fails every write, as a full disk or a broken repository would.
type brokenStore struct{ *store.Memory }

func (b brokenStore) Create(string, ...store.Step) (host.Host, error) {
	return host.Host{}, fmt.Errorf("%w: write cluster/x/conf.json: no space left on device", store.ErrStorage)
}

// Reserve reserves in the working store; the reservation's Create fails
// as a write does.
func (b brokenStore) Reserve(serial string, req store.AllocRequest) (store.Reservation, error) {
	return (&storetest.Broken{Reads: b.Memory}).Reserve(serial, req)
}

func (b brokenStore) Update(string, ...store.Step) (host.Host, error) {
	return host.Host{}, fmt.Errorf("%w: write: no space left on device", store.ErrStorage)
}

func TestStorageFailuresAre500(t *testing.T) {
	var mem *store.Memory
	e := newEnv(t, func(c *envConfig) {
		mem = c.prov.Store.(*store.Memory)
		c.prov.Store = brokenStore{mem}
	})
	_, err := mem.Create("m1", store.Step{Message: "host created", Apply: func(h *host.Host) error { h.State = host.Installing; return nil }})
	require.NoError(t, err)
	for _, path := range []string{"/admin/host/m1/set_installed", "/admin/host/m1/mark_fresh"} {
		rec := e.do("PUT", path, "")
		assert.Equal(t, 500, rec.Code, path)
		assert.Contains(t, rec.Body.String(), "no space left on device")
	}
	rec := e.do("GET", "/first-stage-script/new", "")
	assert.Equal(t, 500, rec.Code)
	assert.True(t, errors.Is(fmt.Errorf("%w", store.ErrStorage), store.ErrStorage))
}

// discoveryStub names discovery URLs like the internal service; the API
// tests never create tokens or mount its routes.
type discoveryStub struct{}

func (discoveryStub) URL(token string) string     { return "http://192.168.2.2:4080/etcd/" + token }
func (discoveryStub) Register(*echo.Group)        {}
func (discoveryStub) Check(context.Context) error { return nil }
func (discoveryStub) NewToken(context.Context, int) (string, error) {
	return "", errors.New("discoveryStub: the API tests create no tokens")
}

// unreachableStore is a shared store cut off from etcd: reads are served
// from what it holds, every write fails as the etcd backend's do.
type unreachableStore struct{ *store.Memory }

var errEtcdDown = fmt.Errorf("%w: etcd 127.0.0.1:2379: context deadline exceeded", store.ErrUnavailable)

func (u unreachableStore) Create(string, ...store.Step) (host.Host, error) {
	return host.Host{}, errEtcdDown
}
func (u unreachableStore) Update(string, ...store.Step) (host.Host, error) {
	return host.Host{}, errEtcdDown
}
func (u unreachableStore) Reserve(string, store.AllocRequest) (store.Reservation, error) {
	return nil, errEtcdDown
}

// A shared store that cannot be reached (etcd down or cut off) is 503 with
// the reason on machine and admin routes alike; nothing is written.
func TestUnreachableStoreIs503(t *testing.T) {
	var mem *store.Memory
	e := newEnv(t, func(c *envConfig) {
		mem = c.prov.Store.(*store.Memory)
		c.prov.Store = unreachableStore{mem}
	})
	_, err := mem.Create("m1", store.Step{Message: "host created", Apply: func(h *host.Host) error { h.State = host.Installing; return nil }})
	require.NoError(t, err)
	for _, tc := range []struct{ method, path string }{
		{"PUT", "/admin/host/m1/set_installed"},
		{"GET", "/first-stage-script/new"},
	} {
		rec := e.do(tc.method, tc.path, "")
		assert.Equal(t, 503, rec.Code, tc.path)
		assert.Contains(t, rec.Body.String(), "shared store unavailable: etcd 127.0.0.1:2379: context deadline exceeded", tc.path)
	}
	assert.Equal(t, host.Installing, e.host("m1").State)
	_, err = mem.Get("new")
	assert.ErrorIs(t, err, store.ErrNotFound)
}

// GET /admin/hosts is written in batches; its bytes are still exactly
// json.Marshal's of the list, with the final newline, for none, one,
// several hosts and more than a batch.
func TestListHostsIsTheMarshalledListByteForByte(t *testing.T) {
	e := newEnvWithRange(t, "192.168.2.90")
	check := func(n int) {
		t.Helper()
		rec := e.do("GET", "/admin/hosts", "")
		require.Equal(t, 200, rec.Code)
		assert.Equal(t, textPlain, rec.Header().Get("Content-Type"))
		list := e.store.List()
		if list == nil {
			list = []host.Host{}
		}
		require.Len(t, list, n)
		want, err := json.Marshal(list)
		require.NoError(t, err)
		assert.Equal(t, string(want)+"\n", rec.Body.String())
	}
	check(0)
	require.Equal(t, 200, e.do("GET", "/first-stage-script/m1", "").Code)
	check(1)
	for _, s := range []string{"m3", "m2", "m4"} {
		require.Equal(t, 200, e.do("GET", "/first-stage-script/"+s, "").Code)
	}
	check(4)
	for i := 0; i < 2*listBatch; i++ {
		_, err := e.store.Create(fmt.Sprintf("batch-%04d", i), store.Step{Message: "host created", Apply: func(h *host.Host) error {
			h.MacAddresses = []string{fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff)}
			return nil
		}})
		require.NoError(t, err)
	}
	check(4 + 2*listBatch)
}
