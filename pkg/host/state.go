package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// State is where a machine is in its life cycle. It is stored and sent as a
// lower-case JSON string ("running"), as Mayu 0.11 does.
type State string

// The states of the machine life cycle.
const (
	Unknown    State = "unknown"
	Configured State = "configured"
	Installing State = "installing"
	Installed  State = "installed"
	Running    State = "running"
)

// States lists every valid state in life-cycle order.
var States = []State{Unknown, Configured, Installing, Installed, Running}

// ErrInvalidState is returned for a state name that does not exist.
var ErrInvalidState = errors.New("host: invalid state")

// ErrForbiddenTransition is returned for a state change the life cycle does
// not allow; the API answers it with 409 Conflict.
var ErrForbiddenTransition = errors.New("host: forbidden state transition")

// ParseState accepts a state name, case-insensitively, with or without the
// quotes mayuctl prints around it.
func ParseState(s string) (State, error) {
	n := State(strings.ToLower(strings.Trim(strings.TrimSpace(s), `"`)))
	for _, st := range States {
		if n == st {
			return st, nil
		}
	}
	return "", fmt.Errorf("%w %q (want one of unknown, configured, installing, installed, running)", ErrInvalidState, s)
}

// String returns the bare state name.
func (s State) String() string { return string(s) }

// Quoted returns the state as mayuctl shows it: "running" with its quotes.
func (s State) Quoted() string { return `"` + string(s) + `"` }

// UnmarshalJSON accepts the state names, and the integers of the oldest Mayu
// releases (0 unknown, 1 configured, 2 installing, 3 running), so old
// records still open. An empty string is read as unknown.
func (s *State) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err == nil {
		if str == "" {
			*s = Unknown
			return nil
		}
		st, err := ParseState(str)
		if err != nil {
			return err
		}
		*s = st
		return nil
	}
	var n int
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("%w %s", ErrInvalidState, b)
	}
	legacy := []State{Unknown, Configured, Installing, Running}
	if n < 0 || n >= len(legacy) {
		return fmt.Errorf("%w %d", ErrInvalidState, n)
	}
	*s = legacy[n]
	return nil
}

// MarshalJSON writes the state name; the zero value is written as unknown.
func (s State) MarshalJSON() ([]byte, error) {
	if s == "" {
		s = Unknown
	}
	return json.Marshal(string(s))
}

// transitions is the life-cycle diagram. Self-transitions a real machine
// produces are allowed: installing again when it re-requests its config
// mid-install, running again at every boot. unknown -> installing keeps
// records of Mayu 0.11 (which left new machines unknown until their final
// config was requested) provisionable.
var transitions = map[State][]State{
	Unknown:    {Configured, Installing},
	Configured: {Configured, Installing},
	Installing: {Installing, Installed},
	Installed:  {Installed, Running, Configured},
	Running:    {Running, Configured},
}

// CanTransition reports whether a machine in state s may move to state to.
// Any state may move to unknown.
func (s State) CanTransition(to State) error {
	if s == "" {
		s = Unknown
	}
	if to == Unknown {
		return nil
	}
	for _, ok := range transitions[s] {
		if ok == to {
			return nil
		}
	}
	return fmt.Errorf("%w from %s to %s", ErrForbiddenTransition, s, to)
}

// IgnoredByDHCP reports whether DHCP leaves a machine in state s
// unanswered: it is installed (or running), so its next boot must fall
// through to its disk instead of installing again. Moving it back to
// configured (reinstall, mark-fresh) makes DHCP answer it again.
func (s State) IgnoredByDHCP() bool { return s == Installed || s == Running }
