// Package render turns the operator's templates into what a machine runs:
// the first-stage install script and the final cloud-config or Ignition
// config. Templates are parsed once (and again when their files change, see
// Watch), every render goes to a buffer and is validated before anyone sees
// it, and a render that fails is an error wrapping ErrRender, never a panic or
// half an answer.
package render

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"text/template"
	"time"

	"gopkg.in/yaml.v3"

	"mayu/pkg/config"
	"mayu/pkg/host"
)

// ErrRender marks a template that failed to execute or produced output that
// is not valid for its format. The API maps it to a 500 with the wrapped
// one-line reason.
var ErrRender = errors.New("render: template failed")

// ErrParse marks templates that could not be read or parsed.
var ErrParse = errors.New("render: templates do not parse")

// Config says which files to load.
type Config struct {
	FirstStageScript     string // path, --first-stage-script
	LastStageCloudConfig string // path, --last-stage-cloudconfig
	IgnitionConfig       string // path, --ignition-config
	Snippets             string // dir, --template-snippets; every *.yaml / *.tmpl file is parsed with the final template
	UseIgnition          bool
	Logger               *slog.Logger
	// MayuVersion is the daemon's version; ShowTemplates hands it to the
	// first-stage script as FirstStage's callers do.
	MayuVersion string
	// Check, when set, is the data every template set is rendered and
	// validated for before it is used, as --show-templates does: New fails
	// and Reload keeps the previous set when the first-stage script or the
	// final config does not come out valid for it. mayu sets it to the
	// PlaceholderHost data, so a template that no machine could get (an
	// Ignition spec version mayu does not serve, a schema error) stops the
	// daemon at start instead of failing each machine's request.
	Check *FinalData
}

// FinalPath is the final template in use: the Ignition one with
// UseIgnition, else the cloud-config one.
func (c Config) FinalPath() string {
	if c.UseIgnition {
		return c.IgnitionConfig
	}
	return c.LastStageCloudConfig
}

// Renderer renders the templates of one Config. It is safe for concurrent
// use; Watch swaps in a new template set atomically.
type Renderer struct {
	cfg     Config
	log     *slog.Logger
	set     atomic.Pointer[templateSet]
	reloads atomic.Uint64 // reload attempts, successful or not; lets tests wait for Watch

	watching func() // test hook: called once Watch has its directories watched
}

// templateSet is one consistent generation of parsed templates.
type templateSet struct {
	first *template.Template
	final *template.Template
}

// New reads and parses every template once. The error names every file that
// fails, so an operator fixes them in one pass.
func New(cfg Config) (*Renderer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Renderer{cfg: cfg, log: cfg.Logger}
	s, err := r.loadChecked()
	if err != nil {
		return nil, err
	}
	r.set.Store(s)
	return r, nil
}

// loadChecked parses the templates and, with Config.Check, renders them
// for the check data.
func (r *Renderer) loadChecked() (*templateSet, error) {
	s, err := loadSet(r.cfg)
	if err != nil {
		return nil, err
	}
	if r.cfg.Check == nil {
		return s, nil
	}
	d := *r.cfg.Check
	_, errFirst := r.firstStage(s, r.firstStageDataFor(d))
	_, errFinal := r.final(s, d)
	if err := errors.Join(errFirst, errFinal); err != nil {
		return nil, fmt.Errorf("templates do not render for check host %q (what --show-templates prints):\n%w", d.Host.Serial, err)
	}
	return s, nil
}

// FirstStageData is the context of the first-stage script (spec 7.5).
type FirstStageData struct {
	HostInfoHelperURL string
	CloudConfigURL    string
	IgnitionConfigURL string
	InstallImageURL   string
	SetInstalledURL   string
	MayuURL           string
	MayuVersion       string
	MachineID         string
	// MachineToken is the machine's credential (machineauth): the script
	// sends it with every request about the machine and leaves it in
	// /etc/mayu-env for mayuctl boot-complete. Empty when mayu checks no
	// credentials (--machine-auth=off).
	MachineToken string
	// CACert is the PEM certificate (bundle) the machine trusts mayu's
	// HTTPS by; empty with --no-tls.
	CACert string
}

// CACertBase64 is CACert in base64, one shell word: what the first-stage
// script carries (shq refuses the newlines of a PEM).
func (d FirstStageData) CACertBase64() string {
	return base64.StdEncoding.EncodeToString([]byte(d.CACert))
}

// FirstStage renders the install script. It must come out as a script (a
// "#!" line first), since the PXE image pipes it straight into a shell.
func (r *Renderer) FirstStage(d FirstStageData) ([]byte, error) {
	return r.firstStage(r.set.Load(), d)
}

func (r *Renderer) firstStage(s *templateSet, d FirstStageData) ([]byte, error) {
	out, err := execute(s.first, d)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(out, []byte("#!")) {
		return nil, fmt.Errorf("%w: %s: output does not start with a #! line", ErrRender, s.first.Name())
	}
	return out, nil
}

// FinalData is the context of the final templates (spec section 10). Field
// names are the template interface: {{.Host.Hostname}}, {{.MayuURL}}, ...
type FinalData struct {
	Host             host.Host
	EtcdDiscoveryUrl string
	ClusterNetwork   config.Network
	MayuHost         string
	MayuPort         int
	MayuURL          string
	NoTLS            bool
	// CACert is the PEM certificate (bundle) the installed machine trusts
	// mayu's HTTPS by; empty with --no-tls.
	CACert      string
	PostBootURL string
	// TemplatesEnv is config.yaml's templates_env. Final merges the host's
	// Overrides into a deep copy; this map is never written.
	TemplatesEnv map[string]interface{}
}

// Final renders the final config for one host: cloud-config YAML, or with
// UseIgnition the Ignition JSON converted from the template's YAML.
//
// An Ignition template is validated against the spec version it declares
// (one of IgnitionSpecs) and served as that version.
func (r *Renderer) Final(d FinalData) ([]byte, error) {
	return r.final(r.set.Load(), d)
}

func (r *Renderer) final(s *templateSet, d FinalData) ([]byte, error) {
	// Mayu 0.11 merged the overrides straight into the shared templates_env,
	// so one host's override showed up in every later render. Work on copies.
	d.Host = d.Host.Clone()
	d.TemplatesEnv = mergeEnv(d.TemplatesEnv, d.Host.Overrides)

	out, err := execute(s.final, d)
	if err != nil {
		return nil, err
	}
	if r.cfg.UseIgnition {
		js, warnings, err := ignitionJSON(out)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrRender, s.final.Name(), err)
		}
		for _, w := range warnings {
			r.log.Warn("ignition config warning", "template", s.final.Name(), "serial", d.Host.Serial, "warning", w)
		}
		return js, nil
	}
	if err := validateCloudConfig(out); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrRender, s.final.Name(), err)
	}
	return out, nil
}

// PlaceholderHost is a made-up but complete host for --show-templates: every
// field a template may print has a value, and the addresses come from the
// documentation ranges so nobody mistakes it for a real machine.
func PlaceholderHost() host.Host {
	return host.Host{
		Enabled:          true,
		Serial:           "placeholder-serial",
		MacAddresses:     []string{"00:00:5e:00:53:01", "00:00:5e:00:53:02"},
		InternalAddr:     net.IPv4(192, 0, 2, 21).To4(),
		IPMIAddr:         net.IPv4(192, 0, 2, 221).To4(),
		Hostname:         "00000000deadbeef",
		MachineID:        "00000000deadbeef0000000000000000",
		ConnectedNIC:     "eno1",
		FleetMetadata:    host.FleetMeta{"role-placeholder=true"},
		LastBoot:         time.Time{},
		Profile:          config.DefaultProfileName,
		EtcdClusterToken: "00000000000000000000000000000000",
		State:            host.Configured,
		CoreOSVersion:    "0.0.0",
	}
}

// ShowTemplates renders the first-stage script and the final config for
// d (usually PlaceholderHost), validates both and prints them under
// headers. It renders everything before printing and reports every
// failure, so a broken template never hides behind a good one.
func (r *Renderer) ShowTemplates(w io.Writer, d FinalData) error {
	// One set for both, so a reload in between cannot mix generations.
	s := r.set.Load()
	first, errFirst := r.firstStage(s, r.firstStageDataFor(d))
	final, errFinal := r.final(s, d)
	if err := errors.Join(errFirst, errFinal); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "# ---- first-stage script (%s) ----\n%s\n# ---- final config (%s) ----\n%s\n",
		s.first.Name(), ensureNewline(first), s.final.Name(), ensureNewline(final))
	if err != nil {
		return fmt.Errorf("render: print templates: %w", err)
	}
	return nil
}

// firstStageDataFor is the first-stage context matching final data d, with
// the URLs mayu's API would hand out for d.Host.
func (r *Renderer) firstStageDataFor(d FinalData) FirstStageData {
	base := strings.TrimSuffix(d.MayuURL, "/")
	fd := FirstStageData{
		HostInfoHelperURL: base + "/hostinfo-helper",
		InstallImageURL:   base + "/images/" + d.Host.Serial + "/install_image.bin.bz2",
		SetInstalledURL:   base + "/admin/host/__SERIAL__/set_installed",
		MayuURL:           base,
		MayuVersion:       r.cfg.MayuVersion,
		MachineID:         d.Host.MachineID,
	}
	if r.cfg.UseIgnition {
		fd.IgnitionConfigURL = base + "/final-ignition-config.json"
	} else {
		fd.CloudConfigURL = base + "/final-cloud-config.yaml"
	}
	return fd
}

// loadSet reads and parses the first-stage template and the final template
// in use with every snippet.
func loadSet(cfg Config) (*templateSet, error) {
	var errs []error
	first, err := parseFirstStage(cfg.FirstStageScript)
	if err != nil {
		errs = append(errs, err)
	}
	final, err := parseFinal(cfg.FinalPath(), cfg.Snippets)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w:\n%w", ErrParse, errors.Join(errs...))
	}
	return &templateSet{first: first, final: final}, nil
}

func parseFirstStage(path string) (*template.Template, error) {
	b, err := readTemplate(path)
	if err != nil {
		return nil, fmt.Errorf("first-stage script: %w", err)
	}
	// Only our struct is in this context, so a typo must fail loudly.
	t := template.New(filepath.Base(path)).Option("missingkey=error").Funcs(baseFuncs())
	if _, err := t.Parse(string(b)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := checkReferences(t); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// parseFinal parses the final template and every snippet file into one set,
// then checks statically that every {{template}} and {{include}} it reaches
// names a defined template, so a missing snippet shows at start-up and not
// when the first machine asks for its config.
func parseFinal(path, snippetDir string) (*template.Template, error) {
	var errs []error
	root := template.New(filepath.Base(path))
	// templates_env is free-form: a key one host lacks renders empty
	// (missingkey=default plus stripping "<no value>" in execute). Struct
	// fields are not affected: a misspelt {{.Host.Hostnme}} still fails.
	root.Option("missingkey=default").Funcs(finalFuncs(root))

	b, err := readTemplate(path)
	if err != nil {
		errs = append(errs, fmt.Errorf("final template: %w", err))
	} else if _, err := root.Parse(string(b)); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", path, err))
	}

	files, err := snippetFiles(snippetDir)
	if err != nil {
		errs = append(errs, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("snippet: %w", err))
			continue
		}
		// Each snippet is its own named template in the set, so parse errors
		// name the snippet file; a file that fails adds none of its defines.
		if _, err := root.New(filepath.Base(f)).Parse(string(b)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
		}
	}
	if len(errs) == 0 {
		if err := checkReferences(root); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return root, nil
}

// readTemplate reads a main template. An empty one is an error: it is
// never what an operator meant, and it is what Watch sees when it reads a
// file an editor has truncated but not yet written; taking it as the new
// good set would serve nothing until the next change.
func readTemplate(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("%s: file is empty", path)
	}
	return b, nil
}

// snippetFiles lists the snippet files of dir in name order, so that when
// two files define the same name the outcome does not depend on the file
// system's order.
func snippetFiles(dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("snippets: %w", err)
	}
	var files []string
	for _, e := range entries {
		if e.IsDir() || !isSnippetName(e.Name()) {
			continue
		}
		files = append(files, filepath.Join(dir, e.Name()))
	}
	sort.Strings(files)
	return files, nil
}

// isSnippetName skips editor backups and hidden files that would otherwise
// redefine snippets with stale content.
func isSnippetName(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".tmpl")
}

// execute renders t into a buffer. Missing templates_env keys print as
// "<no value>" under missingkey=default; they are meant to be empty.
func execute(t *template.Template, data interface{}) ([]byte, error) {
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRender, err)
	}
	return stripNoValue(buf.Bytes()), nil
}

// stripNoValue removes what text/template prints for a missing map key
// (the same approach Helm takes), so an unset templates_env key renders
// as nothing instead of failing the render or printing "<no value>".
func stripNoValue(b []byte) []byte {
	return bytes.ReplaceAll(b, []byte("<no value>"), nil)
}

// mergeEnv returns a deep copy of env with overrides laid over it.
func mergeEnv(env, overrides map[string]interface{}) map[string]interface{} {
	h := host.Host{Overrides: env}
	merged := h.Clone().Overrides
	if merged == nil {
		merged = make(map[string]interface{}, len(overrides))
	}
	o := host.Host{Overrides: overrides}.Clone().Overrides
	for k, v := range o {
		merged[k] = v
	}
	return merged
}

// validateCloudConfig checks what coreos-cloudinit checks first: the
// "#cloud-config" header and a YAML mapping.
func validateCloudConfig(b []byte) error {
	if !bytes.HasPrefix(b, []byte("#cloud-config\n")) && !bytes.Equal(b, []byte("#cloud-config")) {
		return errors.New("cloud-config must start with a #cloud-config line")
	}
	var doc interface{}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("cloud-config is not valid YAML: %v", oneLine(err.Error()))
	}
	if doc == nil {
		return nil
	}
	if _, ok := doc.(map[string]interface{}); !ok {
		return fmt.Errorf("cloud-config must be a YAML mapping, got %T", doc)
	}
	return nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

func ensureNewline(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] != '\n' {
		return append(b, '\n')
	}
	return b
}
