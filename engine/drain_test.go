package engine_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/middleware"
)

// A deadline on a message nobody waits for (a foreign or forged header) is
// ignored: the handler gets a live context without a deadline and handles
// the message once. (It used to get an ended context, its chain was
// abandoned and the message redelivered forever, outside MaxDeliveries.)
func TestPastDeadlineOnUnawaitedMessageIsIgnored(t *testing.T) {
	var calls, handled atomic.Int32
	live := func(ctx context.Context) error {
		calls.Add(1)
		if _, ok := ctx.Deadline(); ok || ctx.Err() != nil {
			return errors.New("handler context has a deadline or has ended")
		}
		handled.Add(1)
		return nil
	}
	svc := engine.NewService("jobs", "1")
	engine.Subscribe(svc, Job, func(ctx context.Context, in EchoIn) error { return live(ctx) })
	cmd := engine.NewCommand[EchoIn, EchoOut]("jobs", "1", "later")
	engine.Handle(svc, cmd, func(ctx context.Context, in EchoIn) (EchoOut, error) { return EchoOut{}, live(ctx) })
	store := deadletter.NewMemory()
	rel := engine.Reliability{
		DeadLetters:   store,
		Retry:         middleware.Retry{MaxAttempts: 2, Backoff: middleware.Backoff{InitialInterval: time.Millisecond}},
		MaxDeliveries: 3,
		Redelivery:    middleware.Backoff{InitialInterval: 5 * time.Millisecond, MaxInterval: 20 * time.Millisecond},
		Breaker:       middleware.BreakerPolicy{Disabled: true},
	}
	bus := inproc.New()
	start(t, bus, engine.Config{Reliability: rel}, svc)

	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)
	for _, topic := range []string{"event.jobs.queued", cmd.String()} { // an event, a fire-and-forget command
		msg := message.NewMessage(watermill.NewUUID(), []byte(`{"text":"x"}`))
		msg.Metadata.Set(envelope.KeyDeadline, past)
		if err := bus.Publisher().Publish(topic, msg); err != nil {
			t.Fatalf("%s: %v", topic, err)
		}
	}
	waitUntil(t, "both messages handled, or dead-lettered", func() bool {
		return handled.Load() == 2 || len(deadLetters(t, store)) == 2
	})
	time.Sleep(100 * time.Millisecond) // a redelivery would show now
	if calls.Load() != 2 || handled.Load() != 2 {
		t.Errorf("handlers ran %d times, %d with a live context without deadline; want 2 and 2", calls.Load(), handled.Load())
	}
	for _, r := range deadLetters(t, store) {
		t.Errorf("dead-lettered %s after %d attempts: %s", r.Topic, r.Attempts, r.Error)
	}
}

// Past the drain deadline, Stop cancels the contexts of the handlers still
// running and waits for them to return: until then they own their message.
// (Stop used to give up on them, leaving them running after it returned.)
func TestStopWaitsForHandlersPastTheDrainDeadline(t *testing.T) {
	entered := make(chan struct{}, 1)
	var returned atomic.Bool
	svc := engine.NewService("slow", "1")
	engine.Subscribe(svc, Job, func(ctx context.Context, in EchoIn) error {
		entered <- struct{}{}
		<-ctx.Done()
		time.Sleep(200 * time.Millisecond) // cleaning up after the cancellation
		returned.Store(true)
		return ctx.Err()
	})
	e, _ := start(t, inproc.New(), engine.Config{Logger: slog.New(slog.DiscardHandler), DrainTimeout: 100 * time.Millisecond}, svc)
	if err := Job.Emit(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	<-entered
	_ = e.Stop(context.Background()) // reports the drain timeout
	if !returned.Load() {
		t.Error("Stop returned while a handler was still running")
	}
}

// Run gives Stop twice DrainTimeout, whatever ConnectTimeout says: a
// handler that returns within the second DrainTimeout after its context
// is cancelled is waited for; one that ignores its context makes Run
// return its Stop's deadline error at 2 × DrainTimeout. (Run used to wait
// DrainTimeout + ConnectTimeout.)
func TestRunWaitsForStopTwiceTheDrainTimeout(t *testing.T) {
	const drain = 200 * time.Millisecond
	for _, c := range []struct {
		name       string
		afterDrain time.Duration // how long the handler takes to return once cancelled; < 0: ignores its context
		wantGiveUp bool
	}{
		{"HandlerReturnsWithinTheSecondDrainTimeout", drain / 2, false},
		{"HandlerIgnoresItsContext", -1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			entered, release := make(chan struct{}, 1), make(chan struct{})
			var returned atomic.Bool
			svc := engine.NewService("slow", "1")
			engine.Subscribe(svc, Job, func(ctx context.Context, in EchoIn) error {
				entered <- struct{}{}
				if c.afterDrain < 0 {
					<-release
				} else {
					<-ctx.Done()
					time.Sleep(c.afterDrain)
				}
				returned.Store(true)
				return nil
			})
			e, err := engine.New(engine.Config{SharedBridge: inproc.New(), Logger: slog.New(slog.DiscardHandler),
				DrainTimeout: drain, ConnectTimeout: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Register(svc); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			ran := make(chan error, 1)
			go func() { ran <- e.Run(ctx) }()
			<-e.Ready()
			if err := Job.Emit(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"}); err != nil {
				t.Fatal(err)
			}
			<-entered
			cancel()
			began := time.Now()
			var runErr error
			select {
			case runErr = <-ran:
			case <-time.After(10 * time.Second):
				close(release)
				t.Fatal("Run did not return within 10 s")
			}
			took := time.Since(began)
			if gaveUp := errors.Is(runErr, context.DeadlineExceeded); gaveUp != c.wantGiveUp {
				t.Errorf("Run = %v after %s; want it to give up: %v", runErr, took, c.wantGiveUp)
			}
			if c.wantGiveUp {
				if took < 2*drain || took > 2*drain+time.Second {
					t.Errorf("Run gave up after %s, want 2 × DrainTimeout (%s)", took, 2*drain)
				}
				close(release)
				_ = e.Stop(t.Context()) // waits for the cleanup (and reports the drain timeout)
			} else if !returned.Load() {
				t.Error("Run returned while the handler was still running")
			}
		})
	}
}

// When Stop's own context ends before the drain does, the handlers still
// running are cancelled then, rather than at the drain deadline.
func TestStopContextEndingCancelsTheHandlers(t *testing.T) {
	entered, returned := make(chan struct{}, 1), make(chan struct{})
	svc := engine.NewService("slow", "1")
	engine.Subscribe(svc, Job, func(ctx context.Context, in EchoIn) error {
		entered <- struct{}{}
		<-ctx.Done()
		close(returned)
		return ctx.Err()
	})
	e, _ := start(t, inproc.New(), engine.Config{Logger: slog.New(slog.DiscardHandler), DrainTimeout: time.Hour}, svc)
	if err := Job.Emit(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	<-entered
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := e.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop: %v, want its context's error", err)
	}
	select {
	case <-returned:
	case <-time.After(10 * time.Second): // the drain deadline is an hour away
		t.Fatal("the handler was not cancelled when Stop's context ended")
	}
}

// A Stop whose context ended leaves its cleanup running (here, waiting for
// a handler that ignores its context); a later Stop waits for that cleanup,
// bounded by its own context, so that the caller can tell when nothing of
// the engine runs any more. (A later Stop used to return at once.)
func TestALaterStopWaitsForTheCleanup(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var returned atomic.Bool
	svc := engine.NewService("slow", "1")
	engine.Subscribe(svc, Job, func(ctx context.Context, in EchoIn) error {
		entered <- struct{}{}
		<-release // ignores its context
		returned.Store(true)
		return nil
	})
	e, _ := start(t, inproc.New(), engine.Config{Logger: slog.New(slog.DiscardHandler), DrainTimeout: time.Hour}, svc)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	if err := Job.Emit(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	<-entered
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	if err := e.Stop(short()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first Stop: %v, want its context's error", err)
	}
	if err := e.Stop(short()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a later Stop, whose context ends while the handler runs: %v, want its context's error", err)
	}
	later := make(chan error, 1)
	go func() { later <- e.Stop(context.Background()) }()
	select {
	case err := <-later:
		t.Fatalf("a later Stop returned (%v) while the cleanup still waits for a handler", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-later:
		if err != nil || !returned.Load() {
			t.Errorf("later Stop = %v, handler returned %v; want nil, after the handler", err, returned.Load())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a later Stop still waits after the handler returned")
	}
}

// Two Stops at once (a signal hook and Run, say): each is bounded by its
// own context only. Here the first waits without a deadline for a handler
// that ignores its context; the second, with 100 ms, must return then with
// its context's error, not wait for the first. (The second used to block
// inside the first's sync.Once until the handler returned.)
func TestConcurrentStopsEachBoundedByItsOwnContext(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	svc := engine.NewService("slow", "1")
	engine.Subscribe(svc, Job, func(ctx context.Context, in EchoIn) error {
		entered <- struct{}{}
		<-release // ignores its context
		return nil
	})
	e, _ := start(t, inproc.New(), engine.Config{Logger: slog.New(slog.DiscardHandler), DrainTimeout: time.Hour}, svc)
	if err := Job.Emit(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	<-entered
	first := make(chan error, 1)
	go func() { first <- e.Stop(context.Background()) }()
	time.Sleep(50 * time.Millisecond) // the first Stop is draining
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := e.Stop(ctx)
	if took := time.Since(began); took > 2*time.Second || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second Stop = %v after %s; want its context's error after about 100ms", err, took)
	}
	close(release)
	select {
	case err := <-first:
		if err != nil {
			t.Errorf("first Stop = %v, want nil once the handler returned", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first Stop still waits after the handler returned")
	}
}

// A handler that Stop cuts short (its drain ran out, or Stop's context
// ended) answers its caller that the service is shutting down, a 503 worth
// retrying elsewhere, not a 500 "internal error" logged as a failure: here
// it waits on a nested call to a service that is stopping too, as a
// handler on a stopping fleet does. (It used to answer 500 and log
// "handler failed" at error level.)
func TestHandlerCutShortByStopAnswersShuttingDown(t *testing.T) {
	bus := inproc.New()
	entered, proceed := make(chan struct{}, 1), make(chan struct{})
	front := engine.NewService("front", "1")
	engine.Handle(front, Nested, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		entered <- struct{}{}
		<-proceed                   // once the echo service has stopped taking calls
		return Echo.Invoke(ctx, in) // nobody serves echo: waits until cancelled
	})
	sink := &testenv.LogBuffer{}
	server, err := engine.New(engine.Config{SharedBridge: bus, DrainTimeout: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := server.Register(front); err != nil {
		t.Fatal(err)
	}
	if err := server.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	// An echo service that stops before the nested call is made: the call
	// waits for a handler that never comes.
	stoppingEcho, _ := start(t, bus, engine.Config{}, echoService())
	caller, _ := start(t, bus, engine.Config{})
	result := make(chan error, 1)
	go func() {
		_, err := Nested.Invoke(engine.WithEngine(t.Context(), caller), EchoIn{Text: "x"}, engine.CallTimeout(10*time.Second))
		result <- err
	}()
	<-entered
	if err := stoppingEcho.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	close(proceed)               // the nested call is made now: it can only wait (it used to race the echo service's Stop, and be answered)
	_ = server.Stop(t.Context()) // reports the drain timeout
	err = <-result
	if !errors.Is(err, engine.ErrShuttingDown) || errors.Is(err, engine.ErrInternal) {
		t.Errorf("caller of a handler cut short by Stop got %v, want ErrShuttingDown", err)
	}
	if strings.Contains(sink.String(), "level=ERROR") {
		t.Errorf("a handler cut short by Stop was logged as an error:\n%s", sink)
	}
}

// heldBridge is an in-process bus whose n-th Subscriber call waits for
// release: a broker slow to set up a subscription, while Start runs.
type heldBridge struct {
	bridge.Bridge
	n       int
	calls   atomic.Int32
	held    chan struct{}
	release chan struct{}
}

func (h *heldBridge) Subscriber(ctx context.Context, spec bridge.Spec) (message.Subscriber, error) {
	if int(h.calls.Add(1)) == h.n {
		close(h.held)
		<-h.release
	}
	return h.Bridge.Subscriber(ctx, spec)
}

// Stop while Start is still subscribing stops the engine: Start then fails
// and nothing it set up keeps running. (The engine used to end up running
// after both had returned, its handlers refusing every message, and its
// subscriptions and router goroutines were never closed.)
func TestStopDuringStart(t *testing.T) {
	for _, n := range []int{1, 2} { // held: the reply subscription, the first handler's
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			hb := &heldBridge{Bridge: inproc.New(), n: n, held: make(chan struct{}), release: make(chan struct{})}
			e, err := engine.New(engine.Config{SharedBridge: hb, Logger: slog.New(slog.DiscardHandler), DrainTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Register(echoService()); err != nil {
				t.Fatal(err)
			}
			started := make(chan error, 1)
			go func() { started <- e.Start(t.Context()) }()
			<-hb.held
			if err := e.Stop(t.Context()); err != nil {
				t.Errorf("Stop: %v", err)
			}
			close(hb.release)
			if err := <-started; err == nil {
				t.Error("Start succeeded on an engine stopped meanwhile")
			}
			if s := e.State(); s != engine.StateStopped {
				t.Errorf("state %s after Stop and Start returned", s)
			}
			if _, err := Echo.Invoke(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"}); err == nil {
				t.Error("a stopped engine answered a call")
			}
		})
	}
}
