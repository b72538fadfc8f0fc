package memlimit

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const mib = 1 << 20

// fake is a runtime whose live heap the test sets and whose limit it reads.
type fake struct {
	mu    sync.Mutex
	live  int64
	limit int64
	sets  int
}

func (f *fake) tuner(env map[string]string) *Tuner {
	return &Tuner{
		Interval: time.Millisecond,
		LiveHeap: func() int64 { f.mu.Lock(); defer f.mu.Unlock(); return f.live },
		SetLimit: func(v int64) int64 {
			f.mu.Lock()
			defer f.mu.Unlock()
			old := f.limit
			if v >= 0 {
				f.limit = v
				f.sets++
			}
			return old
		},
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
	}
}

func (f *fake) get() (int64, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.limit, f.sets
}

func TestLimitScalesWithTheLiveHeap(t *testing.T) {
	var tu Tuner
	assert.Equal(t, int64(16*mib), tu.Limit(0))
	assert.Equal(t, int64(31*mib), tu.Limit(10*mib))
	// 10,000 hosts after a storm hold about 27 MiB: a limit well under
	// 100 MB.
	assert.Equal(t, int64(56.5*mib), tu.Limit(27*mib))
	// A fleet five times larger gets five times the room, never a limit
	// under its live heap.
	assert.Equal(t, int64(166*mib), tu.Limit(100*mib))
	assert.Equal(t, int64(3*1024*mib+16*mib), tu.Limit(2*1024*mib))
	assert.Equal(t, int64(math.MaxInt64), tu.Limit(math.MaxInt64))
	custom := Tuner{Factor: 2, Headroom: 8 * mib}
	assert.Equal(t, int64(28*mib), custom.Limit(10*mib))
}

func TestGOMEMLIMITFromTheEnvironmentWins(t *testing.T) {
	f := &fake{live: 500 * mib, limit: 80 * mib}
	tu := f.tuner(map[string]string{"GOMEMLIMIT": "80MiB"})
	st := tu.Start()
	assert.Equal(t, State{Limit: 80 * mib, FromEnv: true}, st)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, tu.Run(ctx)) // returns at once
	require.NoError(t, ctx.Err(), "Run waited although GOMEMLIMIT is set")
	limit, sets := f.get()
	assert.Equal(t, int64(80*mib), limit)
	assert.Zero(t, sets)

	// "off" is the runtime's word for no limit: also left alone.
	f = &fake{limit: math.MaxInt64}
	st = f.tuner(map[string]string{"GOMEMLIMIT": "off"}).Start()
	assert.True(t, st.FromEnv)
	_, sets = f.get()
	assert.Zero(t, sets)
}

func TestRunFollowsTheLiveHeap(t *testing.T) {
	f := &fake{live: 20 * mib}
	tu := f.tuner(nil)
	st := tu.Start()
	assert.Equal(t, State{Limit: 46 * mib, LiveHeap: 20 * mib}, st)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tu.Run(ctx) }()
	waitLimit := func(want int64) {
		t.Helper()
		require.Eventually(t, func() bool { l, _ := f.get(); return l == want }, 5*time.Second, time.Millisecond)
	}
	// The fleet grows: the limit follows.
	f.mu.Lock()
	f.live = 400 * mib
	f.mu.Unlock()
	waitLimit(616 * mib)
	// Load gone: the limit comes down again.
	f.mu.Lock()
	f.live = 30 * mib
	f.mu.Unlock()
	waitLimit(61 * mib)
	// A change under 1/16 leaves it.
	_, sets := f.get()
	f.mu.Lock()
	f.live = 31 * mib
	f.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	l, sets2 := f.get()
	assert.Equal(t, int64(61*mib), l)
	assert.Equal(t, sets, sets2)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestTheRealRuntime(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	keep := make([]byte, 64*mib)
	runtime.GC()
	tu := Tuner{LookupEnv: func(string) (string, bool) { return "", false }}
	st := tu.Start()
	runtime.KeepAlive(keep)
	assert.GreaterOrEqual(t, st.LiveHeap, int64(64*mib), "the live heap holds the 64 MiB kept")
	assert.Equal(t, tu.Limit(st.LiveHeap), st.Limit)
	assert.Equal(t, st.Limit, debug.SetMemoryLimit(-1))
}
