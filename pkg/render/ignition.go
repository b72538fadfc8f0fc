package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"

	// Spec 2.x (Container Linux, Mayu 0.11's templates) lives in the last
	// release of the pre-v2 Ignition module; spec 3.x in the v2 module.
	v2_0 "github.com/coreos/ignition/config/v2_0"
	v2_0types "github.com/coreos/ignition/config/v2_0/types"
	v2_1 "github.com/coreos/ignition/config/v2_1"
	v2_1types "github.com/coreos/ignition/config/v2_1/types"
	v2_2 "github.com/coreos/ignition/config/v2_2"
	v2_2types "github.com/coreos/ignition/config/v2_2/types"
	v2_3 "github.com/coreos/ignition/config/v2_3"
	v2_3types "github.com/coreos/ignition/config/v2_3/types"
	legacyreport "github.com/coreos/ignition/config/validate/report"
	v3_0 "github.com/coreos/ignition/v2/config/v3_0"
	v3_1 "github.com/coreos/ignition/v2/config/v3_1"
	v3_2 "github.com/coreos/ignition/v2/config/v3_2"
	v3_3 "github.com/coreos/ignition/v2/config/v3_3"
	v3_4 "github.com/coreos/ignition/v2/config/v3_4"
	"github.com/coreos/vcontext/report"
	"gopkg.in/yaml.v3"
)

// IgnitionSpec is the newest Ignition config version the final Ignition
// config may declare. Flatcar's Ignition reads 3.0 to 3.4; older versions
// in an operator's template are accepted too (see IgnitionSpecs).
const IgnitionSpec = "3.4.0"

// IgnitionSpecs lists, oldest first, every Ignition config version a final
// Ignition template may declare in ignition.version. Each is validated
// against its own spec's schema and served as it is, never translated:
// 2.0.0 to 2.3.0 are what Container Linux's Ignition reads (Mayu 0.11's
// templates declare 2.0.0; Flatcar still boots them), 3.0.0 to 3.4.0 what
// Flatcar's reads natively. 2.4.0 was only ever read by RHCOS and 3.5.0 is
// newer than IgnitionSpec, so both are refused rather than served to a
// machine that cannot boot them.
var IgnitionSpecs = []string{"2.0.0", "2.1.0", "2.2.0", "2.3.0", "3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0"}

// finding is one entry of a validator's report, reduced to what the render
// error or the warning log needs.
type finding struct {
	fatal bool
	msg   string
}

// specValidator validates a config's JSON against one spec version. The
// error is the validator's verdict; the findings say why.
type specValidator func(js []byte) ([]finding, error)

// validators maps each version of IgnitionSpecs to its validator.
var validators = map[string]specValidator{
	"2.0.0": spec2[v2_0types.Config](v2_0.Parse),
	"2.1.0": spec2[v2_1types.Config](v2_1.Parse),
	"2.2.0": spec2[v2_2types.Config](v2_2.Parse),
	"2.3.0": spec2[v2_3types.Config](v2_3.Parse),
	"3.0.0": spec3(v3_0.Parse),
	"3.1.0": spec3(v3_1.Parse),
	"3.2.0": spec3(v3_2.Parse),
	"3.3.0": spec3(v3_3.Parse),
	"3.4.0": spec3(v3_4.Parse),
}

var jsonPosition = regexp.MustCompile(`,? line \d+ col \d+`)

// spec3 adapts a 3.x Parse: its report already names the $.json.path of
// each problem.
func spec3[C any](parse func([]byte) (C, report.Report, error)) specValidator {
	return func(js []byte) ([]finding, error) {
		_, rpt, err := parse(js)
		var out []finding
		for _, e := range rpt.Entries {
			// Positions refer to the intermediate JSON, not to the operator's
			// YAML template; the $.json.path in the message is what helps.
			out = append(out, finding{fatal: e.Kind.IsFatal(), msg: jsonPosition.ReplaceAllString(oneLine(e.String()), "")})
		}
		return out, err
	}
}

// spec2 adapts a 2.x Parse. Those fall back to the previous spec (down to
// spec 1) whenever the JSON does not decode into their types, which turns a
// wrong field type into a misleading "unknown version"; decoding into the
// declared spec's types first names the field instead. Their report gives
// only a line of the intermediate JSON, which jsonPaths turns into the
// $.json.path that 3.x reports carry.
func spec2[C any](parse func([]byte) (C, legacyreport.Report, error)) specValidator {
	return func(js []byte) ([]finding, error) {
		var c C
		if err := json.Unmarshal(js, &c); err != nil {
			return []finding{{fatal: true, msg: oneLine(err.Error())}}, errors.New("config does not match the schema of its version")
		}
		_, rpt, err := parse(js)
		var paths map[int]string
		var out []finding
		for _, e := range rpt.Entries {
			at := ""
			if e.Line > 0 {
				if paths == nil {
					paths = jsonPaths(js)
				}
				if p, ok := paths[e.Line]; ok {
					at = " at " + p
				}
			}
			out = append(out, finding{fatal: e.Kind == legacyreport.EntryError, msg: e.Kind.String() + at + ": " + oneLine(e.Message)})
		}
		return out, err
	}
}

// jsonPaths maps each line of indented JSON (one key, value or closing
// bracket a line, as ignitionJSON encodes it) to the path of what that line
// holds, in the validator's notation: $.storage.files.0.path. A closing
// bracket's line maps to the object or array it closes.
func jsonPaths(js []byte) map[int]string {
	type frame struct {
		path   string
		object bool
		key    string // object: the key whose value comes next
		index  int    // array: the index of the next element
	}
	paths := map[int]string{}
	stack := []frame{{path: "$"}}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	line, counted := 1, int64(0)
	for {
		tok, err := dec.Token()
		if err != nil {
			return paths // io.EOF, or JSON the validator has already refused
		}
		// Tokens never span lines (JSON strings hold no raw newline), so
		// the line the token ends on is its line.
		end := dec.InputOffset()
		line += bytes.Count(js[counted:end], []byte("\n"))
		counted = end
		top := &stack[len(stack)-1]
		if top.object && top.key == "" {
			if k, ok := tok.(string); ok {
				top.key = k
				paths[line] = top.path + "." + k
				continue
			}
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			paths[line] = top.path
			stack = stack[:len(stack)-1]
			continue
		}
		var path string
		if top.object {
			path, top.key = top.path+"."+top.key, ""
		} else {
			path = fmt.Sprintf("%s.%d", top.path, top.index)
			top.index++
		}
		if len(stack) == 1 {
			path = "$" // the document itself
		}
		paths[line] = path
		if d, ok := tok.(json.Delim); ok {
			stack = append(stack, frame{path: path, object: d == '{'})
		}
	}
}

// ignitionJSON converts the rendered YAML (which mirrors Ignition's JSON
// field for field) to JSON and validates it against the schema of the spec
// version its ignition.version declares (one of IgnitionSpecs). The JSON
// comes back as the template wrote it: a 2.x config stays 2.x. Warnings
// from the validator come back for logging; errors, joined on one line,
// fail the render.
func ignitionJSON(rendered []byte) ([]byte, []string, error) {
	var doc interface{}
	if err := yaml.Unmarshal(rendered, &doc); err != nil {
		return nil, nil, fmt.Errorf("not valid YAML: %s", oneLine(err.Error()))
	}
	// jsonCompatible rewrites nested maps in place, so top is ready for
	// encoding/json once it returns.
	top, ok := doc.(map[string]interface{})
	if !ok {
		return nil, nil, fmt.Errorf("must be a YAML mapping, got %T", doc)
	}
	if _, err := jsonCompatible(top, ""); err != nil {
		return nil, nil, err
	}
	version, err := declaredVersion(top)
	if err != nil {
		return nil, nil, err
	}
	validate, ok := validators[version]
	if !ok {
		return nil, nil, fmt.Errorf("invalid Ignition config: ignition.version %q is not supported (mayu validates and serves %s)",
			version, strings.Join(IgnitionSpecs, ", "))
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Data URLs and unit contents carry '&', '<', '>' that must reach the
	// machine as they are, not as \u0026.
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(top); err != nil {
		return nil, nil, fmt.Errorf("encode JSON: %w", err)
	}
	js := buf.Bytes()

	findings, err := validate(js)
	var problems, warnings []string
	for _, f := range findings {
		if f.fatal {
			problems = append(problems, f.msg)
		} else {
			warnings = append(warnings, f.msg)
		}
	}
	if err != nil {
		msg := err.Error()
		if len(problems) > 0 {
			msg += ": " + strings.Join(problems, "; ")
		}
		return nil, nil, fmt.Errorf("invalid Ignition config (spec %s): %s", version, msg)
	}
	return js, warnings, nil
}

// declaredVersion reads ignition.version, which picks the schema.
func declaredVersion(top map[string]interface{}) (string, error) {
	want := "declare the Ignition spec the template is written for, one of " + strings.Join(IgnitionSpecs, ", ")
	ign, ok := top["ignition"].(map[string]interface{})
	if !ok {
		return "", errors.New("invalid Ignition config: no ignition.version: " + want)
	}
	switch v := ign["version"].(type) {
	case string:
		return v, nil
	case nil:
		return "", errors.New("invalid Ignition config: no ignition.version: " + want)
	default:
		// `version: 2.0` is a YAML number; Ignition wants "2.0.0".
		return "", fmt.Errorf("invalid Ignition config: ignition.version must be a version string, not %T %v: %s", v, v, want)
	}
}

// jsonCompatible turns YAML's decoded values into ones encoding/json
// accepts: map keys must be strings (YAML allows `1: x` or `true: y`,
// which Ignition never uses, so they are an error, not a guess).
func jsonCompatible(v interface{}, path string) (interface{}, error) {
	switch t := v.(type) {
	case map[string]interface{}:
		for k, e := range t {
			c, err := jsonCompatible(e, path+"."+k)
			if err != nil {
				return nil, err
			}
			t[k] = c
		}
		return t, nil
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, e := range t {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("%s: map key %v is not a string", strings.TrimPrefix(path, "."), k)
			}
			c, err := jsonCompatible(e, path+"."+ks)
			if err != nil {
				return nil, err
			}
			m[ks] = c
		}
		return m, nil
	case []interface{}:
		for i, e := range t {
			c, err := jsonCompatible(e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			t[i] = c
		}
		return t, nil
	case float64:
		// YAML's .inf and .nan have no JSON form.
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return nil, errors.New(strings.TrimPrefix(path, ".") + ": number has no JSON form")
		}
		return t, nil
	default:
		return v, nil
	}
}
