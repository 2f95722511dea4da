package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/middleware"
)

// fast is a retry policy with millisecond waits, so tests run quickly.
func fast(attempts int) middleware.Retry {
	return middleware.Retry{MaxAttempts: attempts, Backoff: middleware.Backoff{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond, RandomizationFactor: -1}}
}

func TestRetryTransientUntilSuccess(t *testing.T) {
	t.Parallel()
	c := &counter{outcome: failing(2, errTransient)}
	h := fast(5).Middleware()(c.handle)
	msg := newMsg(context.Background())
	if _, err := h(msg); err != nil {
		t.Fatalf("err = %v, want success on the third attempt", err)
	}
	if got, want := c.seen(), []string{"1", "2", "3"}; !slices.Equal(got, want) {
		t.Errorf("AttemptKey per attempt = %v, want %v", got, want)
	}
	if got := msg.Metadata.Get(middleware.AttemptKey); got != "3" {
		t.Errorf("AttemptKey after Retry = %q, want the last attempt, 3", got)
	}
}

func TestRetryMaxAttempts(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 2, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := &counter{outcome: always(errTransient)}
			_, err := fast(n).Middleware()(c.handle)(newMsg(context.Background()))
			if !errors.Is(err, errTransient) {
				t.Errorf("err = %v, want the handler's last error", err)
			}
			if got := int(c.calls.Load()); got != n {
				t.Errorf("handler called %d times, want exactly %d", got, n)
			}
		})
	}
	t.Run("default 3", func(t *testing.T) {
		c := &counter{outcome: always(errTransient)}
		r := middleware.Retry{Backoff: middleware.Backoff{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond}}
		_, _ = r.Middleware()(c.handle)(newMsg(context.Background()))
		if got := int(c.calls.Load()); got != middleware.DefaultMaxAttempts {
			t.Errorf("handler called %d times, want the default %d", got, middleware.DefaultMaxAttempts)
		}
	})
}

func TestRetryPermanentErrorsTriedOnce(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		err       error
		permanent bool
	}{
		{"Permanent", middleware.Permanent(errTransient), true},
		{"wrapped Permanent", fmt.Errorf("saving: %w", middleware.Permanent(errTransient)), true},
		{"400", &envelope.Error{Code: http.StatusBadRequest}, true},
		{"404", &envelope.Error{Code: http.StatusNotFound}, true},
		{"422", fmt.Errorf("rule: %w", &envelope.Error{Code: http.StatusUnprocessableEntity}), true},
		{"408", &envelope.Error{Code: http.StatusRequestTimeout}, false},
		{"429", &envelope.Error{Code: http.StatusTooManyRequests}, false},
		{"500", &envelope.Error{Code: http.StatusInternalServerError}, false},
		{"503", &envelope.Error{Code: http.StatusServiceUnavailable}, false},
		{"plain", errTransient, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &counter{outcome: always(tc.err)}
			_, err := fast(3).Middleware()(c.handle)(newMsg(context.Background()))
			if !errors.Is(err, tc.err) {
				t.Errorf("err = %v, want %v", err, tc.err)
			}
			want := 3
			if tc.permanent {
				want = 1
			}
			if got := int(c.calls.Load()); got != want {
				t.Errorf("handler called %d times, want %d", got, want)
			}
		})
	}
}

func TestRetryMaxElapsedTime(t *testing.T) {
	t.Parallel()
	r := middleware.Retry{MaxAttempts: 1000, Backoff: middleware.Backoff{
		InitialInterval:     10 * time.Millisecond,
		MaxInterval:         10 * time.Millisecond,
		Multiplier:          1,
		RandomizationFactor: -1,
		MaxElapsedTime:      200 * time.Millisecond,
	}}
	c := &counter{outcome: always(errTransient)}
	within(t, 5*time.Second, func() {
		_, err := r.Middleware()(c.handle)(newMsg(context.Background()))
		if !errors.Is(err, errTransient) {
			t.Errorf("err = %v, want the handler's error", err)
		}
	})
	// 10 ms waits in a 200 ms budget: at most 21 attempts, far below 1000
	// (fewer on a slow machine).
	if got := c.calls.Load(); got < 1 || got > 21 {
		t.Errorf("handler called %d times; MaxElapsedTime 200ms with 10ms waits allows at most 21", got)
	}
}

func TestRetryStopsWhenMessageContextIsCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := middleware.Retry{MaxAttempts: 5, Backoff: middleware.Backoff{InitialInterval: time.Hour, MaxInterval: time.Hour, MaxElapsedTime: 10 * time.Hour}}
	c := &counter{outcome: func(int) error { cancel(); return errTransient }}
	within(t, 10*time.Second, func() { // the backoff is an hour: returning proves it stopped waiting
		_, err := r.Middleware()(c.handle)(newMsg(ctx))
		if !errors.Is(err, errTransient) {
			t.Errorf("err = %v, want the last handler error", err)
		}
	})
	if got := c.calls.Load(); got != 1 {
		t.Errorf("handler called %d times after its context was cancelled, want 1", got)
	}
}

func TestRetryGivesUpWhenDeadlineLeavesNoTimeForABackoff(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := middleware.Retry{MaxAttempts: 5, Backoff: middleware.Backoff{InitialInterval: time.Hour, MaxInterval: time.Hour, MaxElapsedTime: 10 * time.Hour}}
	c := &counter{outcome: always(errTransient)}
	within(t, 10*time.Second, func() { _, _ = r.Middleware()(c.handle)(newMsg(ctx)) })
	if got := c.calls.Load(); got != 1 {
		t.Errorf("handler called %d times, want 1", got)
	}
}

type ctxKey struct{}

func TestRetryRestoresMessageContext(t *testing.T) {
	t.Parallel()
	orig := context.WithValue(context.Background(), ctxKey{}, "orig")
	var sawOrig []bool
	h := func(msg *message.Message) ([]*message.Message, error) {
		sawOrig = append(sawOrig, msg.Context().Value(ctxKey{}) == "orig")
		// An inner middleware that replaces the context and forgets to restore it.
		msg.SetContext(context.WithValue(msg.Context(), ctxKey{}, "inner"))
		if len(sawOrig) < 3 {
			return nil, errTransient
		}
		return nil, nil
	}
	msg := newMsg(orig)
	if _, err := fast(3).Middleware()(h)(msg); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sawOrig, []bool{true, true, true}) {
		t.Errorf("attempts started from the original context: %v, want every one", sawOrig)
	}
	if msg.Context() != orig {
		t.Errorf("message context after Retry is not the original one (value %v)", msg.Context().Value(ctxKey{}))
	}
	for _, outcome := range []func(int) error{always(errTransient), always(middleware.Permanent(errTransient))} {
		msg := newMsg(orig)
		c := &counter{outcome: outcome}
		_, _ = fast(2).Middleware()(func(m *message.Message) ([]*message.Message, error) {
			m.SetContext(context.Background())
			return c.handle(m)
		})(msg)
		if msg.Context() != orig {
			t.Errorf("message context after a failed Retry is not the original one")
		}
	}
}

func TestRetryValidate(t *testing.T) {
	t.Parallel()
	if err := (middleware.Retry{}).Validate(); err != nil {
		t.Errorf("zero policy: %v", err)
	}
	if err := (middleware.Retry{Backoff: middleware.Backoff{RandomizationFactor: -1, Multiplier: 1}}).Validate(); err != nil {
		t.Errorf("RandomizationFactor -1 (none) and Multiplier 1 are valid: %v", err)
	}
	bad := middleware.Retry{MaxAttempts: -1, Backoff: middleware.Backoff{
		InitialInterval:     -time.Second,
		MaxInterval:         -2 * time.Second,
		Multiplier:          0.5,
		RandomizationFactor: 1.5,
	}}
	err := bad.Validate()
	if err == nil {
		t.Fatal("Validate accepted a policy where every field is bad")
	}
	for _, want := range []string{"MaxAttempts", "InitialInterval", "MaxInterval", "multiplier 0.5", "randomization factor 1.5"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error lacks %q: %v", want, err)
		}
	}
}

// A negative MaxElapsedTime means no time limit: only MaxAttempts stops it.
func TestRetryNegativeMaxElapsedTimeHasNoLimit(t *testing.T) {
	t.Parallel()
	if err := (middleware.Retry{Backoff: middleware.Backoff{MaxElapsedTime: -1}}).Validate(); err != nil {
		t.Fatalf("negative MaxElapsedTime rejected: %v", err)
	}
	b := middleware.Retry{MaxAttempts: 4, Backoff: middleware.Backoff{InitialInterval: time.Millisecond, MaxElapsedTime: -1}}.NewBackOff()
	n := 0
	for b.NextBackOff() >= 0 {
		n++
		if n > 10 {
			break
		}
	}
	if n != 3 {
		t.Errorf("%d retries allowed, want 3 (4 attempts)", n)
	}
}

func TestRetryWithDefaults(t *testing.T) {
	t.Parallel()
	got := middleware.Retry{Backoff: middleware.Backoff{RandomizationFactor: -1}}.WithDefaults()
	d := middleware.DefaultRetryBackoff
	want := middleware.Retry{MaxAttempts: middleware.DefaultMaxAttempts, Backoff: middleware.Backoff{
		InitialInterval: d.InitialInterval, MaxInterval: d.MaxInterval, Multiplier: d.Multiplier,
		RandomizationFactor: -1, MaxElapsedTime: d.MaxElapsedTime,
	}}
	if got != want {
		t.Errorf("WithDefaults = %+v, want %+v", got, want)
	}
	if again := got.WithDefaults(); again != got {
		t.Errorf("WithDefaults twice = %+v, want %+v: defaults must apply once", again, got)
	}
	if got := (middleware.Retry{}).WithDefaults().Backoff; got != d {
		t.Errorf("zero Backoff → %+v, want the default %+v", got, d)
	}
	if d != (middleware.Backoff{InitialInterval: 100 * time.Millisecond, MaxInterval: 2 * time.Second, Multiplier: 2,
		RandomizationFactor: 0.5, MaxElapsedTime: 10 * time.Second}) {
		t.Errorf("DefaultRetryBackoff = %+v, want 100 ms doubling to 2 s, ±50 %%, at most 10 s", d)
	}
}

// Every field of a Backoff is read by Retry: the waits between attempts
// follow InitialInterval, Multiplier and MaxInterval exactly without jitter,
// also once the defaults were applied (as the engine does).
func TestRetryBackoffWaits(t *testing.T) {
	b := middleware.Retry{MaxAttempts: 6, Backoff: middleware.Backoff{
		InitialInterval: 10 * time.Millisecond, Multiplier: 3, MaxInterval: 200 * time.Millisecond, RandomizationFactor: -1,
	}}.WithDefaults().NewBackOff()
	var got []time.Duration
	for w := b.NextBackOff(); w >= 0; w = b.NextBackOff() {
		got = append(got, w)
	}
	want := []time.Duration{10 * time.Millisecond, 30 * time.Millisecond, 90 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond}
	if !slices.Equal(got, want) {
		t.Errorf("waits %v, want %v", got, want)
	}
}
