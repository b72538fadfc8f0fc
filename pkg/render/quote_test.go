package render

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"mayu/pkg/host"
)

// hostileValues are legal values that break naive rendering: YAML
// indicators and comments, shell command substitution, quotes of every
// kind, systemd specifiers and variables, backslashes.
var hostileValues = []string{
	"",
	"plain-1.2.3",
	`it's "quoted"`,
	"# not a comment",
	"key: value",
	"- item",
	"$(touch /tmp/pwned) `id` ${HOME} $HOME $$",
	"*alias", "&anchor", "!tag", "|", ">", "@at", "%n %i %%", "{a: b}", "[1, 2]",
	`back\slash \n \" \\`,
	"semi ; colon", "; ", "a;b", "~root", "null", "true", "0x10", "1e3", "yes",
	"  spaces around  ",
	"ünïcödé ✓ 日本 \u00a0nbsp",
	"ssh-ed25519 AAAA user@host\nwrite_files:\n- path: /root/.ssh/authorized_keys", // only yaml/json can hold it
}

// lineBreakers are what host.BadRune refuses; yaml and json escape them,
// the shell and systemd functions refuse to render them.
var lineBreakers = []string{"a\nb", "a\rb", "a\u0085b", "a\u2028b", "a\u2029b", "a\x1b[2Jb", "a\u200bb", "a\ufeffb", "a\x7fb", "a\u009bb", "a\U000e0001b"}

func TestYAMLAndJSONQuotingRoundTrips(t *testing.T) {
	// U+FFFE and U+FFFF are not characters; YAML may not hold them raw.
	for _, v := range append(append([]string{"\ufffe\uffff"}, hostileValues...), lineBreakers...) {
		q := quote(v)
		assert.Equal(t, 1, strings.Count(q, "\n")+1, "quote emits one line: %q", q)
		assert.False(t, strings.ContainsFunc(q, func(r rune) bool { return r <= 0xFFFF && host.Unprintable(r) }),
			"no raw control, format or separator character below U+10000: %q", q)

		var doc map[string]interface{}
		require.NoError(t, yaml.Unmarshal([]byte("k: "+q+"\nother: 1\n"), &doc), "%q", q)
		assert.Equal(t, map[string]interface{}{"k": v, "other": 1}, doc, "YAML reads back exactly %q", v)

		var seq []interface{}
		require.NoError(t, yaml.Unmarshal([]byte("- "+q+"\n- "+q+"\n"), &seq))
		assert.Equal(t, []interface{}{v, v}, seq)

		var s string
		require.NoError(t, json.Unmarshal([]byte(q), &s), "%q", q)
		assert.Equal(t, v, s, "JSON reads back exactly")

		y, err := yamlValue(v)
		require.NoError(t, err)
		assert.Equal(t, q, y, "yaml of a string is its quoted form")
	}
	assert.Equal(t, `""`, quote(nil), "a missing templates_env key is empty")
	assert.Equal(t, `"3"`, quote(3), "quote always gives a string")
	assert.Equal(t, `"<&>"`, quote("<&>"), "no HTML escaping")
	assert.Equal(t, `"a=b,c=d"`, quote(host.FleetMeta{"a=b", "c=d"}), "quote takes a value's printed form")
}

func TestYAMLKeepsStructure(t *testing.T) {
	v := map[string]interface{}{
		"list":   []interface{}{"a: b", 1.5, true, nil, "\u2028"},
		"nested": map[string]interface{}{"#k": "$(x)"},
		"n":      1068.0,
	}
	out, err := yamlValue(v)
	require.NoError(t, err)
	assert.NotContains(t, out, "\n")
	var back map[string]interface{}
	require.NoError(t, yaml.Unmarshal([]byte("v: "+out), &map[string]interface{}{}))
	require.NoError(t, yaml.Unmarshal([]byte(out), &back))
	assert.Equal(t, map[string]interface{}{
		"list": []interface{}{"a: b", 1.5, true, nil, "\u2028"}, "nested": map[string]interface{}{"#k": "$(x)"}, "n": 1068,
	}, back)
	var fromJSON map[string]interface{}
	require.NoError(t, json.Unmarshal([]byte(out), &fromJSON))
	assert.Equal(t, v, fromJSON)

	list, err := yamlValue(host.FleetMeta{"a=b"})
	require.NoError(t, err)
	assert.Equal(t, `["a=b"]`, list, "yaml/json keep a list a list")
	_, err = yamlValue(make(chan int))
	assert.Error(t, err)
}

// TestShqRoundTripsThroughRealShells has dash and bash print each quoted
// value back and compares the bytes.
func TestShqRoundTripsThroughRealShells(t *testing.T) {
	var script strings.Builder
	var want bytes.Buffer
	for _, v := range hostileValues {
		if _, bad := host.BadRune(v); bad {
			continue
		}
		q, err := shq(v)
		require.NoError(t, err)
		fmt.Fprintf(&script, "printf '%%s\\0' %s\n", q)
		want.WriteString(v + "\x00")
	}
	for _, sh := range []string{"dash", "bash"} {
		path, err := exec.LookPath(sh)
		if err != nil {
			t.Logf("%s not installed", sh)
			continue
		}
		out, err := exec.Command(path, "-c", script.String()).CombinedOutput()
		require.NoError(t, err, "%s: %s", sh, out)
		assert.Equal(t, want.String(), string(out), "%s reads back exactly what was quoted", sh)
	}
	for _, v := range []string{"plain-1.2.3", "/dev/sdb", "http://192.168.2.2:4080/x", "a=b,c=d"} {
		q, err := shq(v)
		require.NoError(t, err)
		assert.Equal(t, v, q, "ordinary values stay unquoted")
	}
	q, err := shq(nil)
	require.NoError(t, err)
	assert.Equal(t, "''", q)
	for _, v := range lineBreakers {
		_, err := shq(v)
		assert.ErrorContains(t, err, "shq", "%q", v)
	}
}

// execWords splits an Exec*= or Environment= value into words the way
// systemd.service(5) "Command lines" and systemd.unit(5) "Specifiers"
// describe it: specifiers first (%% is a literal %, any other specifier is
// reported), then words at white space, each optionally in single or
// double quotes, with C escapes; for command lines, $$ is a literal $ and
// ${VAR} or a whole-word $VAR would be expanded, which is reported too.
// It is a model written from the manual, not systemd's code, so the tests
// check the functions against the documented rules.
func execWords(t *testing.T, line string, exec bool) []string {
	t.Helper()
	var spec strings.Builder
	for i := 0; i < len(line); i++ {
		if line[i] == '%' {
			require.Less(t, i+1, len(line), "lone %% at the end: %q", line)
			require.Equal(t, byte('%'), line[i+1], "specifier %%%c would be expanded in %q", line[i+1], line)
			i++
		}
		spec.WriteByte(line[i])
	}
	s := spec.String()
	var words []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		var w strings.Builder
		quote := byte(0)
		if s[0] == '"' || s[0] == '\'' {
			quote, s = s[0], s[1:]
		}
		for {
			require.NotEmpty(t, s, "unterminated word in %q", line)
			c := s[0]
			if quote == 0 && (c == ' ' || c == '\t') {
				break
			}
			if quote != 0 && c == quote {
				s = s[1:]
				require.True(t, s == "" || s[0] == ' ', "a quote must end its word in %q", line)
				break
			}
			if c == '\\' {
				r, _, tail, err := strconv.UnquoteChar(s, quote)
				require.NoError(t, err, "bad escape in %q", line)
				w.WriteRune(r)
				s = tail
				continue
			}
			w.WriteByte(c)
			s = s[1:]
			if s == "" && quote == 0 {
				break
			}
		}
		word := w.String()
		if exec {
			require.False(t, strings.HasPrefix(word, "$") && !strings.HasPrefix(word, "$$"), "whole-word variable in %q", line)
			require.NotContains(t, strings.ReplaceAll(word, "$$", ""), "${", "variable would be expanded in %q", line)
			word = strings.ReplaceAll(word, "$$", "$")
		}
		words = append(words, word)
	}
	return words
}

func TestSystemdQuotingKeepsOneWord(t *testing.T) {
	for _, v := range hostileValues {
		if _, bad := host.BadRune(v); bad {
			continue
		}
		q, err := systemdq(v)
		require.NoError(t, err)
		assert.Equal(t, []string{"/bin/echo", v, "last"}, execWords(t, "/bin/echo "+q+" last", true), "systemdq %q -> %s", v, q)

		e, err := systemdEnv("KEY", v)
		require.NoError(t, err)
		assert.Equal(t, []string{"KEY=" + v}, execWords(t, e, false), "systemdenv %q -> %s", v, e)

		plain, err := systemdValue(v)
		if strings.HasSuffix(v, `\`) {
			assert.Error(t, err)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, v, strings.ReplaceAll(plain, "%%", "%"), "systemd only doubles %%")
	}
	for _, v := range []string{"plain-1.2.3", "/dev/sdb", "--docker-version=1.12.6", "http://192.168.2.2:4080/yochu"} {
		q, err := systemdq(v)
		require.NoError(t, err)
		assert.Equal(t, v, q, "ordinary values stay unquoted")
	}
	q, err := systemdq("")
	require.NoError(t, err)
	assert.Equal(t, `""`, q)
	_, err = systemdValue(`C:\`)
	assert.ErrorContains(t, err, "backslash")
	for _, v := range lineBreakers {
		_, err := systemdq(v)
		assert.Error(t, err, "%q", v)
		_, err = systemdValue(v)
		assert.Error(t, err, "%q", v)
		_, err = systemdEnv("K", v)
		assert.Error(t, err, "%q", v)
		assert.True(t, utf8.ValidString(v))
	}
}
