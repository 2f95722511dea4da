package workflow_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// TestReview2NULInAStepErrorHangsTheRun: DEFECT (medium, hang on bad
// input). A JSON input may hold "\u0000" (valid JSON, a Go string with a
// NUL byte), and a step's error message that quotes the input then holds
// it too. The step's error is recorded as jsonb, which cannot hold
// \u0000: the checkpoint fails, the run is given back "after a database
// failure", claimed again a second later, replays, fails the same
// checkpoint — for ever. The run never fails nor compensates, Invoke
// waits until its caller gives up, and only warnings are logged. The same
// holds for a participant's error (an Invoke step) and for the run's own
// error (its end is refused the same way).
func TestReview2NULInAStepErrorHangsTheRun(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	wf := workflow.New("wfr2nul", "1", "declines", func(wf workflow.Context, in ChargeIn) (Done, error) {
		_, err := workflow.Step(wf, "check", func(context.Context) (int, error) {
			return 0, &engine.Error{Code: http.StatusUnprocessableEntity, Reason: "declined", Message: "order " + in.Order + " declined"}
		})
		return Done{}, err
	})
	svc := engine.NewService("wfr2nul", "1")
	if err := workflow.Register(svc, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, svc)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 6*time.Second)
	defer cancel()
	_, err := wf.Invoke(ctx, ChargeIn{Order: "a\x00b"}, workflow.RunID("n1"))
	var we *engine.Error
	if !errors.As(err, &we) || we.Code != http.StatusUnprocessableEntity {
		t.Errorf("Invoke: %v; want the step's 422 (the run is %s after 6 s, claimed %d times)", err, e.run(t, "n1").status, e.run(t, "n1").claims)
	}
}

// TestReview2NULInAnAwaitKeyHangsTheRun: DEFECT (medium, hang on bad
// input). An Await's key comes from data (here the input, whose JSON may
// hold "\u0000"); the step's name is "<event>/<key>", a text column, which
// cannot hold NUL: the await's record fails, and the run is given back and
// claimed again every second for ever.
func TestReview2NULInAnAwaitKeyHangsTheRun(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	wf := workflow.New("wfr2nulkey", "1", "awaits", func(wf workflow.Context, in ChargeIn) (Shipped, error) {
		return workflow.Await(wf, wfr2ShippedEv, in.Order, time.Hour)
	}, workflow.Correlate(wfr2ShippedEv, func(s Shipped) string { return s.Order }))
	svc := engine.NewService("wfr2nulkey", "1")
	if err := workflow.Register(svc, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, svc)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 6*time.Second)
	defer cancel()
	_, err := wf.Invoke(ctx, ChargeIn{Order: "a\x00b"}, workflow.RunID("k1"))
	if r := e.run(t, "k1"); r.status != "failed" || err == nil {
		t.Errorf("Invoke: %v; want the run failed with the Await's error (the run is %s after 6 s, claimed %d times)", err, r.status, r.claims)
	}
}

// TestReview2LongAwaitKeyHangsTheRun: DEFECT (medium, hang on bad input).
// An Await's key is indexed (workflow_runs_awaiting, and workflow_signals'
// primary key): a key longer than a B-tree entry may be (about 2.7 kB,
// here 4 kB of varied text) makes the await's suspend fail, and the run is
// given back and claimed again every second for ever.
func TestReview2LongAwaitKeyHangsTheRun(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	wf := workflow.New("wfr2longkey", "1", "awaits", func(wf workflow.Context, in ChargeIn) (Shipped, error) {
		return workflow.Await(wf, wfr2ShippedEv, in.Order, time.Hour)
	}, workflow.Correlate(wfr2ShippedEv, func(s Shipped) string { return s.Order }))
	svc := engine.NewService("wfr2longkey", "1")
	if err := workflow.Register(svc, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, svc)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 6*time.Second)
	defer cancel()
	key := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range key {
		key[i] = byte('!' + rng.IntN(90))
	}
	if _, err := wf.Start(ctx, ChargeIn{Order: string(key)}, workflow.RunID("l1")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	r := e.run(t, "l1")
	steps := e.steps(t, "l1")
	if r.status == "running" && r.claims > 1 {
		t.Errorf("the run is %s, claimed %d times in 3 s (steps %d): its await cannot suspend", r.status, r.claims, len(steps))
	}
}
