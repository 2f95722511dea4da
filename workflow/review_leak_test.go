package workflow_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// secret is an internal error's text that must not reach a caller.
const reviewSecret = `pq: password authentication failed for user "billing" (host 10.0.3.7:5432)`

// TestReviewStepErrorLeaksToCaller: DEFECT (medium). A local step's plain
// error becomes an *engine.Error whose Message is err.Error(), and the
// workflow's error, an *engine.Error, is kept "as it is": so the idiomatic
// `if err != nil { return Out{}, err }` sends an internal error's text
// (here a database host and user) to whoever calls Invoke, across the
// transport and the HTTP gateway. A command handler returning the same
// plain error gives its caller "internal error" (checked first, below);
// doc.go promises "any other error as a 500 that leaks nothing".
func TestReviewStepErrorLeaksToCaller(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	leaky := engine.NewCommand[ChargeIn, Done]("wfrevleak", "1", "leaky")
	wf := workflow.New("wfrevleak", "1", "lookup", func(wf workflow.Context, in ChargeIn) (Done, error) {
		_, err := workflow.Step(wf, "lookup", func(context.Context) (int, error) {
			return 0, workflow.Permanent(errors.New(reviewSecret))
		})
		return Done{}, err
	})
	svc := engine.NewService("wfrevleak", "1")
	engine.Handle(svc, leaky, func(context.Context, ChargeIn) (Done, error) { return Done{}, errors.New(reviewSecret) })
	if err := workflow.Register(svc, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, svc)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 20*time.Second)
	defer cancel()
	if _, err := leaky.Invoke(ctx, ChargeIn{}); err == nil || strings.Contains(err.Error(), "10.0.3.7") {
		t.Fatalf("the engine's own handler: %v, want an internal error without the secret", err)
	}
	_, err := wf.Invoke(ctx, ChargeIn{Order: "l1"}, workflow.RunID("l1"))
	if err == nil {
		t.Fatal("Invoke succeeded, want the run's error")
	}
	if strings.Contains(err.Error(), "10.0.3.7") || strings.Contains(err.Error(), "billing") {
		t.Errorf("the caller of Invoke gets the step's internal error: %v", err)
	}
}
