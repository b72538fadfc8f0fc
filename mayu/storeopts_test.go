package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCheckInstanceName(t *testing.T) {
	for _, ok := range []string{"a", "rack-7", "mayu-1.example.com:4080", "site_b", strings.Repeat("x", maxInstanceName)} {
		assert.NoError(t, checkInstanceName(ok), ok)
	}
	for bad, want := range map[string]string{
		"":                                     "want 1 to 64 characters",
		strings.Repeat("x", maxInstanceName+1): "want 1 to 64 characters",
		"rack 7":                               `' ' is not allowed`,
		"räck":                                 `'ä' is not allowed`,
		"a/b":                                  `'/' is not allowed`,
		"a\nb":                                 `'\n' is not allowed`,
	} {
		err := checkInstanceName(bad)
		if assert.Error(t, err, "%q", bad) {
			assert.Contains(t, err.Error(), want, "%q", bad)
		}
	}
}

// The default name is the host name and the port, always a valid name.
func TestDefaultInstanceName(t *testing.T) {
	for _, port := range []int{1, 4080, 65535} {
		name := defaultInstanceName(port)
		assert.NoError(t, checkInstanceName(name), name)
		assert.True(t, strings.HasSuffix(name, ":"+strconv.Itoa(port)), name)
	}
}
