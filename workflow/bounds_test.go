package workflow_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// A run whose code loops for ever is stopped at MaxSteps, with
// ErrTooManySteps, instead of growing its history (read and replayed at
// every claim) without bound.
func TestRunIsBoundedByMaxSteps(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wf := workflow.New("wforders", "1", "forever", func(wf workflow.Context, in ChargeIn) (Done, error) {
		for i := 0; ; i++ {
			if _, err := workflow.Step(wf, "tick", func(context.Context) (int, error) { return i, nil }); err != nil {
				return Done{}, err
			}
		}
	})
	orders := engine.NewService("wforders", "1")
	if err := workflow.Register(orders, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, inprocBus(t), orders)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 2*time.Minute)
	defer cancel()
	_, err := wf.Invoke(ctx, ChargeIn{}, workflow.RunID("forever-1"))
	if !errors.Is(err, workflow.ErrTooManySteps) {
		t.Fatalf("Invoke: %v, want ErrTooManySteps", err)
	}
	if r := e.run(t, "forever-1"); r.status != "stopped" {
		t.Errorf("run ended %q, want stopped", r.status)
	}
	var n int
	if err := e.db.QueryRow(`SELECT count(*) FROM "` + e.schema + `".workflow_steps WHERE run_id = 'forever-1'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != workflow.MaxSteps {
		t.Errorf("%d steps recorded, want MaxSteps (%d)", n, workflow.MaxSteps)
	}
}
