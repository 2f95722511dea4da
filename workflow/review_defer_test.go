package workflow_test

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// TestReviewDeferredStepAtSuspensionCorruptsHistory: DEFECT (medium). When
// a Sleep gives the run back, the executor ends the workflow function with
// runtime.Goexit, which runs its deferred functions (doc.go says so). A
// step called there — a "finally" audit or cleanup — is executed and
// recorded although the run has just been given back: the checkpoint's
// fence still matches (suspending does not change it). The cleanup happens
// at the first suspension instead of at the end, and its record takes the
// position of the step that follows the Sleep, so when the run wakes the
// replay finds "step cleanup" where the code reaches "step two": a
// deterministic workflow is stopped as nondeterministic. A step called
// after the execution halted should halt at once without doing anything.
func TestReviewDeferredStepAtSuspensionCorruptsHistory(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	wf := workflow.New("wfrevdefer", "1", "finally", func(wf workflow.Context, in ChargeIn) (out Done, err error) {
		defer func() {
			if _, cerr := workflow.Step(wf, "cleanup", func(context.Context) (int, error) { return 1, nil }); err == nil {
				err = cerr
			}
		}()
		if _, err := workflow.Step(wf, "one", func(context.Context) (int, error) { return 1, nil }); err != nil {
			return Done{}, err
		}
		if err := workflow.Sleep(wf, 1100*time.Millisecond); err != nil { // long: the run is given back
			return Done{}, err
		}
		if _, err := workflow.Step(wf, "two", func(context.Context) (int, error) { return 2, nil }); err != nil {
			return Done{}, err
		}
		return Done{}, nil
	})
	svc := engine.NewService("wfrevdefer", "1")
	if err := workflow.Register(svc, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, svc)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 20*time.Second)
	defer cancel()
	if _, err := wf.Invoke(ctx, ChargeIn{Order: "d1"}, workflow.RunID("d1")); err != nil {
		t.Errorf("a deterministic workflow with a deferred step: %v; steps %q", err, e.steps(t, "d1"))
	}
}
