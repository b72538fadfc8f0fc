package api

// Fuzz targets for every request body and path parameter of the API. They
// drive the real handler with the in-memory store, the real provisioner,
// the real renderer on the repository's templates and the internal etcd
// discovery, and check what must hold for any input: no panic, no 500 that
// is not a reported render failure, one-line reasons, no file served from
// outside its directory, no file written anywhere but the discovery
// directory, and records that survive the conf.json round trip.
//
// go test runs the seed corpus; `make test-fuzz` fuzzes each target for a
// short while (FUZZTIME), as CI does.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"mayu/pkg/config"
	"mayu/pkg/discovery"
	"mayu/pkg/host"
	"mayu/pkg/provision"
	"mayu/pkg/render"
	"mayu/pkg/store"
)

const fzConfig = `
default_coreos_version: 1068.6.0
network:
  pxe: true
  interface: eth1
  bind_addr: 192.168.2.2
  bootstrap_range: {start: 192.168.2.100, end: 192.168.2.200}
  ip_range: {start: 10.20.0.1, end: 10.20.255.254}
  dns: [192.168.2.1]
  router: 192.168.2.1
profiles:
  - name: core-services
    quantity: 3
    tags: ["role-core=true"]
  - name: default
    tags: ["role-worker=true"]
templates_env:
  ssh_authorized_keys: ["ssh-rsa AAAAB3Nza fuzz@example"]
  mayu_http_endpoint: "http://192.168.2.2:4080"
`

// fzSecret is the content of a file next to (outside) the served
// directories: no answer may ever contain it.
const fzSecret = "FUZZ-SECRET-d41d8cd98f00b204e9800998ecf8427e"

// fzKnown is a host that exists before every input, in state installing.
const fzKnown = "fuzz-known-0"

// panicWatch is a slog handler that notices the API's "handler panicked"
// log line: the recover middleware turns a panic into a 500, and the fuzz
// target must still see it as the bug it is.
type panicWatch struct {
	panics atomic.Int64
	last   atomic.Value
}

func (p *panicWatch) Enabled(context.Context, slog.Level) bool { return true }
func (p *panicWatch) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panicked") {
		p.panics.Add(1)
		var b strings.Builder
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, "%s=%v ", a.Key, a.Value); return true })
		p.last.Store(b.String())
	}
	return nil
}
func (p *panicWatch) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p *panicWatch) WithGroup(string) slog.Handler      { return p }

type fzEnv struct {
	root     string // everything the server may touch lives below
	discDir  string
	srv      *Server
	mem      *store.Memory
	watch    *panicWatch
	snapshot map[string]int64
	baseKeys map[string]bool // top-level keys of a benign final config
	token    string          // the admin token every request carries
}

func repoDir(parts ...string) string {
	return filepath.Join(append([]string{"..", ".."}, parts...)...)
}

func newFzEnv(t testing.TB) *fzEnv {
	t.Helper()
	cfg, err := config.Parse([]byte(fzConfig))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	served := filepath.Join(root, "served")
	for p, content := range map[string]string{
		"served/images/1068.6.0/coreos_production_pxe.vmlinuz":          "kernel-1068",
		"served/images/1068.6.0/coreos_production_pxe_image.cpio.gz":    "initrd-1068",
		"served/images/1068.6.0/coreos_production_image.bin.bz2":        "0123456789abcdefghijklmnopqrstuvwxyz",
		"served/images/qemu/1068.6.0/coreos_production_qemu.vmlinuz":    "qemu-kernel",
		"served/yochu/etcd/v2.2.5/etcd":                                 "etcd-binary",
		"served/static/index.html":                                      "<html>dashboard</html>",
		"served/static/infopusher":                                      "helper-binary",
		"secret.txt":                                                    fzSecret,
		"served/images/secret.txt":                                      fzSecret,
		"served/images/1068.6.0/../../../secret-dotdot-name-is-literal": fzSecret,
	} {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	watch := &panicWatch{}
	log := slog.New(watch)
	mem := store.NewMemory()
	t.Cleanup(func() { _ = mem.Close() })
	discDir := filepath.Join(root, "cluster", ".discovery")
	disc, err := discovery.NewInternal(discovery.InternalConfig{
		Dir: discDir, BaseURL: "http://192.168.2.2:4080", DefaultSize: 3, MaxWait: 5 * time.Millisecond, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	prov, err := provision.New(provision.Config{Cluster: cfg, Store: mem, HTTPPort: 4080, NoTLS: true, Discovery: disc, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := prov.SetClusterToken("41f07d10ab835b22071a32d5c1b75a6d"); err != nil {
		t.Fatal(err)
	}
	rend, err := render.New(render.Config{
		FirstStageScript:     repoDir("templates", "first_stage_script.sh"),
		LastStageCloudConfig: repoDir("templates", "last_stage_cloudconfig.yaml"),
		IgnitionConfig:       repoDir("templates", "ignition", "gs_install.yaml"),
		Snippets:             repoDir("template_snippets", "cloudconfig"),
		MayuVersion:          "fuzz",
		Logger:               log,
	})
	if err != nil {
		t.Fatal(err)
	}
	toks := newTestTokens(t)
	srv, err := New(Config{
		Access:      Access{Tokens: toks.set},
		Provisioner: prov, Renderer: rend, Discovery: disc,
		ImagesDir: filepath.Join(served, "images"), YochuDir: filepath.Join(served, "yochu"),
		StaticHTMLDir: filepath.Join(served, "static"),
		Version:       "fuzz", Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &fzEnv{root: root, discDir: discDir, srv: srv, mem: mem, watch: watch, token: toks.admin}
	if _, _, err := prov.Register(fzKnown); err != nil {
		t.Fatal(err)
	}
	rec := e.do(http.MethodPost, "/final-cloud-config.yaml", "", fmt.Sprintf(
		`{"Serial":%q,"NetDevs":[{"Name":"eth0","MacAddress":"02:00:00:00:00:01"}],"IPMIAddress":"10.0.0.9","ConnectedNIC":"eth0"}`, fzKnown), nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("benign final config: %d %s", rec.Code, rec.Body)
	}
	e.baseKeys = yamlKeys(t, rec.Body.Bytes())
	e.snapshot = e.files(t)
	return e
}

// do serves one request. rawPath, when set, is the escaped path, so any
// byte can reach a path parameter.
func (e *fzEnv) do(method, path, rawPath, body string, hdr http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "/", strings.NewReader(body))
	req.URL.Path, req.URL.RawPath = path, rawPath
	req.RequestURI = path
	if rawPath != "" {
		req.RequestURI = rawPath
	}
	req.Host = "192.168.2.2:4080"
	req.Header.Set("Authorization", "Bearer "+e.token)
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != "" || method == http.MethodPut {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	return rec
}

// files lists every file below root but the discovery directory, with
// sizes: the server must write nothing there.
func (e *fzEnv) files(t testing.TB) map[string]int64 {
	t.Helper()
	m := map[string]int64{}
	err := filepath.WalkDir(e.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == e.discDir {
			return filepath.SkipDir
		}
		if d.IsDir() {
			m[p] = -1
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		m[p] = fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// check asserts what holds for every answer.
func (e *fzEnv) check(t *testing.T, what string, rec *httptest.ResponseRecorder, allowed ...int) {
	t.Helper()
	if n := e.watch.panics.Load(); n > 0 {
		t.Fatalf("%s: a handler panicked: %v", what, e.watch.last.Load())
	}
	body := rec.Body.String()
	ok := false
	for _, c := range allowed {
		ok = ok || rec.Code == c
	}
	if rec.Code == http.StatusInternalServerError && strings.Contains(body, "render: template failed") {
		// A machine-supplied value the template cannot turn into valid
		// output is refused after validation: never half a config.
		ok = true
	}
	if !ok {
		t.Fatalf("%s: status %d not in %v: %q", what, rec.Code, allowed, truncateBody(body))
	}
	if rec.Code >= 400 && rec.Header().Get("Content-Type") == textPlain && strings.Count(body, "\n") > 1 {
		t.Fatalf("%s: %d answer is not one line: %q", what, rec.Code, truncateBody(body))
	}
	if strings.Contains(body, fzSecret) {
		t.Fatalf("%s: served a file from outside its directory", what)
	}
	if got := e.files(t); !equalSnap(got, e.snapshot) {
		t.Fatalf("%s: files changed outside the discovery directory: %v", what, diffSnap(e.snapshot, got))
	}
}

// checkRecords asserts every stored record survives conf.json's round
// trip: a record that cannot be read back would be lost at restart.
func (e *fzEnv) checkRecords(t *testing.T, what string) {
	t.Helper()
	for _, h := range e.mem.List() {
		b, err := h.Marshal()
		if err != nil {
			t.Fatalf("%s: record %q does not marshal: %v", what, h.Serial, err)
		}
		back, err := host.Unmarshal(b)
		if err != nil {
			t.Fatalf("%s: record %q does not read back: %v\n%s", what, h.Serial, err, b)
		}
		b2, err := back.Marshal()
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("%s: record %q changes in the round trip:\n%s\n%s", what, h.Serial, b, b2)
		}
		if n, err := host.NormalizeSerial(h.Serial); err != nil || n != h.Serial {
			t.Fatalf("%s: stored serial %q is not a normalized serial", what, h.Serial)
		}
	}
}

func equalSnap(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func diffSnap(before, after map[string]int64) []string {
	var d []string
	for k, v := range after {
		if w, ok := before[k]; !ok || w != v {
			d = append(d, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			d = append(d, "removed "+k)
		}
	}
	return d
}

func truncateBody(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

func yamlKeys(t testing.TB, b []byte) map[string]bool {
	t.Helper()
	var m map[string]interface{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("final config is not YAML: %v\n%s", err, b)
	}
	keys := map[string]bool{}
	for k := range m {
		keys[k] = true
	}
	return keys
}

// escapedPath builds a path with one fuzzed segment, escaped so that any
// byte (slash, NUL, invalid UTF-8) reaches the route parameter.
func escapedPath(prefix, seg, suffix string) (string, string) {
	return prefix + seg + suffix, prefix + url.PathEscape(seg) + suffix
}

var badStrings = []string{
	"", " ", ".", "..", "../../etc/passwd", "..%2f..%2fetc", "a/b", "/", "\x00", "a\x00b", "\xff\xfe", "\xc3\x28",
	"ä", "SERIAL-UPPER", strings.Repeat("a", 128), strings.Repeat("a", 129), strings.Repeat("x", 70000),
	"-leading-dash", ".hidden", "cluster.json", "con", "a b", "\n", "\r\nX-Injected: 1", "%00", "%2e%2e",
	"0800278e158a-0", fzKnown, "\u202e", "a:b_c.d-e",
}

func FuzzFirstStageScript(f *testing.F) {
	for _, s := range badStrings {
		f.Add(s)
	}
	e := newFzEnv(f)
	f.Fuzz(func(t *testing.T, serial string) {
		path, raw := escapedPath("/first-stage-script/", serial, "")
		before := len(e.mem.List())
		rec := e.do(http.MethodGet, path, raw, "", nil)
		e.check(t, "GET first-stage-script", rec, 200, 400, 404, 503)
		after := len(e.mem.List())
		if after > before+1 {
			t.Fatalf("one request created %d records", after-before)
		}
		if rec.Code == 200 {
			n, err := host.NormalizeSerial(serial)
			if err != nil {
				t.Fatalf("serial %q is invalid (%v) but got a script", serial, err)
			}
			if _, err := e.mem.Get(n); err != nil {
				t.Fatalf("script served but %q has no record: %v", n, err)
			}
			if !strings.Contains(rec.Body.String(), "/images/"+n+"/install_image.bin.bz2") {
				t.Fatalf("script does not name the machine's image")
			}
		}
		e.checkRecords(t, "first-stage")
	})
}

func FuzzFinalConfig(f *testing.F) {
	f.Add([]byte(`{"Serial":"0800278e158a-0","NetDevs":[{"Name":"eth0","MacAddress":"08:00:27:8E:15:8A"}],"IPMIAddress":"10.0.0.9","ConnectedNIC":"eth0"}`))
	f.Add([]byte(`{"Serial":"fuzz-known-0","NetDevs":[],"ConnectedNIC":"eth0\n  - injected: true"}`))
	f.Add([]byte(`{"Serial":"x","ConnectedNIC":"\"; runcmd: [reboot]"}`))
	f.Add([]byte(`{"Serial":"x","IPMIAddress":"not an ip"}`))
	f.Add([]byte(`{"Serial":"x","NetDevs":[{"MacAddress":"zz"}]}`))
	f.Add([]byte(`{"Serial":"x","NetDevs":null}`))
	f.Add([]byte(`{"Serial":"\xff\xfe"}`))
	f.Add([]byte(`{"Serial":"` + strings.Repeat("a", 200) + `"}`))
	f.Add([]byte(`{"Serial":"../../etc"}`))
	f.Add([]byte(`{"Serial":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{`))
	f.Add([]byte(``))
	f.Add([]byte(`{"Serial":"y","NetDevs":[{"MacAddress":"02:00:00:00:00:01"},{"MacAddress":"02-00-00-00-00-01"}]}`))
	e := newFzEnv(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := e.do(http.MethodPost, "/final-cloud-config.yaml", "", string(body), nil)
		e.check(t, "POST final-cloud-config", rec, 200, 400, 404, 409, 413, 503)
		if rec.Code == 200 {
			if !bytes.HasPrefix(rec.Body.Bytes(), []byte("#cloud-config")) {
				t.Fatalf("final config does not start with #cloud-config")
			}
			// A machine's facts are data: they must not add keys to the
			// cloud-config it gets.
			for k := range yamlKeys(t, rec.Body.Bytes()) {
				if !e.baseKeys[k] {
					t.Fatalf("facts injected top-level key %q into the cloud-config", k)
				}
			}
		}
		// The Ignition route is off here: always the same 404.
		rec = e.do(http.MethodPost, "/final-ignition-config.json", "", string(body), nil)
		e.check(t, "POST final-ignition-config", rec, 404, 413)
		e.checkRecords(t, "final-config")
	})
}

// adminNames are the PUT /admin/host/:serial/<name> routes.
var adminNames = []string{"set_installed", "boot_complete", "set_metadata", "set_provider_id", "set_ipmi_addr",
	"set_cabinet", "set_state", "set_etcd_cluster_token", "override", "mark_fresh", "set_mac_addresses"}

func FuzzAdminHost(f *testing.F) {
	bodies := []string{
		``, `{}`, `null`, `[]`, `{`, `{"State":"configured"}`, `{"State":"running"}`, `{"State":"bogus"}`, `{"State":3}`,
		`{"FleetMetadata":["a=b","c"]}`, `{"FleetMetadata":"x"}`, `{"ProviderId":"p-1"}`, `{"IPMIAddr":"10.0.0.1"}`,
		`{"IPMIAddr":"::1"}`, `{"IPMIAddr":"nope"}`, `{"Cabinet":4,"MachineOnCabinet":2}`, `{"Cabinet":-1}`,
		`{"Cabinet":99999999999999999999}`, `{"EtcdClusterToken":"abc"}`, `{"Overrides":{"CoreOSVersion":"../../etc"}}`,
		`{"Overrides":{"k":{"nested":[1,2,{"x":null}]}}}`, `{"Overrides":{"k":1e308}}`, `{"Overrides":{"\xff":"\xfe"}}`,
		`{"Overrides":{"ssh_authorized_keys":"x\n- injected"}}`, `{"CoreOSVersion":"1.2.3","MayuVersion":"\u0000"}`,
		`{"MacAddresses":["02:00:00:00:00:01"]}`, `{"MacAddresses":[]}`, `{"MacAddresses":[""]}`, `{"IPMIAddr":null}`,
		`{"ProviderId":"a\u2028b"}`, `{"Overrides":{"yochu_version":"../x"}}`,
	}
	for i, name := range adminNames {
		for j, b := range bodies {
			if (i+j)%3 == 0 {
				f.Add(uint8(i), fzKnown, []byte(b))
			}
		}
		f.Add(uint8(i), "unknown-serial", []byte(`{}`))
		f.Add(uint8(i), "../"+name, []byte(`{}`))
	}
	f.Add(uint8(0), "\xff", []byte(``))
	f.Add(uint8(8), strings.Repeat("z", 5000), []byte(`{"Overrides":{}}`))
	e := newFzEnv(f)
	f.Fuzz(func(t *testing.T, route uint8, serial string, body []byte) {
		name := adminNames[int(route)%len(adminNames)]
		path, raw := escapedPath("/admin/host/", serial, "/"+name)
		rec := e.do(http.MethodPut, path, raw, string(body), nil)
		e.check(t, "PUT "+name, rec, 202, 400, 404, 409, 413)
		e.checkRecords(t, name)
		// Whatever an operator set, the machine's own routes still answer
		// sanely: its image (CoreOSVersion override names a directory)
		// and its final config.
		if n, err := host.NormalizeSerial(serial); err == nil {
			p, r := escapedPath("/images/", n, "/install_image.bin.bz2")
			e.check(t, "image after "+name, e.do(http.MethodGet, p, r, "", nil), 200, 400, 404)
		}
		if rec.Code == 202 {
			rec = e.do(http.MethodPost, "/final-cloud-config.yaml", "", fmt.Sprintf(`{"Serial":%q}`, serial), nil)
			e.check(t, "final config after "+name, rec, 200, 409)
		}
	})
}

func FuzzServedFiles(f *testing.F) {
	for _, s := range badStrings {
		f.Add(uint8(0), s, "")
	}
	for i, s := range []string{"coreos_production_qemu.vmlinuz", "../../../secret.txt", "..", "%2e%2e/secret.txt",
		"etcd/v2.2.5/etcd", "../secret.txt", "index.html", "infopusher", "..\\..\\secret.txt", "/etc/passwd"} {
		f.Add(uint8(i), fzKnown, s)
	}
	f.Add(uint8(1), fzKnown, "bytes=0-4")
	f.Add(uint8(1), fzKnown, "bytes=-5")
	f.Add(uint8(1), fzKnown, "bytes=5-1")
	f.Add(uint8(1), fzKnown, "bytes=0-1,3-4,0-99999999999999999999")
	f.Add(uint8(1), fzKnown, "bytes=99999-")
	e := newFzEnv(f)
	f.Fuzz(func(t *testing.T, which uint8, serial, file string) {
		var path, raw string
		var hdr http.Header
		switch which % 6 {
		case 0:
			path, raw = escapedPath("/images/", serial, "/vmlinuz")
		case 1:
			path, raw = escapedPath("/images/", serial, "/install_image.bin.bz2")
			hdr = http.Header{"Range": []string{file}}
		case 2:
			path, raw = escapedPath("/images/"+url.PathEscape(serial)+"/qemu/", file, "")
			path = "/images/" + serial + "/qemu/" + file
		case 3:
			path, raw = "/yochu/"+file, "/yochu/"+escapeKeepSlash(file)
		case 4:
			path, raw = "/"+file, "/"+escapeKeepSlash(file)
		case 5:
			path, raw = escapedPath("/images/", serial, "/initrd.cpio.gz")
		}
		rec := e.do(http.MethodGet, path, raw, "", hdr)
		e.check(t, "GET "+path, rec, 200, 206, 304, 400, 404, 416)
		if rec.Code == 206 {
			var a, b, size int64
			if _, err := fmt.Sscanf(rec.Header().Get("Content-Range"), "bytes %d-%d/%d", &a, &b, &size); err == nil && int64(rec.Body.Len()) != b-a+1 {
				t.Fatalf("206 with Content-Range %q but %d bytes", rec.Header().Get("Content-Range"), rec.Body.Len())
			}
		}
	})
}

// escapeKeepSlash escapes each segment of a slash path.
func escapeKeepSlash(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

func FuzzEtcdDiscovery(f *testing.F) {
	f.Add(uint8(0), "new", "", "size=3")
	f.Add(uint8(0), "new", "", "size=-1")
	f.Add(uint8(0), "new", "", "size=99999999999999999999")
	f.Add(uint8(1), "41f07d10ab835b22071a32d5c1b75a6d", "", "")
	f.Add(uint8(1), "41f07d10ab835b22071a32d5c1b75a6d", "_config/size", "")
	f.Add(uint8(2), "41f07d10ab835b22071a32d5c1b75a6d", "abc", "value=http://10.0.0.1:2380")
	f.Add(uint8(2), "41f07d10ab835b22071a32d5c1b75a6d", "../../../x", "value=1")
	f.Add(uint8(1), "41f07d10ab835b22071a32d5c1b75a6d", "?wait=true&waitIndex=1", "")
	f.Add(uint8(3), "41f07d10ab835b22071a32d5c1b75a6d", "abc", "")
	f.Add(uint8(1), "..", "", "")
	f.Add(uint8(2), "\xff", "\x00", "value=\xfe")
	e := newFzEnv(f)
	f.Fuzz(func(t *testing.T, method uint8, token, key, form string) {
		m := []string{http.MethodPut, http.MethodGet, http.MethodPut, http.MethodDelete}[int(method)%4]
		q := ""
		if k, query, ok := strings.Cut(key, "?"); ok {
			key, q = k, "?"+url.PathEscape(query)
		}
		path := "/etcd/" + token
		raw := "/etcd/" + url.PathEscape(token)
		if key != "" {
			path += "/" + key
			raw += "/" + escapeKeepSlash(key)
		}
		req := httptest.NewRequest(m, "/", strings.NewReader(form))
		req.URL.Path, req.URL.RawPath = path, raw
		if q != "" {
			req.URL.RawQuery = q[1:]
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Host = "192.168.2.2:4080"
		rec := httptest.NewRecorder()
		e.srv.Handler().ServeHTTP(rec, req)
		e.check(t, m+" "+path, rec, 200, 201, 400, 403, 404, 405, 409, 412, 413)
		var js json.RawMessage
		if rec.Header().Get("Content-Type") == "application/json" && json.Unmarshal(rec.Body.Bytes(), &js) != nil {
			t.Fatalf("%s %s: JSON answer does not parse: %q", m, path, truncateBody(rec.Body.String()))
		}
	})
}
