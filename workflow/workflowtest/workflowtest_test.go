package workflowtest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
	"github.com/switchboard-go/switchboard/workflow/workflowtest"
)

// The participants' contracts.
type (
	OrderIn struct {
		Order  string `json:"order"`
		Amount int    `json:"amount"`
	}
	OrderOut struct {
		PaymentID string `json:"payment_id"`
		Carrier   string `json:"carrier"`
	}
	ChargeIn struct {
		Order  string `json:"order"`
		Amount int    `json:"amount"`
	}
	ChargeOut struct {
		PaymentID string `json:"payment_id"`
	}
	RefundIn struct {
		PaymentID string `json:"payment_id"`
		Reason    string `json:"reason"`
	}
	ItemIn struct {
		Order string `json:"order"`
	}
	Done    struct{}
	Shipped struct {
		Order   string `json:"order"`
		Carrier string `json:"carrier"`
	}
	Placed struct {
		Order string `json:"order"`
	}
)

// Validate refuses an order without an id.
func (in OrderIn) Validate() error {
	if in.Order == "" {
		return engine.Invalid("order", "required")
	}
	return nil
}

var (
	Charge   = engine.NewCommand[ChargeIn, ChargeOut]("payments", "1", "charge")
	Refund   = engine.NewCommand[RefundIn, Done]("payments", "1", "refund")
	Reserve  = engine.NewCommand[ItemIn, Done]("stock", "1", "reserve")
	Release  = engine.NewCommand[ItemIn, Done]("stock", "1", "release")
	Ship     = engine.NewCommand[ItemIn, Done]("shipping", "1", "ship")
	ShippedE = engine.NewEvent[Shipped]("shipping.shipped")
	PlacedE  = engine.NewEvent[Placed]("orders.placed")
)

// PlaceOrder charges, reserves, waits a quarter of an hour, ships and
// waits up to 48 h for the parcel to leave; the charge and the reservation
// are undone if anything fails.
var PlaceOrder = workflow.New("orders", "1", "place", func(wf workflow.Context, in OrderIn) (OrderOut, error) {
	pay, err := workflow.Invoke(wf, Charge, ChargeIn(in))
	if err != nil {
		return OrderOut{}, err
	}
	workflow.OnFailure(wf, Refund, RefundIn{PaymentID: pay.PaymentID, Reason: "order " + in.Order + " failed"})
	if _, err := workflow.Invoke(wf, Reserve, ItemIn{Order: in.Order}); err != nil {
		return OrderOut{}, err
	}
	workflow.OnFailure(wf, Release, ItemIn{Order: in.Order})
	if err := workflow.Sleep(wf, 15*time.Minute); err != nil {
		return OrderOut{}, err
	}
	if _, err := workflow.Invoke(wf, Ship, ItemIn{Order: in.Order}); err != nil {
		return OrderOut{}, err
	}
	shipped, err := workflow.Await(wf, ShippedE, in.Order, 48*time.Hour)
	if err != nil {
		return OrderOut{}, err
	}
	if err := workflow.Emit(wf, PlacedE, Placed{Order: in.Order}); err != nil {
		return OrderOut{}, err
	}
	return OrderOut{PaymentID: pay.PaymentID, Carrier: shipped.Carrier}, nil
}, workflow.Correlate(ShippedE, func(s Shipped) string { return s.Order }))

// participants stubs PlaceOrder's commands, recording each call; ship
// stands in for Ship.
type participants struct {
	mu    sync.Mutex
	calls []string
}

func (p *participants) called(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, name)
}

func (p *participants) log() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

func (p *participants) stub(env *workflowtest.Env, ship func(ctx context.Context, in ItemIn) (Done, error)) {
	workflowtest.Stub(env, Charge, func(_ context.Context, in ChargeIn) (ChargeOut, error) {
		p.called("charge")
		return ChargeOut{PaymentID: "p-" + in.Order}, nil
	})
	workflowtest.Stub(env, Refund, func(_ context.Context, in RefundIn) (Done, error) {
		p.called("refund " + in.PaymentID)
		return Done{}, nil
	})
	workflowtest.Stub(env, Reserve, func(context.Context, ItemIn) (Done, error) {
		p.called("reserve")
		return Done{}, nil
	})
	workflowtest.Stub(env, Release, func(context.Context, ItemIn) (Done, error) {
		p.called("release")
		return Done{}, nil
	})
	workflowtest.Stub(env, Ship, func(ctx context.Context, in ItemIn) (Done, error) {
		p.called("ship")
		return ship(ctx, in)
	})
}

// kinds returns the steps as "kind name".
func kinds(steps []workflow.StepRecord) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = s.Kind + " " + s.Name
	}
	return out
}

// TestRunCompletes: the stub of Ship makes the awaited event arrive; the
// run completes, its Sleep of 15 minutes moved the clock 15 minutes at
// once, the stubs ran once each although the run was executed again from
// its history after the Sleep, and the emitted event is recorded.
func TestRunCompletes(t *testing.T) {
	env := workflowtest.New(t)
	start := env.Now()
	var p participants
	p.stub(env, func(_ context.Context, in ItemIn) (Done, error) {
		workflowtest.Signal(env, ShippedE, Shipped{Order: in.Order, Carrier: "ups"})
		return Done{}, nil
	})
	began := time.Now()
	out, err := workflowtest.Run(env, PlaceOrder, OrderIn{Order: "o1", Amount: 30})
	if err != nil {
		t.Fatal(err)
	}
	if wall := time.Since(began); wall > 5*time.Second {
		t.Errorf("the run took %s of real time", wall)
	}
	if want := (OrderOut{PaymentID: "p-o1", Carrier: "ups"}); out != want {
		t.Errorf("output %+v, want %+v", out, want)
	}
	if got := env.Now().Sub(start); got != 15*time.Minute {
		t.Errorf("the clock moved %s, want 15m0s", got)
	}
	if got, want := p.log(), []string{"charge", "reserve", "ship"}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	want := []string{"invoke payments.v1.charge", "invoke stock.v1.reserve", "sleep sleep", "invoke shipping.v1.ship",
		"await shipping.shipped/o1", "emit orders.placed"}
	steps := env.Steps()
	if got := kinds(steps); !slices.Equal(got, want) {
		t.Fatalf("steps %q, want %q", got, want)
	}
	if due := steps[2].DueAt; due == nil || !due.Equal(start.Add(15*time.Minute)) {
		t.Errorf("the sleep is due at %v, want %v", due, start.Add(15*time.Minute))
	}
	if got := string(steps[0].Result); got != `{"payment_id":"p-o1"}` {
		t.Errorf("the charge's recorded result is %s", got)
	}
	if got := string(steps[4].Result); got != `{"order":"o1","carrier":"ups"}` {
		t.Errorf("the await's recorded result is %s", got)
	}
	if got := workflowtest.Emitted(env, PlacedE); !slices.Equal(got, []Placed{{Order: "o1"}}) {
		t.Errorf("emitted %+v", got)
	}
}

// TestSleep: a Sleep returns at once and moves the clock by its duration,
// whether the run is given back (over a second) or waits in the process.
func TestSleep(t *testing.T) {
	nap := workflow.New("naps", "1", "nap", func(wf workflow.Context, d time.Duration) (string, error) {
		if err := workflow.Sleep(wf, d); err != nil {
			return "", err
		}
		return "rested", nil
	})
	for _, d := range []time.Duration{15 * time.Minute, 300 * time.Millisecond} {
		t.Run(d.String(), func(t *testing.T) {
			env := workflowtest.New(t)
			start := env.Now()
			began := time.Now()
			out, err := workflowtest.Run(env, nap, d)
			if err != nil || out != "rested" {
				t.Fatalf("Run: %q, %v", out, err)
			}
			if wall := time.Since(began); wall > time.Second {
				t.Errorf("a sleep of %s took %s of real time", d, wall)
			}
			if got := env.Now().Sub(start); got != d {
				t.Errorf("the clock moved %s, want %s", got, d)
			}
		})
	}
}

// TestAwaitTimesOut: with no event, the Await of 48 h times out at once,
// the clock at its deadline, and the compensations run, last first.
func TestAwaitTimesOut(t *testing.T) {
	env := workflowtest.New(t)
	start := env.Now()
	var p participants
	p.stub(env, func(context.Context, ItemIn) (Done, error) { return Done{}, nil })
	began := time.Now()
	_, err := workflowtest.Run(env, PlaceOrder, OrderIn{Order: "o2", Amount: 30})
	if !errors.Is(err, workflow.ErrAwaitTimeout) {
		t.Fatalf("Run: %v, want ErrAwaitTimeout", err)
	}
	if wall := time.Since(began); wall > 5*time.Second {
		t.Errorf("the run took %s of real time", wall)
	}
	if got, want := env.Now().Sub(start), 15*time.Minute+48*time.Hour; got != want {
		t.Errorf("the clock moved %s, want %s", got, want)
	}
	if got, want := p.log(), []string{"charge", "reserve", "ship", "release", "refund p-o2"}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	want := []string{"invoke payments.v1.charge", "invoke stock.v1.reserve", "sleep sleep", "invoke shipping.v1.ship",
		"await shipping.shipped/o2", "compensate stock.v1.release", "compensate payments.v1.refund"}
	steps := env.Steps()
	if got := kinds(steps); !slices.Equal(got, want) {
		t.Fatalf("steps %q, want %q", got, want)
	}
	if s := steps[4]; !errors.Is(s.Error, workflow.ErrAwaitTimeout) || !s.FinishedAt.Equal(start.Add(15*time.Minute+48*time.Hour)) {
		t.Errorf("the await: error %v, finished at %s", s.Error, s.FinishedAt)
	}
}

// TestSignalBeforeRun: an event that came before the run reached its
// Await is not missed; one of another key is not taken.
func TestSignalBeforeRun(t *testing.T) {
	env := workflowtest.New(t)
	start := env.Now()
	var p participants
	p.stub(env, func(context.Context, ItemIn) (Done, error) { return Done{}, nil })
	workflowtest.Signal(env, ShippedE, Shipped{Order: "other", Carrier: "dhl"})
	workflowtest.Signal(env, ShippedE, Shipped{Order: "o3", Carrier: "fedex"})
	out, err := workflowtest.Run(env, PlaceOrder, OrderIn{Order: "o3", Amount: 30})
	if err != nil || out.Carrier != "fedex" {
		t.Fatalf("Run: %+v, %v", out, err)
	}
	if got := env.Now().Sub(start); got != 15*time.Minute {
		t.Errorf("the clock moved %s, want 15m0s (the await did not wait)", got)
	}
}

// TestPermanentErrorCompensates: a permanent error of a step fails the
// run with it, at once (one call), and the compensations registered
// before it run in reverse order.
func TestPermanentErrorCompensates(t *testing.T) {
	env := workflowtest.New(t)
	var p participants
	refused := &engine.Error{Code: http.StatusUnprocessableEntity, Reason: "no_carrier", Message: "no carrier for this address"}
	p.stub(env, func(context.Context, ItemIn) (Done, error) { return Done{}, refused })
	_, err := workflowtest.Run(env, PlaceOrder, OrderIn{Order: "o4", Amount: 30})
	var we *engine.Error
	if !errors.As(err, &we) || we.Reason != "no_carrier" || we.Code != http.StatusUnprocessableEntity {
		t.Fatalf("Run: %v, want the ship's 422", err)
	}
	if got, want := p.log(), []string{"charge", "reserve", "ship", "release", "refund p-o4"}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	want := []string{"invoke payments.v1.charge", "invoke stock.v1.reserve", "sleep sleep", "invoke shipping.v1.ship",
		"compensate stock.v1.release", "compensate payments.v1.refund"}
	steps := env.Steps()
	if got := kinds(steps); !slices.Equal(got, want) {
		t.Fatalf("steps %q, want %q", got, want)
	}
	if s := steps[3]; s.Attempts != 1 || s.Error == nil || s.Error.Reason != "no_carrier" {
		t.Errorf("the ship step: %d attempts, error %v", s.Attempts, s.Error)
	}
}

// TestTransientErrorRetried: a transient error is retried within the run
// until the stub succeeds; the step records its attempts, and the clock
// moved by the backoff (default: 100 ms, then 200 ms, each ±50 %).
func TestTransientErrorRetried(t *testing.T) {
	env := workflowtest.New(t)
	start := env.Now()
	var p participants
	p.stub(env, func(_ context.Context, in ItemIn) (Done, error) {
		workflowtest.Signal(env, ShippedE, Shipped{Order: in.Order, Carrier: "ups"})
		return Done{}, nil
	})
	var calls atomic.Int32
	flaky := workflow.New("orders", "1", "flaky", func(wf workflow.Context, in OrderIn) (string, error) {
		return workflow.Step(wf, "count", func(context.Context) (string, error) {
			if n := calls.Add(1); n < 3 {
				return "", fmt.Errorf("attempt %d: unavailable", n)
			}
			return "ok", nil
		})
	})
	out, err := workflowtest.Run(env, flaky, OrderIn{Order: "o5"})
	if err != nil || out != "ok" {
		t.Fatalf("Run: %q, %v", out, err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("the step ran %d times, want 3", n)
	}
	if s := env.Steps(); len(s) != 1 || s[0].Attempts != 3 {
		t.Errorf("steps %+v, want one of 3 attempts", s)
	}
	if moved := env.Now().Sub(start); moved < 150*time.Millisecond || moved > 450*time.Millisecond {
		t.Errorf("the clock moved %s, want the two waits' 150 ms to 450 ms", moved)
	}

	// The same through a stubbed command: a 503 and a timeout are retried.
	env = workflowtest.New(t)
	var charges atomic.Int32
	workflowtest.Stub(env, Charge, func(_ context.Context, in ChargeIn) (ChargeOut, error) {
		switch charges.Add(1) {
		case 1:
			return ChargeOut{}, engine.NewError(http.StatusServiceUnavailable, "bank down")
		case 2:
			return ChargeOut{}, engine.ErrTimeout
		}
		return ChargeOut{PaymentID: "p-" + in.Order}, nil
	})
	charge := workflow.New("orders", "1", "charge", func(wf workflow.Context, in ChargeIn) (ChargeOut, error) {
		return workflow.Invoke(wf, Charge, in)
	})
	if out, err := workflowtest.Run(env, charge, ChargeIn{Order: "o6"}); err != nil || out.PaymentID != "p-o6" {
		t.Fatalf("Run: %+v, %v", out, err)
	}
	if n := charges.Load(); n != 3 {
		t.Errorf("the stub was called %d times, want 3", n)
	}
}

// TestInvalidInput: an input its Validate refuses is a 400, as Invoke
// returns it; nothing runs.
func TestInvalidInput(t *testing.T) {
	env := workflowtest.New(t)
	var p participants
	p.stub(env, func(context.Context, ItemIn) (Done, error) { return Done{}, nil })
	_, err := workflowtest.Run(env, PlaceOrder, OrderIn{})
	if !errors.Is(err, engine.ErrInvalidInput) {
		t.Fatalf("Run: %v, want a 400", err)
	}
	if len(p.log()) != 0 || len(env.Steps()) != 0 {
		t.Errorf("calls %q, steps %+v", p.log(), env.Steps())
	}
	if _, err := workflowtest.Run(env, (*workflow.Workflow[OrderIn, OrderOut])(nil), OrderIn{Order: "o9"}); err == nil {
		t.Error("Run of a nil workflow: no error")
	}
}

// TestLoopBounded: a workflow that makes steps for ever is stopped after
// MaxSteps, one that sleeps for ever after MaxWaits, with
// ErrTooManySteps.
func TestLoopBounded(t *testing.T) {
	ticker := workflow.New("loops", "1", "ticker", func(wf workflow.Context, _ struct{}) (int, error) {
		for i := 0; ; i++ {
			if _, err := workflow.Step(wf, "tick", func(context.Context) (int, error) { return i, nil }); err != nil {
				return i, err
			}
		}
	})
	sleeper := workflow.New("loops", "1", "sleeper", func(wf workflow.Context, _ struct{}) (int, error) {
		for i := 0; ; i++ {
			if err := workflow.Sleep(wf, time.Hour); err != nil {
				return i, err
			}
		}
	})
	for _, c := range []struct {
		wf    *workflow.Workflow[struct{}, int]
		steps int
	}{
		{ticker, workflowtest.MaxSteps},
		{sleeper, workflowtest.MaxWaits + 1}, // the last wait is not resumed
	} {
		t.Run(c.wf.String(), func(t *testing.T) {
			env := workflowtest.New(t)
			began := time.Now()
			_, err := workflowtest.Run(env, c.wf, struct{}{})
			if !errors.Is(err, workflowtest.ErrTooManySteps) {
				t.Fatalf("Run: %v, want ErrTooManySteps", err)
			}
			if n := len(env.Steps()); n != c.steps {
				t.Errorf("%d steps recorded, want %d", n, c.steps)
			}
			t.Logf("stopped after %s", time.Since(began))
		})
	}
}

// fakeT is a testing.TB that records the failure of a test, so that a
// test can check that the kit fails it, and that an Example can use.
type fakeT struct {
	testing.TB
	mu       sync.Mutex
	fatal    string
	cleanups []func()
}

func (f *fakeT) Helper()    {}
func (f *fakeT) Log(...any) {}
func (f *fakeT) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}
func (f *fakeT) Errorf(format string, args ...any) { f.Fatalf(format, args...) }
func (f *fakeT) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

// cleanup runs the cleanups, last first.
func (f *fakeT) cleanup() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// TestUnstubbedCommandFails: a command invoked without a stub fails the
// test at once, naming it (not after the step's 100 attempts).
func TestUnstubbedCommandFails(t *testing.T) {
	ft := &fakeT{TB: t}
	defer ft.cleanup()
	env := workflowtest.New(ft)
	workflowtest.Stub(env, Charge, func(_ context.Context, in ChargeIn) (ChargeOut, error) {
		return ChargeOut{PaymentID: "p-" + in.Order}, nil
	})
	done := make(chan struct{})
	go func() { // Fatalf ends the goroutine
		defer close(done)
		_, _ = workflowtest.Run(env, PlaceOrder, OrderIn{Order: "o7"})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if !strings.Contains(ft.fatal, "stock.v1.reserve") || !strings.Contains(ft.fatal, "no stub") {
		t.Errorf("the test failed with %q, want it to name stock.v1.reserve", ft.fatal)
	}
	if s := env.Steps(); len(s) != 1 {
		t.Errorf("steps %+v, want the charge only", s)
	}
}

// TestMessageIDs: a stub receives the step's message id, derived from the
// run and the step: each step its own, the same in every Env.
func TestMessageIDs(t *testing.T) {
	ids := func() []string {
		env := workflowtest.New(t)
		var mu sync.Mutex
		var ids []string
		note := func(ctx context.Context) {
			mu.Lock()
			defer mu.Unlock()
			ids = append(ids, engine.MetaFrom(ctx).MessageID)
		}
		workflowtest.Stub(env, Charge, func(ctx context.Context, in ChargeIn) (ChargeOut, error) {
			note(ctx)
			return ChargeOut{PaymentID: "p-" + in.Order}, nil
		})
		workflowtest.Stub(env, Reserve, func(ctx context.Context, _ ItemIn) (Done, error) {
			note(ctx)
			return Done{}, nil
		})
		workflowtest.Stub(env, Ship, func(ctx context.Context, in ItemIn) (Done, error) {
			note(ctx)
			workflowtest.Signal(env, ShippedE, Shipped{Order: in.Order})
			return Done{}, nil
		})
		if _, err := workflowtest.Run(env, PlaceOrder, OrderIn{Order: "o8"}); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	first, second := ids(), ids()
	if len(first) != 3 || first[0] == "" || first[0] == first[1] || first[1] == first[2] {
		t.Fatalf("message ids %q: want 3, distinct", first)
	}
	if !slices.Equal(first, second) {
		t.Errorf("message ids %q, then %q", first, second)
	}
}

// TestEmittedEventArrives: an event a stub emits through its engine is
// recorded and arrives as a signal, as the workflow's subscription would
// store it: the Await takes it.
func TestEmittedEventArrives(t *testing.T) {
	env := workflowtest.New(t)
	var p participants
	p.stub(env, func(ctx context.Context, in ItemIn) (Done, error) {
		return Done{}, ShippedE.Emit(ctx, Shipped{Order: in.Order, Carrier: "dpd"})
	})
	out, err := workflowtest.Run(env, PlaceOrder, OrderIn{Order: "o10"})
	if err != nil || out.Carrier != "dpd" {
		t.Fatalf("Run: %+v, %v", out, err)
	}
	if got := workflowtest.Emitted(env, ShippedE); !slices.Equal(got, []Shipped{{Order: "o10", Carrier: "dpd"}}) {
		t.Errorf("emitted %+v", got)
	}
}

// TestRetriesExhausted: a step that keeps failing transiently fails after
// the default StepRetry's 100 attempts, about a quarter of an hour on the
// clock (100 ms doubling to 10 s, ±50 %: 7.8 to 23.3 minutes), and none of
// it in real time.
func TestRetriesExhausted(t *testing.T) {
	env := workflowtest.New(t)
	start := env.Now()
	var calls atomic.Int32
	workflowtest.Stub(env, Charge, func(context.Context, ChargeIn) (ChargeOut, error) {
		calls.Add(1)
		return ChargeOut{}, engine.NewError(http.StatusServiceUnavailable, "bank down")
	})
	charge := workflow.New("orders", "1", "charge", func(wf workflow.Context, in ChargeIn) (ChargeOut, error) {
		return workflow.Invoke(wf, Charge, in)
	})
	began := time.Now()
	_, err := workflowtest.Run(env, charge, ChargeIn{Order: "o11"})
	if !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("Run: %v, want the stub's 503", err)
	}
	if wall := time.Since(began); wall > 10*time.Second {
		t.Errorf("100 attempts took %s of real time", wall)
	}
	if n := calls.Load(); n != workflow.DefaultStepAttempts {
		t.Errorf("the stub was called %d times, want %d", n, workflow.DefaultStepAttempts)
	}
	if s := env.Steps(); len(s) != 1 || s[0].Attempts != workflow.DefaultStepAttempts {
		t.Errorf("steps %+v", s)
	}
	moved := env.Now().Sub(start)
	if moved < 7*time.Minute || moved > 24*time.Minute {
		t.Errorf("the clock moved %s, want about a quarter of an hour", moved)
	}
	t.Logf("%d attempts: the clock moved %s, in %s of real time", calls.Load(), moved, time.Since(began))
}
