package middleware_test

import (
	"context"
	"errors"
	"sync"
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
func TestTimeoutInsideRetryGivesEveryAttemptAFreshDeadline(t *testing.T) {
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
	chain := fast(3).Middleware()(middleware.Timeout(d)(h))
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

func TestTimeoutAbandonsHandlerThatIgnoresItsContext(t *testing.T) {
	release := make(chan struct{})
	returned := make(chan struct{})
	t.Cleanup(func() { close(release); <-returned })
	h := func(*message.Message) ([]*message.Message, error) {
		defer close(returned)
		<-release // ignores its context
		return nil, nil
	}
	orig := context.Background()
	msg := newMsg(orig)
	var err error
	within(t, 10*time.Second, func() { _, err = middleware.Timeout(20 * time.Millisecond)(h)(msg) })
	if !errors.Is(err, middleware.ErrAttemptTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want ErrAttemptTimeout (a DeadlineExceeded)", err)
	}
	if middleware.IsPermanent(err) {
		t.Error("ErrAttemptTimeout must be transient")
	}
	if msg.Context() != orig {
		t.Error("message context not restored after abandoning the handler")
	}
}

func TestTimeoutReturnsMessageContextErrorWhenItEndsFirst(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	h := func(msg *message.Message) ([]*message.Message, error) {
		cancel()
		<-msg.Context().Done()
		return nil, nil
	}
	_, err := middleware.Timeout(time.Hour)(h)(newMsg(ctx))
	if err == nil {
		t.Fatal("err = nil, want context.Canceled")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestTimeoutPassesResultsThrough(t *testing.T) {
	out := []*message.Message{newMsg(context.Background())}
	got, err := middleware.Timeout(time.Second)(func(*message.Message) ([]*message.Message, error) {
		return out, errTransient
	})(newMsg(context.Background()))
	if len(got) != 1 || got[0] != out[0] || !errors.Is(err, errTransient) {
		t.Errorf("got %v, %v; want the handler's messages and error", got, err)
	}
}

func TestTimeoutTurnsPanicIntoPanicError(t *testing.T) {
	_, err := middleware.Timeout(time.Second)(func(*message.Message) ([]*message.Message, error) {
		panic("in the attempt goroutine")
	})(newMsg(context.Background()))
	var p *middleware.PanicError
	if !errors.As(err, &p) || p.Value != "in the attempt goroutine" {
		t.Errorf("err = %v, want a *PanicError (a panic on the attempt goroutine must not crash the process)", err)
	}
}

func TestTimeoutZeroOrNegativePassesThrough(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second} {
		orig := context.WithValue(context.Background(), ctxKey{}, "orig")
		var seen context.Context
		h := func(msg *message.Message) ([]*message.Message, error) {
			seen = msg.Context()
			return nil, errTransient
		}
		_, err := middleware.Timeout(d)(h)(newMsg(orig))
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

// An abandoned attempt runs on its own copy of the message: the next
// attempt's context and metadata never reach it (and the race detector
// sees no shared writes).
func TestTimeoutAbandonedAttemptKeepsItsOwnMessage(t *testing.T) {
	secondStarted := make(chan struct{})
	type view struct {
		ctx     context.Context
		attempt string
	}
	abandoned := make(chan [2]view, 1)
	var calls sync.Mutex
	n := 0
	h := func(msg *message.Message) ([]*message.Message, error) {
		calls.Lock()
		n++
		me := n
		calls.Unlock()
		before := view{msg.Context(), msg.Metadata.Get(middleware.AttemptKey)}
		if me == 1 {
			<-secondStarted // ignores its context; still running during attempt 2
			abandoned <- [2]view{before, {msg.Context(), msg.Metadata.Get(middleware.AttemptKey)}}
			return nil, nil
		}
		close(secondStarted)
		return nil, nil
	}
	chain := fast(2).Middleware()(middleware.Timeout(30 * time.Millisecond)(h))
	if _, err := chain(newMsg(context.Background())); err != nil {
		t.Fatalf("err = %v, want attempt 2's success", err)
	}
	v := <-abandoned
	if v[1].ctx != v[0].ctx {
		t.Error("the abandoned attempt's msg.Context() changed under it: it shares the message with the next attempt")
	}
	if v[1].attempt != v[0].attempt {
		t.Errorf("the abandoned attempt's AttemptKey changed from %q to %q under it", v[0].attempt, v[1].attempt)
	}
}
