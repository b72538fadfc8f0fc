package timeline

import (
	"errors"
	"sync/atomic"
)

// ErrTooManySubscribers is returned by Subscribe when Config.MaxSubscribers
// subscribers are live.
var ErrTooManySubscribers = errors.New("timeline: too many subscribers")

// ErrClosed is returned by Subscribe after Close.
var ErrClosed = errors.New("timeline: closed")

// Subscription receives every event published after Subscribe, in order,
// through a buffered channel. A subscriber that does not keep up loses
// events (Dropped counts them) instead of holding up Publish.
type Subscription struct {
	t       *Timeline
	ch      chan Event
	dropped atomic.Uint64
	closed  bool // guarded by t.mu
}

// Subscribe starts a subscription whose channel holds up to buffer events
// (Config.SubscriberBuffer when buffer <= 0). Close it when done.
func (t *Timeline) Subscribe(buffer int) (*Subscription, error) {
	if buffer <= 0 {
		buffer = t.cfg.SubscriberBuffer
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if len(t.subs) >= t.cfg.MaxSubscribers {
		return nil, ErrTooManySubscribers
	}
	s := &Subscription{t: t, ch: make(chan Event, buffer)}
	t.subs[s] = struct{}{}
	return s, nil
}

// C is the channel of events. It is closed by Close.
func (s *Subscription) C() <-chan Event { return s.ch }

// Dropped returns how many events this subscriber has lost so far because
// its buffer was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription and closes C. It may be called more than
// once.
func (s *Subscription) Close() {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	delete(s.t.subs, s)
	close(s.ch)
}

// offer is called with t.mu held: never blocks.
func (s *Subscription) offer(e Event) {
	select {
	case s.ch <- e:
	default:
		s.dropped.Add(1)
	}
}

// Subscribers returns the number of live subscriptions.
func (t *Timeline) Subscribers() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.subs)
}

// Close ends every subscription (their channels close, so streams end
// cleanly at shutdown) and refuses new ones. Publish and the readers keep
// working.
func (t *Timeline) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for s := range t.subs {
		s.closed = true
		close(s.ch)
	}
	t.subs = map[*Subscription]struct{}{}
}
