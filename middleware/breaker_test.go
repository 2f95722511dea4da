package middleware_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/sony/gobreaker"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/middleware"
)

// transitions records a breaker's state changes.
type transitions struct {
	mu    sync.Mutex
	steps []string
}

func (tr *transitions) record(_ string, from, to gobreaker.State) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.steps = append(tr.steps, from.String()+"→"+to.String())
}

func (tr *transitions) get() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.steps)
}

// timedHandler fails while failing is set and records when it was called.
type timedHandler struct {
	failing atomic.Bool
	mu      sync.Mutex
	calls   []time.Time
}

func (h *timedHandler) handle(*message.Message) ([]*message.Message, error) {
	h.mu.Lock()
	h.calls = append(h.calls, time.Now())
	h.mu.Unlock()
	if h.failing.Load() {
		return nil, errTransient
	}
	return nil, nil
}

func (h *timedHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.calls)
}

func (h *timedHandler) last() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[len(h.calls)-1]
}

const openFor = 300 * time.Millisecond

// openBreaker opens a breaker with three failures. opened is taken before
// the third, the one that opens it: no later than the breaker starts its
// OpenFor (the state-change callback runs after that, later still under
// load, so a wait measured from it looks short).
func openBreaker(t *testing.T, tr *transitions, h *timedHandler) (chain message.HandlerFunc, opened time.Time) {
	t.Helper()
	b := middleware.Breaker{Name: "test", Logger: quiet, BreakerPolicy: middleware.BreakerPolicy{ConsecutiveFailures: 3, OpenFor: openFor, MaxPause: 10 * time.Second, OnStateChange: tr.record}}
	chain = b.Middleware()(h.handle)
	h.failing.Store(true)
	for i := range 3 {
		opened = time.Now()
		if _, err := chain(newMsg(context.Background())); !errors.Is(err, errTransient) {
			t.Fatalf("failure %d: err = %v, want the handler's own error", i+1, err)
		}
	}
	if steps := tr.get(); !slices.Equal(steps, []string{"closed→open"}) {
		t.Fatalf("after 3 failures: transitions %v, want [closed→open]", steps)
	}
	return chain, opened
}

// hold runs chain on a new message in the background.
func hold(chain message.HandlerFunc) <-chan error {
	res := make(chan error, 1)
	go func() {
		_, err := chain(newMsg(context.Background()))
		res <- err
	}()
	return res
}

func wait(t *testing.T, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("held message never released")
		return nil
	}
}

func TestBreakerHoldsWhileOpenThenProbeCloses(t *testing.T) {
	tr := &transitions{}
	h := &timedHandler{}
	chain, opened := openBreaker(t, tr, h)
	h.failing.Store(false)

	res := hold(chain)
	time.Sleep(openFor / 2) // an observation window, not a speed assertion
	if n := h.count(); n != 3 {
		t.Fatalf("handler called %d times while the circuit was open, want 3 (no call)", n)
	}
	if err := wait(t, res); err != nil {
		t.Fatalf("held message: err = %v, want the probe's success", err)
	}
	if n := h.count(); n != 4 {
		t.Errorf("handler called %d times, want 4 (one probe)", n)
	}
	if waited := h.last().Sub(opened); waited < openFor {
		t.Errorf("probe ran %s after the failure that opened the circuit, want at least OpenFor %s", waited, openFor)
	}
	steps := tr.get()
	if want := []string{"closed→open", "open→half-open", "half-open→closed"}; !slices.Equal(steps, want) {
		t.Errorf("transitions %v, want %v", steps, want)
	}
	// Closed again: later messages flow at once.
	for range 3 {
		if _, err := chain(newMsg(context.Background())); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.count(); n != 7 {
		t.Errorf("handler called %d times, want 7", n)
	}
}

func TestBreakerFailedProbeReopens(t *testing.T) {
	tr := &transitions{}
	h := &timedHandler{}
	chain, _ := openBreaker(t, tr, h)
	if err := wait(t, hold(chain)); !errors.Is(err, errTransient) {
		t.Fatalf("probe: err = %v, want the probe's own failure", err)
	}
	if n := h.count(); n != 4 {
		t.Errorf("handler called %d times, want 4 (one probe)", n)
	}
	steps := tr.get()
	if want := []string{"closed→open", "open→half-open", "half-open→open"}; !slices.Equal(steps, want) {
		t.Fatalf("transitions %v, want %v", steps, want)
	}
	// The failed probe started before the breaker re-opened (see
	// openBreaker): measure from it.
	reopened := h.last()
	h.failing.Store(false)
	res := hold(chain)
	time.Sleep(openFor / 2) // an observation window, not a speed assertion
	if n := h.count(); n != 4 {
		t.Errorf("handler called %d times while re-opened, want 4", n)
	}
	if err := wait(t, res); err != nil {
		t.Fatal(err)
	}
	if waited := h.last().Sub(reopened); waited < openFor {
		t.Errorf("second probe ran %s after the failed probe, want at least %s", waited, openFor)
	}
}

func TestBreakerMaxPauseHandsMessageBack(t *testing.T) {
	h := &timedHandler{}
	h.failing.Store(true)
	b := middleware.Breaker{Name: "pause", Logger: quiet, BreakerPolicy: middleware.BreakerPolicy{ConsecutiveFailures: 1, OpenFor: time.Hour, MaxPause: 50 * time.Millisecond}}
	chain := b.Middleware()(h.handle)
	_, _ = chain(newMsg(context.Background()))
	err := wait(t, hold(chain))
	if !errors.Is(err, middleware.ErrCircuitOpen) {
		t.Errorf("err = %v, want ErrCircuitOpen", err)
	}
	if h.count() != 1 {
		t.Errorf("handler called %d times, want 1 (not while open)", h.count())
	}

	// A message whose context ends while held is handed back at once.
	ctx, cancel := context.WithCancel(context.Background())
	b.MaxPause = time.Hour
	chain = b.Middleware()(h.handle)
	_, _ = chain(newMsg(context.Background()))
	res := make(chan error, 1)
	go func() { _, err := chain(newMsg(ctx)); res <- err }()
	cancel()
	if err := wait(t, res); !errors.Is(err, middleware.ErrCircuitOpen) || !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want ErrCircuitOpen and context.Canceled", err)
	}
}

// Held past MaxPause, the message goes back to the backend; DeadLetter
// redelivers it without counting it, even on its last delivery.
func TestBreakerPauseIsNotDeadLettered(t *testing.T) {
	store := deadletter.NewMemory()
	h := &timedHandler{}
	h.failing.Store(true)
	br := middleware.Breaker{Logger: quiet, BreakerPolicy: middleware.BreakerPolicy{ConsecutiveFailures: 1, OpenFor: time.Hour, MaxPause: 20 * time.Millisecond}}
	chain := middleware.DeadLetter{Store: store, MaxDeliveries: 2, Logger: quiet}.Middleware()(br.Middleware()(h.handle))
	_, _ = chain(newMsg(routed(), bridge.DeliveryKey, "1")) // opens the circuit
	msg := newMsg(routed(), bridge.DeliveryKey, "2")
	if _, err := chain(msg); !errors.Is(err, middleware.ErrCircuitOpen) {
		t.Fatalf("err = %v, want ErrCircuitOpen (nack)", err)
	}
	if _, ok := msg.Metadata[bridge.NackDelayKey]; !ok {
		t.Error("no nack delay set")
	}
	if recs := all(t, store); len(recs) != 0 {
		t.Errorf("an open circuit dead-lettered %d messages", len(recs))
	}
}

func TestBreakerIgnoresPermanentErrors(t *testing.T) {
	tr := &transitions{}
	b := middleware.Breaker{Logger: quiet, BreakerPolicy: middleware.BreakerPolicy{ConsecutiveFailures: 3, OpenFor: time.Hour, OnStateChange: tr.record}}
	c := &counter{outcome: always(middleware.Permanent(errTransient))}
	chain := b.Middleware()(c.handle)
	for range 10 {
		if _, err := chain(newMsg(context.Background())); !middleware.IsPermanent(err) {
			t.Fatalf("err = %v, want the permanent error", err)
		}
	}
	if n := c.calls.Load(); n != 10 {
		t.Errorf("handler called %d times, want 10: permanent errors must not open the circuit", n)
	}
	if steps := tr.get(); len(steps) != 0 {
		t.Errorf("transitions %v, want none", steps)
	}
}

func TestBreakerCustomIsFailure(t *testing.T) {
	tr := &transitions{}
	b := middleware.Breaker{Logger: quiet, BreakerPolicy: middleware.BreakerPolicy{ConsecutiveFailures: 2, OpenFor: time.Hour, MaxPause: time.Millisecond,
		OnStateChange: tr.record, IsFailure: func(err error) bool { return errors.Is(err, errTransient) }}}
	other := errors.New("not counted")
	c := &counter{outcome: always(other)}
	chain := b.Middleware()(c.handle)
	for range 5 {
		_, _ = chain(newMsg(context.Background()))
	}
	if steps := tr.get(); len(steps) != 0 || c.calls.Load() != 5 {
		t.Errorf("errors IsFailure rejects opened the circuit: transitions %v, calls %d", steps, c.calls.Load())
	}
}

func TestBreakerDisabledPassesThrough(t *testing.T) {
	tr := &transitions{}
	b := middleware.Breaker{BreakerPolicy: middleware.BreakerPolicy{Disabled: true, ConsecutiveFailures: 1, OpenFor: time.Hour, OnStateChange: tr.record}}
	c := &counter{outcome: always(errTransient)}
	chain := b.Middleware()(c.handle)
	for range 5 {
		if _, err := chain(newMsg(context.Background())); !errors.Is(err, errTransient) {
			t.Fatalf("err = %v, want the handler's", err)
		}
	}
	if n := c.calls.Load(); n != 5 {
		t.Errorf("handler called %d times, want 5", n)
	}
	if steps := tr.get(); len(steps) != 0 {
		t.Errorf("a disabled breaker changed state: %v", steps)
	}
}

func TestBreakerEachMiddlewareCallHasItsOwnCircuit(t *testing.T) {
	b := middleware.Breaker{Logger: quiet, BreakerPolicy: middleware.BreakerPolicy{ConsecutiveFailures: 1, OpenFor: time.Hour, MaxPause: time.Millisecond}}
	failing := &counter{outcome: always(errTransient)}
	healthy := &counter{}
	a, other := b.Middleware()(failing.handle), b.Middleware()(healthy.handle)
	_, _ = a(newMsg(context.Background()))
	if _, err := a(newMsg(context.Background())); !errors.Is(err, middleware.ErrCircuitOpen) {
		t.Fatalf("err = %v, want the first circuit open", err)
	}
	if _, err := other(newMsg(context.Background())); err != nil || healthy.calls.Load() != 1 {
		t.Errorf("another handler's circuit was opened too: err %v, calls %d", err, healthy.calls.Load())
	}
}

func TestBreakerValidate(t *testing.T) {
	if err := (middleware.BreakerPolicy{}).Validate(); err != nil {
		t.Errorf("zero breaker: %v", err)
	}
	err := middleware.BreakerPolicy{OpenFor: -1, MaxPause: -1}.Validate()
	for _, want := range []string{"OpenFor is negative", "MaxPause is negative"} {
		if err == nil || !containsStr(err.Error(), want) {
			t.Errorf("Validate error lacks %q: %v", want, err)
		}
	}
}
