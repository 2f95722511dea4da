package workflow_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// TestReviewStopReturnsWhileRunsExecute: DEFECT (medium). The runner
// drains its runs for LeaseTTL/3 whatever the engine's DrainTimeout is
// (doc.go only says it "should not exceed" it; nothing checks it, though
// the runner's context carries the engine and engine.DrainTimeout exists).
// With a 1 s DrainTimeout and a 30 s lease, Stop gives up on the runner
// after 1 s and returns, while a step still runs and will record, release
// and send afterwards: work after Stop, on an engine whose bridge may be
// closed, and a process that exits then leaves the run leased for 30 s
// instead of giving it back.
func TestReviewStopReturnsWhileRunsExecute(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	entered := make(chan struct{})
	var inStep atomic.Bool
	var once atomic.Bool
	wf := workflow.New("wfrevstop", "1", "long", func(wf workflow.Context, in ChargeIn) (Done, error) {
		_, err := workflow.Step(wf, "long", func(ctx context.Context) (int, error) {
			if !once.CompareAndSwap(false, true) {
				return 1, nil
			}
			inStep.Store(true)
			defer inStep.Store(false)
			close(entered)
			select { // a step that honours its context, bounded for the test
			case <-ctx.Done():
			case <-time.After(4 * time.Second):
			}
			return 1, nil
		})
		return Done{}, err
	})
	store := e.store()
	store.LeaseTTL = 30 * time.Second // the default: the runner drains for 10 s
	svc := engine.NewService("wfrevstop", "1")
	if err := workflow.Register(svc, store, wf); err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.Config{SharedBridge: bus, Logger: quiet(), DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Register(svc); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 20*time.Second)
	defer cancel()
	if _, err := wf.Start(ctx, ChargeIn{}, workflow.RunID("s1")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the step did not start")
	}
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopCancel()
	_ = eng.Stop(stopCtx)
	still := inStep.Load()
	// Let the runner end before the test does (goleak).
	eventually(t, 10*time.Second, "the run released or finished", func() bool {
		var leased bool
		_ = e.db.QueryRow(`SELECT lease_until IS NOT NULL FROM "` + e.schema + `".workflow_runs WHERE id = 's1'`).Scan(&leased)
		return !inStep.Load() && !leased
	})
	if still {
		t.Errorf("engine.Stop returned while the run's step was still executing: the runner outlives the engine's drain")
	}
}
