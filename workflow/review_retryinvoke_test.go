package workflow_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// TestReviewRetryReinvokesAFailedCommand pins a guarantee (passes on
// main): Retry of a run whose command step failed permanently sends the
// command again with the step's message id, and the participant's inbox
// (which rolled the failed handling back) runs it: once the participant is
// fixed, the run completes and each effect happened once.
func TestReviewRetryReinvokesAFailedCommand(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	var broken atomic.Bool
	broken.Store(true)
	wf := workflow.New("wfrevretry2", "1", "place", func(wf workflow.Context, in ChargeIn) (Done, error) {
		if _, err := workflow.Invoke(wf, Charge, in); err != nil {
			return Done{}, err
		}
		return workflow.Invoke(wf, Fail, in)
	})
	svc := engine.NewService("wfrevretry2", "1")
	if err := workflow.Register(svc, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	fail := func(ChargeIn) error {
		if broken.Load() {
			return engine.NewError(http.StatusUnprocessableEntity, "declined")
		}
		return nil
	}
	eng, _ := startEngine(t, bus, append(e.participants(fail), svc)...)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 20*time.Second)
	defer cancel()
	if _, err := wf.Invoke(ctx, ChargeIn{Order: "ri1"}, workflow.RunID("ri1")); err == nil {
		t.Fatal("Invoke succeeded, want the step's 422")
	}
	broken.Store(false)
	if err := workflow.Retry(ctx, e.db, e.schema, "ri1"); err != nil {
		t.Fatal(err)
	}
	if _, err := wf.Invoke(ctx, ChargeIn{Order: "ri1"}, workflow.RunID("ri1")); err != nil {
		t.Fatalf("after the fix and Retry: %v", err)
	}
	if c, f := e.effects(t, "charge", "ri1"), e.effects(t, "fail", "ri1"); c != 1 || f != 1 {
		t.Errorf("charge took effect %d times, the fixed step %d times; want 1 and 1", c, f)
	}
}
