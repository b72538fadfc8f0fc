package host

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBadRuneRefusesEveryLineBreakingCategory(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want rune
	}{
		{"a\nb", '\n'},
		{"a\rb", '\r'},
		{"a\tb", '\t'},
		{"\x1b[2J", 0x1b},         // terminal escape
		{"a\x7fb", 0x7f},          // DEL
		{"a\u0085b", 0x85},        // NEL: a line break to YAML 1.1
		{"a\u2028b", 0x2028},      // LINE SEPARATOR (Zl)
		{"a\u2029b", 0x2029},      // PARAGRAPH SEPARATOR (Zp)
		{"a\u200bb", 0x200b},      // zero-width space (Cf)
		{"a\u202eb", 0x202e},      // right-to-left override (Cf)
		{"\ufeffa", 0xfeff},       // byte order mark (Cf)
		{"a\U000e0001b", 0xe0001}, // language tag (Cf, above the BMP)
		{"a\x00b", 0},
		{"a\xffb", '\uFFFD'}, // invalid UTF-8
	} {
		r, bad := BadRune(tc.s)
		assert.True(t, bad, "%q", tc.s)
		assert.Equal(t, tc.want, r, "%q", tc.s)
		err := CheckText("metadata", tc.s)
		require.ErrorIs(t, err, ErrInvalidText, "%q", tc.s)
		assert.NotContains(t, err.Error(), tc.s, "the error never repeats the raw value")
	}
	// Hostile but legal: quotes, '#', ': ', $(), backticks, YAML indicators,
	// non-ASCII letters and the replacement character itself.
	for _, s := range []string{"", "plain", `'"#: $(id) ` + "`id`" + ` *a &b !c {d} [e] | > % @`, "ünïcödé ✓ 日本", "\uFFFD", "\u00a0nbsp"} {
		_, bad := BadRune(s)
		assert.False(t, bad, "%q", s)
		assert.NoError(t, CheckText("x", s))
	}
}

func TestCheckValueWalksKeysListsAndMaps(t *testing.T) {
	ok := map[string]interface{}{"k": []interface{}{"a", 1.5, true, nil, map[string]interface{}{"n": "b"}}}
	assert.NoError(t, CheckValue("override", ok))
	for _, v := range []interface{}{
		"x\u2028y",
		[]interface{}{"a", "b\u2029"},
		[]string{"a", "b\u0085"},
		map[string]interface{}{"k\nnew": "v"},
		map[string]interface{}{"k": map[string]interface{}{"deep": []interface{}{"\x1b]0;title\x07"}}},
	} {
		assert.ErrorIs(t, CheckValue("override", v), ErrInvalidText, "%#v", v)
	}
}
