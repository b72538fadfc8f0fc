package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"

	ign "github.com/coreos/ignition/v2/config/v3_4"
	"gopkg.in/yaml.v3"
)

// IgnitionSpec is the newest Ignition config version the final Ignition
// config may declare. Flatcar's Ignition reads 3.0 to 3.4; older versions
// in an operator's template are accepted too.
const IgnitionSpec = "3.4.0"

var jsonPosition = regexp.MustCompile(`,? line \d+ col \d+`)

// ignitionJSON converts the rendered YAML (which mirrors Ignition's JSON
// field for field) to JSON and validates it as an Ignition config of spec
// 3.0 to 3.4. Warnings from the validator come back for logging; errors,
// joined on one line, fail the render.
func ignitionJSON(rendered []byte) ([]byte, []string, error) {
	var doc interface{}
	if err := yaml.Unmarshal(rendered, &doc); err != nil {
		return nil, nil, fmt.Errorf("not valid YAML: %s", oneLine(err.Error()))
	}
	if _, ok := doc.(map[string]interface{}); !ok {
		return nil, nil, fmt.Errorf("must be a YAML mapping, got %T", doc)
	}
	doc, err := jsonCompatible(doc, "")
	if err != nil {
		return nil, nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Data URLs and unit contents carry '&', '<', '>' that must reach the
	// machine as they are, not as \u0026.
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, nil, fmt.Errorf("encode JSON: %w", err)
	}
	js := buf.Bytes()

	// Entries are sorted into errors and warnings here rather than in a
	// helper, so this package need not import the validator's report type.
	_, rpt, err := ign.ParseCompatibleVersion(js)
	var problems, warnings []string
	for _, e := range rpt.Entries {
		// Positions refer to the intermediate JSON, not to the operator's
		// YAML template; the $.json.path in the message is what helps.
		msg := jsonPosition.ReplaceAllString(oneLine(e.String()), "")
		if e.Kind.IsFatal() {
			problems = append(problems, msg)
		} else {
			warnings = append(warnings, msg)
		}
	}
	if err != nil {
		msg := err.Error()
		if len(problems) > 0 {
			msg += ": " + strings.Join(problems, "; ")
		}
		return nil, nil, fmt.Errorf("invalid Ignition config: %s", msg)
	}
	return js, warnings, nil
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
