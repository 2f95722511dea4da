package workflow_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// TestReview2CancelDuringFailingStepEndsFailed: DEFECT (low). A Cancel
// that arrives while a step runs is returned to the runner by that step's
// checkpoint; when the step fails and the workflow function returns its
// error (the usual `if err != nil { return …, err }`), the run ends
// "failed" with the step's error, not "cancelled": body only makes a run
// cancelled on a cancel seen when the function returned no error. Cancel
// (and `switchboard workflow cancel`, which prints "a runner compensates
// it and ends it cancelled") reported success; the caller's Invoke gets
// the step's error, not ErrCancelled; and the run, being "failed", may be
// retried (Retry refuses cancelled runs).
func TestReview2CancelDuringFailingStepEndsFailed(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	inStep, proceed := make(chan struct{}), make(chan struct{})
	var compensated atomic.Int64
	var once atomic.Bool
	undo := engine.NewCommand[ChargeIn, Done]("wfr2cancel", "1", "undo")
	wf := workflow.New("wfr2cancel", "1", "failing", func(wf workflow.Context, in ChargeIn) (Done, error) {
		if _, err := workflow.Step(wf, "first", func(context.Context) (int, error) { return 1, nil }); err != nil {
			return Done{}, err
		}
		workflow.OnFailure(wf, undo, in)
		_, err := workflow.Step(wf, "declined", func(context.Context) (int, error) {
			if once.CompareAndSwap(false, true) {
				close(inStep)
				<-proceed
			}
			return 0, workflow.Permanent(errors.New("declined"))
		})
		if err != nil {
			return Done{}, err
		}
		return Done{}, nil
	})
	svc := engine.NewService("wfr2cancel", "1")
	engine.Handle(svc, undo, func(context.Context, ChargeIn) (Done, error) {
		compensated.Add(1)
		return Done{}, nil
	})
	if err := workflow.Register(svc, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, svc)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 15*time.Second)
	defer cancel()
	if _, err := wf.Start(ctx, ChargeIn{Order: "c1"}, workflow.RunID("c1")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inStep:
	case <-ctx.Done():
		t.Fatal("the run did not reach its step")
	}
	cerr := workflow.Cancel(ctx, e.db, e.schema, "c1")
	close(proceed)
	if cerr != nil {
		t.Fatalf("Cancel of a running run: %v", cerr)
	}
	_, err := wf.Invoke(ctx, ChargeIn{Order: "c1"}, workflow.RunID("c1"))
	r := e.run(t, "c1")
	if r.status != "cancelled" || !errors.Is(err, workflow.ErrCancelled) {
		t.Errorf("Cancel succeeded while a step ran, and that step's checkpoint returned it, but the run ended %s (Invoke: %v; compensations run: %d); want cancelled and ErrCancelled",
			r.status, err, compensated.Load())
	}
	if n := compensated.Load(); n != 1 {
		t.Errorf("compensation ran %d times, want 1", n)
	}
}

// TestReview2CancelDuringShortSleepRunsTheNextStep: DEFECT (low). The
// package documentation says a cancel is seen "at each step boundary ...
// and at a sleep or an await it is woken from". A Sleep of a second or
// less waits in the process after its checkpoint, so a Cancel that lands
// during it is not seen when it ends: the runner learns of cancels only
// from checkpoints, and the next step's checkpoint comes after its work.
// The next step (here a charge) takes effect after the operator's Cancel
// succeeded, and is then compensated.
func TestReview2CancelDuringShortSleepRunsTheNextStep(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	sleeping := make(chan struct{})
	var once atomic.Bool
	wf := workflow.New("wfr2cancelsleep", "1", "nap", func(wf workflow.Context, in ChargeIn) (Done, error) {
		if _, err := workflow.Step(wf, "first", func(context.Context) (int, error) { return 1, nil }); err != nil {
			return Done{}, err
		}
		if once.CompareAndSwap(false, true) {
			close(sleeping)
		}
		if err := workflow.Sleep(wf, time.Second); err != nil { // waits in the process
			return Done{}, err
		}
		pay, err := workflow.Invoke(wf, Charge, in)
		if err != nil {
			return Done{}, err
		}
		workflow.OnFailure(wf, Refund, RefundIn{PaymentID: pay.PaymentID})
		return Done{}, nil
	})
	svc := engine.NewService("wfr2cancelsleep", "1")
	if err := workflow.Register(svc, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, append(e.participants(nil), svc)...)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 15*time.Second)
	defer cancel()
	if _, err := wf.Start(ctx, ChargeIn{Order: "s1"}, workflow.RunID("s1")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sleeping:
	case <-ctx.Done():
		t.Fatal("the run did not reach its sleep")
	}
	time.Sleep(200 * time.Millisecond) // within the 1 s sleep, with room for a slow machine
	if err := workflow.Cancel(ctx, e.db, e.schema, "s1"); err != nil {
		t.Fatalf("Cancel of a sleeping run: %v", err)
	}
	_, err := wf.Invoke(ctx, ChargeIn{Order: "s1"}, workflow.RunID("s1"))
	if !errors.Is(err, workflow.ErrCancelled) {
		t.Errorf("Invoke: %v, want ErrCancelled", err)
	}
	if n := e.effects(t, "charge", "s1"); n != 0 {
		t.Errorf("the step after the sleep charged %d time(s) after the Cancel succeeded during the sleep (steps %q)", n, e.steps(t, "s1"))
	}
}

// TestReview2CancelWaitsForAStepsRetries: DEFECT (medium). A Cancel of a
// run whose step is being retried (its participant unavailable: the usual
// reason an operator cancels a stuck run) is not seen until the step has
// used every attempt of Store.StepRetry: by default 100 attempts, about a
// quarter of an hour, here (the tests' store, 20 to 100 ms backoff) about
// ten seconds. Meanwhile `switchboard workflow cancel` has printed that "a
// runner compensates it and ends it cancelled", and the run keeps its slot
// and keeps calling the unavailable participant. The retry loop already
// wakes between attempts for the engine's stop; it does not read the
// run's cancellation.
func TestReview2CancelWaitsForAStepsRetries(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	down := engine.NewCommand[ChargeIn, Done]("wfr2cancelretry", "1", "down")
	var calls atomic.Int64
	wf := workflow.New("wfr2cancelretry", "1", "stuck", func(wf workflow.Context, in ChargeIn) (Done, error) {
		return workflow.Invoke(wf, down, in)
	})
	svc := engine.NewService("wfr2cancelretry", "1")
	engine.Handle(svc, down, func(context.Context, ChargeIn) (Done, error) {
		calls.Add(1)
		return Done{}, engine.NewError(503, "participant unavailable")
	})
	if err := workflow.Register(svc, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, svc)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 15*time.Second)
	defer cancel()
	if _, err := wf.Start(ctx, ChargeIn{Order: "r1"}, workflow.RunID("r1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the step is retried", func() bool { return calls.Load() >= 3 })
	if err := workflow.Cancel(ctx, e.db, e.schema, "r1"); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	cancelled := time.Now()
	deadline := cancelled.Add(3 * time.Second)
	for e.run(t, "r1").status == "running" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if r := e.run(t, "r1"); r.status != "cancelled" {
		before := calls.Load()
		t.Errorf("3 s after a successful Cancel the run is %s and its step still retried (%d calls so far)", r.status, before)
	}
}
