package middleware_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/middleware"
)

// attemptView is what one attempt saw of its context.
type attemptView struct {
	errAtStart  error
	deadline    time.Time
	hasDeadline bool
	start       time.Time
}

// Watermill #467: a Timeout outside Retry leaves every later attempt a
// context that is already cancelled. Inside Retry, as the engine composes
// them, every attempt gets its own, live context with a fresh deadline.
func TestAttemptTimeoutInsideRetryGivesEveryAttemptAFreshDeadline(t *testing.T) {
	const d = 80 * time.Millisecond
	var mu sync.Mutex
	var views []attemptView
	h := func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		dl, ok := ctx.Deadline()
		mu.Lock()
		views = append(views, attemptView{errAtStart: ctx.Err(), deadline: dl, hasDeadline: ok, start: time.Now()})
		n := len(views)
		mu.Unlock()
		if n == 1 {
			<-ctx.Done() // too slow: outlives its attempt
			return nil, ctx.Err()
		}
		return nil, nil
	}
	chain := fast(3).Middleware()(middleware.AttemptTimeout(d)(h))
	orig := context.Background()
	msg := newMsg(orig)
	var err error
	within(t, 10*time.Second, func() { _, err = chain(msg) })
	if err != nil {
		t.Fatalf("err = %v, want the second attempt's success", err)
	}
	if len(views) != 2 {
		t.Fatalf("%d attempts, want 2", len(views))
	}
	first, second := views[0], views[1]
	if !first.hasDeadline || !second.hasDeadline {
		t.Fatalf("attempts without a deadline: %+v", views)
	}
	if second.errAtStart != nil {
		t.Errorf("attempt 2 started with a cancelled context (%v): Watermill #467", second.errAtStart)
	}
	// Attempt 2's timer starts after attempt 1's expired: a fresh deadline
	// is at least d later (a shared or inherited one would be the same).
	if gap := second.deadline.Sub(first.deadline); gap < d {
		t.Errorf("attempt 2 deadline is %s after attempt 1's, want at least the full %s: not fresh", gap, d)
	}
	if !second.deadline.After(second.start) {
		t.Errorf("attempt 2 started past its deadline")
	}
	if msg.Context() != orig {
		t.Error("message context not restored after the chain")
	}
	if _, ok := msg.Context().Deadline(); ok {
		t.Error("message context keeps an attempt's deadline")
	}
}

// At the attempt's deadline its context is cancelled, and Timeout waits for
// the handler to return: until then it owns the message. (It used to return
// at once, leaving the handler running beside the next attempt or the
// message's redelivery.)
func TestAttemptTimeoutCancelsThenWaitsForTheAttempt(t *testing.T) {
	t.Parallel()
	var returned atomic.Bool
	h := func(msg *message.Message) ([]*message.Message, error) {
		<-msg.Context().Done()
		time.Sleep(100 * time.Millisecond) // cleaning up after the cancellation
		returned.Store(true)
		return nil, msg.Context().Err()
	}
	orig := context.Background()
	msg := newMsg(orig)
	var err error
	within(t, 10*time.Second, func() { _, err = middleware.AttemptTimeout(20 * time.Millisecond)(h)(msg) })
	if !returned.Load() {
		t.Error("Timeout returned while the handler was still running")
	}
	if !errors.Is(err, middleware.ErrAttemptTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want ErrAttemptTimeout (a DeadlineExceeded)", err)
	}
	if middleware.IsPermanent(err) {
		t.Error("ErrAttemptTimeout must be transient")
	}
	if msg.Context() != orig {
		t.Error("message context not restored after the attempt")
	}
}

// A handler that ignores its context and succeeds late has done its work:
// its result stands (failing it would make Retry repeat the work).
func TestAttemptTimeoutKeepsTheResultOfALateHandler(t *testing.T) {
	t.Parallel()
	out := []*message.Message{newMsg(context.Background())}
	got, err := middleware.AttemptTimeout(10 * time.Millisecond)(func(*message.Message) ([]*message.Message, error) {
		time.Sleep(50 * time.Millisecond) // ignores its context
		return out, nil
	})(newMsg(context.Background()))
	if err != nil || len(got) != 1 || got[0] != out[0] {
		t.Errorf("got %v, %v; want the late handler's messages", got, err)
	}
}

func TestAttemptTimeoutReturnsMessageContextErrorWhenItEndsFirst(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	h := func(msg *message.Message) ([]*message.Message, error) {
		cancel()
		<-msg.Context().Done()
		return nil, msg.Context().Err()
	}
	_, err := middleware.AttemptTimeout(time.Hour)(h)(newMsg(ctx))
	if err == nil {
		t.Fatal("err = nil, want context.Canceled")
	}
	if !errors.Is(err, context.Canceled) || errors.Is(err, middleware.ErrAttemptTimeout) {
		t.Errorf("err = %v, want context.Canceled, not an attempt timeout", err)
	}
}

func TestAttemptTimeoutPassesResultsThrough(t *testing.T) {
	t.Parallel()
	out := []*message.Message{newMsg(context.Background())}
	got, err := middleware.AttemptTimeout(time.Second)(func(*message.Message) ([]*message.Message, error) {
		return out, errTransient
	})(newMsg(context.Background()))
	if len(got) != 1 || got[0] != out[0] || !errors.Is(err, errTransient) {
		t.Errorf("got %v, %v; want the handler's messages and error", got, err)
	}
}

func TestAttemptTimeoutTurnsPanicIntoPanicError(t *testing.T) {
	t.Parallel()
	_, err := middleware.AttemptTimeout(time.Second)(func(*message.Message) ([]*message.Message, error) {
		panic("in the attempt goroutine")
	})(newMsg(context.Background()))
	var p *middleware.PanicError
	if !errors.As(err, &p) || p.Value != "in the attempt goroutine" {
		t.Errorf("err = %v, want a *PanicError (a panic on the attempt goroutine must not crash the process)", err)
	}
}

func TestAttemptTimeoutZeroOrNegativePassesThrough(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{0, -time.Second} {
		orig := context.WithValue(context.Background(), ctxKey{}, "orig")
		var seen context.Context
		h := func(msg *message.Message) ([]*message.Message, error) {
			seen = msg.Context()
			return nil, errTransient
		}
		_, err := middleware.AttemptTimeout(d)(h)(newMsg(orig))
		if !errors.Is(err, errTransient) {
			t.Errorf("Timeout(%s): err = %v", d, err)
		}
		if seen != orig {
			t.Errorf("Timeout(%s): the handler got a derived context, want the message's own", d)
		}
		if _, ok := seen.Deadline(); ok {
			t.Errorf("Timeout(%s) set a deadline", d)
		}
	}
}

// Attempts never overlap: the next one starts after the previous one has
// returned, even when that one ignored its context past its deadline.
func TestAttemptTimeoutAttemptsNeverOverlap(t *testing.T) {
	t.Parallel()
	var running, overlapped atomic.Int32
	var calls atomic.Int32
	h := func(msg *message.Message) ([]*message.Message, error) {
		if running.Add(1) > 1 {
			overlapped.Add(1)
		}
		defer running.Add(-1)
		if calls.Add(1) == 1 {
			time.Sleep(100 * time.Millisecond) // ignores its context
			return nil, msg.Context().Err()
		}
		return nil, nil
	}
	chain := fast(2).Middleware()(middleware.AttemptTimeout(20 * time.Millisecond)(h))
	if _, err := chain(newMsg(context.Background())); err != nil {
		t.Fatalf("err = %v, want attempt 2's success", err)
	}
	if calls.Load() != 2 || overlapped.Load() != 0 {
		t.Errorf("%d attempts, %d overlapping another; want 2 and 0", calls.Load(), overlapped.Load())
	}
}
