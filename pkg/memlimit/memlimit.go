// Package memlimit gives the daemon a soft memory limit that follows what
// it holds: when GOMEMLIMIT is not set, the limit is a multiple of the live
// heap (the bytes the last garbage collection found reachable) plus a fixed
// headroom, recomputed as the heap grows or shrinks.
//
// Without a limit the Go runtime lets the heap reach twice the live heap
// (GOGC=100) and hands freed pages back to the kernel slowly, so after a
// burst of requests the resident set stays near its peak. A limit makes the
// collector and the scavenger keep the runtime's memory under it (the
// runtime's "soft memory limit", runtime/debug.SetMemoryLimit). Derived from
// the live heap it can never sit below what the daemon really holds, so a
// larger fleet gets a larger limit instead of a collector that runs without
// pause; the runtime also caps the collector at about half the CPU when a
// limit is near.
package memlimit

import (
	"context"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Defaults of Tuner.
const (
	// DefaultFactor multiplies the live heap: 1.5 leaves each cycle half
	// the live heap for new allocations (GOGC=100 leaves all of it).
	DefaultFactor = 1.5
	// DefaultHeadroom is added to the scaled live heap, in bytes, so a
	// small heap does not collect on every burst: up to a live heap of
	// 32 MiB the limit is above GOGC=100's goal of twice the live heap.
	DefaultHeadroom = 16 << 20
	// DefaultInterval is how often the limit is recomputed.
	DefaultInterval = time.Second
)

// EnvVar is the environment variable of the Go runtime's own limit; when
// it is set (to a size or "off") the Tuner leaves the limit alone.
const EnvVar = "GOMEMLIMIT"

// Tuner recomputes the soft memory limit. Its zero value uses the defaults
// and the real runtime.
type Tuner struct {
	// Factor and Headroom (bytes) give the limit: Factor*live + Headroom.
	Factor   float64
	Headroom int64
	// Interval is the period of Run.
	Interval time.Duration
	// LiveHeap returns the live heap in bytes; nil reads the runtime's
	// /gc/heap/live:bytes metric.
	LiveHeap func() int64
	// SetLimit sets the limit in bytes (a negative value only reads it)
	// and returns the previous one; nil is debug.SetMemoryLimit.
	SetLimit func(int64) int64
	// LookupEnv reads the environment; nil is os.LookupEnv.
	LookupEnv func(string) (string, bool)

	limit int64
}

// State is what Start found or set.
type State struct {
	// Limit is the soft memory limit in bytes (math.MaxInt64: none).
	Limit int64
	// LiveHeap is the live heap it was derived from, in bytes (0 when
	// FromEnv).
	LiveHeap int64
	// FromEnv is true when GOMEMLIMIT is set: the Tuner does nothing.
	FromEnv bool
}

func (t *Tuner) defaults() {
	if t.Factor <= 0 {
		t.Factor = DefaultFactor
	}
	if t.Headroom <= 0 {
		t.Headroom = DefaultHeadroom
	}
	if t.Interval <= 0 {
		t.Interval = DefaultInterval
	}
	if t.LiveHeap == nil {
		t.LiveHeap = liveHeap
	}
	if t.SetLimit == nil {
		t.SetLimit = debug.SetMemoryLimit
	}
	if t.LookupEnv == nil {
		t.LookupEnv = os.LookupEnv
	}
}

// Limit returns the limit for a live heap of live bytes.
func (t *Tuner) Limit(live int64) int64 {
	t.defaults()
	l := t.Factor*float64(max(live, 0)) + float64(t.Headroom)
	if l >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(l)
}

// Start sets the limit from the current live heap, unless GOMEMLIMIT is
// set, and reports it.
func (t *Tuner) Start() State {
	t.defaults()
	if _, ok := t.LookupEnv(EnvVar); ok {
		return State{Limit: t.SetLimit(-1), FromEnv: true}
	}
	live := t.LiveHeap()
	t.limit = t.Limit(live)
	t.SetLimit(t.limit)
	return State{Limit: t.limit, LiveHeap: live}
}

// Run recomputes the limit every Interval until ctx ends; it returns at
// once when GOMEMLIMIT is set. The limit changes only when the new value
// differs from the last by more than 1/16 of it.
func (t *Tuner) Run(ctx context.Context) error {
	t.defaults()
	if _, ok := t.LookupEnv(EnvVar); ok {
		return nil
	}
	tick := time.NewTicker(t.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			t.update()
		}
	}
}

func (t *Tuner) update() {
	next := t.Limit(t.LiveHeap())
	diff := next - t.limit
	if diff < 0 {
		diff = -diff
	}
	if t.limit == 0 || diff > t.limit/16 {
		t.limit = next
		t.SetLimit(next)
	}
}

// liveHeap reads the heap the last collection marked live, in bytes.
func liveHeap() int64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(min(s[0].Value.Uint64(), math.MaxInt64))
}
