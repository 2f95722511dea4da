package engine_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/middleware"
)

var Job = engine.NewEvent[EchoIn]("jobs.queued")

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func deadLetters(t *testing.T, s deadletter.Store) []deadletter.Record {
	t.Helper()
	recs, _, err := s.List(context.Background(), deadletter.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestPermanentErrorIsDeadLetteredAfterOneAttempt(t *testing.T) {
	var calls atomic.Int32
	svc := engine.NewService("jobs", "1")
	engine.Subscribe(svc, Job, func(ctx context.Context, in EchoIn) error {
		calls.Add(1)
		return engine.NewError(422, "cannot do %q", in.Text)
	})
	store := deadletter.NewMemory()
	e, _ := start(t, inproc.New(), engine.Config{Reliability: engine.Reliability{DeadLetters: store}}, svc)
	ctx := engine.WithMeta(engine.WithEngine(t.Context(), e), engine.Meta{CorrelationID: "c-42", TenantID: "acme"})
	if err := Job.Emit(ctx, EchoIn{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a dead letter", func() bool { return len(deadLetters(t, store)) == 1 })
	time.Sleep(100 * time.Millisecond)
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want exactly 1", n)
	}
	r := deadLetters(t, store)[0]
	if r.ErrorKind != deadletter.KindPermanent || r.Attempts != 1 || r.Service != "jobs.v1" || r.Handler != "jobs.queued" ||
		r.Topic != "event.jobs.queued" || r.Group != "jobs.v1" || string(r.Payload) != `{"text":"x","count":0}` ||
		r.Metadata["correlation_id"] != "c-42" || r.Metadata["tenant_id"] != "acme" || r.LastFailedAt.IsZero() ||
		r.Error != `422 Unprocessable Entity: cannot do "x"` {
		t.Errorf("dead letter %+v", r)
	}
}

func TestTransientFailuresAreRetriedThenDeadLettered(t *testing.T) {
	var calls atomic.Int32
	svc := engine.NewService("jobs", "1")
	engine.Subscribe(svc, Job, func(ctx context.Context, in EchoIn) error {
		calls.Add(1)
		return errors.New("database down")
	})
	store := deadletter.NewMemory()
	rel := engine.Reliability{
		DeadLetters:   store,
		Retry:         middleware.Retry{MaxAttempts: 2, Backoff: middleware.Backoff{InitialInterval: time.Millisecond}},
		MaxDeliveries: 3,
		Redelivery:    middleware.Backoff{InitialInterval: 5 * time.Millisecond, MaxInterval: 20 * time.Millisecond},
		Breaker:       middleware.BreakerPolicy{Disabled: true},
	}
	e, _ := start(t, inproc.New(), engine.Config{Reliability: rel}, svc)
	if err := Job.Emit(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a dead letter", func() bool { return len(deadLetters(t, store)) == 1 })
	r := deadLetters(t, store)[0]
	if calls.Load() != 6 || r.Attempts != 6 || r.ErrorKind != deadletter.KindExhausted || r.Error != "database down" || r.FirstFailedAt.After(r.LastFailedAt) {
		t.Errorf("%d calls; record %+v; want 2 attempts × 3 deliveries", calls.Load(), r)
	}
}

func TestReplayAfterTheFix(t *testing.T) {
	var fixed atomic.Bool
	var done atomic.Int32
	svc := engine.NewService("jobs", "1")
	engine.Subscribe(svc, Job, func(ctx context.Context, in EchoIn) error {
		if !fixed.Load() {
			return middleware.Permanent(errors.New("bug #12"))
		}
		done.Add(1)
		return nil
	})
	other := engine.NewService("audit", "1") // a second group: must not see the replay
	var audited atomic.Int32
	engine.Subscribe(other, Job, func(ctx context.Context, in EchoIn) error { audited.Add(1); return nil })
	store := deadletter.NewMemory()
	bus := inproc.New()
	e, _ := start(t, bus, engine.Config{Reliability: engine.Reliability{DeadLetters: store}}, svc, other)
	if err := Job.Emit(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a dead letter", func() bool { return len(deadLetters(t, store)) == 1 })
	fixed.Store(true)
	if err := deadletter.Replay(t.Context(), store, bus.Publisher(), deadLetters(t, store)[0].ID); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the replayed job", func() bool { return done.Load() == 1 })
	time.Sleep(100 * time.Millisecond)
	if done.Load() != 1 || audited.Load() != 1 || len(deadLetters(t, store)) != 0 {
		t.Errorf("after replay: processed %d (want 1), other group saw %d (want 1: the original only), %d records left", done.Load(), audited.Load(), len(deadLetters(t, store)))
	}
}

func TestConsumerBreakerPausesInsteadOfDeadLettering(t *testing.T) {
	var healthy atomic.Bool
	var calls, done atomic.Int32
	svc := engine.NewService("jobs", "1")
	engine.Subscribe(svc, Job, func(ctx context.Context, in EchoIn) error {
		calls.Add(1)
		if !healthy.Load() {
			return errors.New("downstream unavailable")
		}
		done.Add(1)
		return nil
	}, engine.Concurrency(1))
	states := make(chan engine.BreakerState, 10)
	store := deadletter.NewMemory()
	rel := engine.Reliability{
		DeadLetters:   store,
		Retry:         middleware.Retry{MaxAttempts: 1},
		MaxDeliveries: 3,
		Redelivery:    middleware.Backoff{InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond},
		Breaker: middleware.BreakerPolicy{ConsecutiveFailures: 3, OpenFor: 300 * time.Millisecond, MaxPause: 5 * time.Second,
			OnStateChange: func(name string, _, to engine.BreakerState) {
				if name != "jobs.v1 event.jobs.queued" {
					t.Errorf("breaker named %q, want the subscription's group and topic", name)
				}
				states <- to
			}},
	}
	e, _ := start(t, inproc.New(), engine.Config{Reliability: rel, Logger: slog.New(slog.DiscardHandler)}, svc)
	ctx := engine.WithEngine(t.Context(), e)
	const n = 10
	for i := range n {
		if err := Job.Emit(ctx, EchoIn{Count: i}); err != nil {
			t.Fatal(err)
		}
	}
	if s := <-states; s != engine.BreakerOpen {
		t.Fatalf("first transition to %s, want open", s)
	}
	opened := calls.Load()
	time.Sleep(150 * time.Millisecond) // well inside OpenFor: consumption is paused
	if c := calls.Load(); c != opened {
		t.Errorf("handler called %d times while the circuit was open", c-opened)
	}
	healthy.Store(true) // the downstream recovers; the probe will succeed
	if s := <-states; s != engine.BreakerHalfOpen {
		t.Errorf("second transition to %s, want half-open", s)
	}
	if s := <-states; s != engine.BreakerClosed {
		t.Errorf("third transition to %s, want closed", s)
	}
	waitUntil(t, "every job done", func() bool { return done.Load() == n })
	if recs := deadLetters(t, store); len(recs) != 0 {
		t.Errorf("%d messages dead-lettered during the outage; want none", len(recs))
	}
}

func TestCallerSideBreakerAndRetry(t *testing.T) {
	var calls atomic.Int32
	var mode atomic.Int32 // 0: hang past the caller's timeout, 1: answer
	svc := engine.NewService("flaky", "1")
	flaky := engine.NewCommand[EchoIn, EchoOut]("flaky", "1", "get").Idempotent()
	plain := engine.NewCommand[EchoIn, EchoOut]("flaky", "1", "plain")
	handle := func(ctx context.Context, in EchoIn) (EchoOut, error) {
		if calls.Add(1); mode.Load() == 0 {
			<-ctx.Done()
			return EchoOut{}, ctx.Err()
		}
		return EchoOut{Text: "ok"}, nil
	}
	engine.Handle(svc, flaky, handle)
	engine.Handle(svc, plain, handle)
	rel := engine.Reliability{
		Retry:       middleware.Retry{MaxAttempts: 3, Backoff: middleware.Backoff{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond}},
		CallBreaker: middleware.BreakerPolicy{ConsecutiveFailures: 3, OpenFor: 200 * time.Millisecond},
	}
	e, _ := start(t, inproc.New(), engine.Config{Reliability: rel, CallTimeout: 50 * time.Millisecond}, svc)
	ctx := engine.WithEngine(t.Context(), e)

	// An idempotent command is retried by the caller: 3 attempts, then the
	// timeout; those 3 failures open its circuit.
	if _, err := flaky.Invoke(ctx, EchoIn{}); !errors.Is(err, engine.ErrTimeout) {
		t.Fatalf("idempotent call: %v", err)
	}
	waitUntil(t, "3 handler calls", func() bool { return calls.Load() == 3 })
	if _, err := flaky.Invoke(ctx, EchoIn{}); !errors.Is(err, engine.ErrCircuitOpen) {
		t.Errorf("after 3 failures: %v, want ErrCircuitOpen", err)
	}
	time.Sleep(20 * time.Millisecond)
	if calls.Load() != 3 {
		t.Errorf("an open circuit still sent the call (%d handler calls)", calls.Load())
	}
	// The other command has its own circuit, and is not retried.
	calls.Store(0)
	if _, err := plain.Invoke(ctx, EchoIn{}); !errors.Is(err, engine.ErrTimeout) {
		t.Errorf("plain call: %v", err)
	}
	time.Sleep(60 * time.Millisecond)
	if calls.Load() != 1 {
		t.Errorf("a command that is not Idempotent ran %d times", calls.Load())
	}
	// After OpenFor the probe goes through and closes the circuit.
	mode.Store(1)
	time.Sleep(250 * time.Millisecond)
	if out, err := flaky.Invoke(ctx, EchoIn{}); err != nil || out.Text != "ok" {
		t.Errorf("after recovery: %v %v", out, err)
	}
	// An answer from the handler, even a 503, is never retried by the caller.
	mode.Store(2)
	calls.Store(0)
	refuse := engine.NewCommand[EchoIn, EchoOut]("refuse", "1", "get").Idempotent()
	rs := engine.NewService("refuse", "1")
	engine.Handle(rs, refuse, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		calls.Add(1)
		return EchoOut{}, engine.ErrUnavailable
	})
	e2, _ := start(t, inproc.New(), engine.Config{Reliability: rel}, rs)
	if _, err := refuse.Invoke(engine.WithEngine(t.Context(), e2), EchoIn{}); !errors.Is(err, engine.ErrUnavailable) {
		t.Errorf("handled 503: %v", err)
	}
	if calls.Load() != 1 {
		t.Errorf("a handled error was retried: %d calls", calls.Load())
	}
}

// Every field of Reliability.CallBreaker does what it says: the engine
// names each caller-side breaker and logs for it, but its IsFailure and
// OnStateChange are the user's. (The engine used to replace IsFailure with
// its own, so a policy counting 4xx answers never opened.)
func TestCallBreakerHonoursThePolicy(t *testing.T) {
	var calls atomic.Int32
	svc := engine.NewService("strict", "1")
	cmd := engine.NewCommand[EchoIn, EchoOut]("strict", "1", "check")
	engine.Handle(svc, cmd, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		calls.Add(1)
		return EchoOut{}, engine.NewError(422, "refused")
	})
	var names []string
	var mu sync.Mutex
	rel := engine.Reliability{CallBreaker: middleware.BreakerPolicy{
		ConsecutiveFailures: 2, OpenFor: time.Hour,
		IsFailure: func(err error) bool { return err != nil }, // a 4xx counts too
		OnStateChange: func(name string, _, _ engine.BreakerState) {
			mu.Lock()
			names = append(names, name)
			mu.Unlock()
		},
	}}
	e, _ := start(t, inproc.New(), engine.Config{Reliability: rel, Logger: slog.New(slog.DiscardHandler)}, svc)
	ctx := engine.WithEngine(t.Context(), e)
	for range 2 {
		if _, err := cmd.Invoke(ctx, EchoIn{}); err == nil {
			t.Fatal("the handler's 422 did not reach the caller")
		}
	}
	if _, err := cmd.Invoke(ctx, EchoIn{}); !errors.Is(err, engine.ErrCircuitOpen) {
		t.Errorf("third call after two failures IsFailure counts: %v, want ErrCircuitOpen", err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2 (the open circuit fails the third call at once)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"call " + cmd.String()}; !slices.Equal(names, want) {
		t.Errorf("OnStateChange saw %v, want %v", names, want)
	}
}

// A setting Reliability cannot honour is refused, not ignored.
func TestReliabilityValidateRefusesUnusedFields(t *testing.T) {
	err := engine.Config{Reliability: engine.Reliability{
		Retry:       middleware.Retry{MaxAttempts: -1, Backoff: middleware.Backoff{Multiplier: 0.5}},
		Redelivery:  middleware.Backoff{MaxElapsedTime: time.Minute, InitialInterval: -1},
		Breaker:     middleware.BreakerPolicy{OpenFor: -1},
		CallBreaker: middleware.BreakerPolicy{MaxPause: time.Second},
	}}.Validate()
	for _, want := range []string{"Retry: retry policy: MaxAttempts", "multiplier 0.5", "Redelivery: InitialInterval is negative",
		"Redelivery.MaxElapsedTime is not used", "Breaker: breaker: OpenFor", "CallBreaker.MaxPause is not used"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate does not report %q: %v", want, err)
		}
	}
	if _, err := engine.New(engine.Config{SharedBridge: inproc.New(), Reliability: engine.Reliability{
		CallBreaker: middleware.BreakerPolicy{MaxPause: time.Second}}}); err == nil {
		t.Error("New accepted a CallBreaker.MaxPause it would ignore")
	}
}

// Concurrency below 1 is a registration error: it used to mean the
// command default, 16 at once, even for a subscription.
func TestConcurrencyBelowOneIsRefused(t *testing.T) {
	svc := engine.NewService("jobs", "1")
	engine.Subscribe(svc, Job, func(ctx context.Context, in EchoIn) error { return nil }, engine.Concurrency(0))
	e, err := engine.New(engine.Config{SharedBridge: inproc.New()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Register(svc); err == nil || !strings.Contains(err.Error(), "Concurrency(0): want at least 1") {
		t.Errorf("Register: %v, want Concurrency(0) refused", err)
	}
}

// A fire-and-forget command sent by a handler whose caller has a short
// deadline does not inherit that deadline: it is processed even when its
// redelivery comes long after the caller stopped waiting.
func TestSendDoesNotInheritTheCallersDeadline(t *testing.T) {
	var tries, done atomic.Int32
	work := engine.NewCommand[EchoIn, EchoOut]("async", "1", "work")
	front := engine.NewCommand[EchoIn, EchoOut]("async", "1", "front")
	svc := engine.NewService("async", "1")
	engine.Handle(svc, front, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		return EchoOut{}, work.Send(ctx, in)
	})
	engine.Handle(svc, work, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		if _, ok := ctx.Deadline(); ok {
			t.Error("a fire-and-forget command's handler got a deadline")
		}
		if tries.Add(1) == 1 {
			return EchoOut{}, errors.New("first try fails")
		}
		done.Add(1)
		return EchoOut{}, nil
	})
	rel := engine.Reliability{Retry: middleware.Retry{MaxAttempts: 1},
		Redelivery: middleware.Backoff{InitialInterval: 300 * time.Millisecond, RandomizationFactor: -1}}
	e, _ := start(t, inproc.New(), engine.Config{Reliability: rel}, svc)
	if _, err := front.Invoke(engine.WithEngine(t.Context(), e), EchoIn{}, engine.CallTimeout(100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the redelivered command to be handled", func() bool { return done.Load() == 1 })
}

// An Idempotent call that runs out of its caller's context is an ErrTimeout,
// like any other call.
func TestIdempotentCallDeadlineIsATimeout(t *testing.T) {
	svc := engine.NewService("sleepy", "1")
	cmd := engine.NewCommand[EchoIn, EchoOut]("sleepy", "1", "get").Idempotent()
	engine.Handle(svc, cmd, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		<-ctx.Done()
		return EchoOut{}, ctx.Err()
	})
	rel := engine.Reliability{Retry: middleware.Retry{MaxAttempts: 10, Backoff: middleware.Backoff{InitialInterval: 10 * time.Millisecond}}, CallBreaker: middleware.BreakerPolicy{Disabled: true}}
	e, _ := start(t, inproc.New(), engine.Config{Reliability: rel}, svc)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), e), 250*time.Millisecond)
	defer cancel()
	if _, err := cmd.Invoke(ctx, EchoIn{}, engine.CallTimeout(100*time.Millisecond)); !errors.Is(err, engine.ErrTimeout) {
		t.Errorf("got %v, want ErrTimeout", err)
	}
}

// TestLargeResultOfFireAndForgetCommand: the result of a command nobody
// awaits is sent nowhere, so its size does not matter: the handler runs
// once and the message is acked. When the result is also a success event,
// one too large is a permanent failure: dead-lettered once, not re-run.
func TestLargeResultOfFireAndForgetCommand(t *testing.T) {
	for _, c := range []struct {
		name        string
		cmd         *engine.Command[EchoIn, EchoOut]
		deadLetters int
	}{
		{"no success event", engine.NewCommand[EchoIn, EchoOut]("big", "1", "report"), 0},
		{"success event", engine.NewCommand[EchoIn, EchoOut]("big", "1", "announce").EmitsOnSuccess(Echoed), 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			var runs atomic.Int32
			s := engine.NewService("big", "1")
			engine.Handle(s, c.cmd, func(ctx context.Context, in EchoIn) (EchoOut, error) {
				runs.Add(1)
				return EchoOut{Text: strings.Repeat("r", 2000)}, nil
			})
			store := deadletter.NewMemory()
			rel := engine.Reliability{
				DeadLetters:   store,
				Retry:         middleware.Retry{MaxAttempts: 2, Backoff: middleware.Backoff{InitialInterval: time.Millisecond}},
				MaxDeliveries: 3,
				Redelivery:    middleware.Backoff{InitialInterval: 5 * time.Millisecond, MaxInterval: 20 * time.Millisecond},
			}
			e, _ := start(t, inproc.New(), engine.Config{MaxPayloadBytes: 1024, Reliability: rel}, s)
			if err := c.cmd.Send(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"}); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the handler to run", func() bool { return runs.Load() > 0 })
			time.Sleep(300 * time.Millisecond) // room for retries and redeliveries
			recs := deadLetters(t, store)
			if n := runs.Load(); n != 1 || len(recs) != c.deadLetters {
				t.Errorf("the handler ran %d times, %d dead letters; want 1 and %d", n, len(recs), c.deadLetters)
			}
			for _, r := range recs {
				if r.ErrorKind != deadletter.KindPermanent {
					t.Errorf("dead letter %s: %s", r.ErrorKind, r.Error)
				}
			}
		})
	}
}
