package workflow_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/workflow"
)

// Two runners compete for 200 runs. Runner A is paused past its lease
// (its 16 runs block in a step while their leases are made to expire, as a
// stalled process's would); runner B takes them over with a new fencing
// token and completes every run. When A resumes, the checkpoint of the
// step it was in is refused by the fence: A records nothing and runs no
// further step.
func TestStaleRunnerRecordsNothing(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	const runs = 200
	gate := make(chan struct{})
	var aInWork, aOutOfWork, aThree, bThree atomic.Int64
	newWF := func(label string) *workflow.Workflow[ChargeIn, Done] {
		return workflow.New("wforders", "1", "fenced", func(wf workflow.Context, in ChargeIn) (Done, error) {
			for _, step := range []string{"one", "work", "three"} {
				_, err := workflow.Step(wf, step, func(context.Context) (string, error) {
					switch {
					case label == "A" && step == "work":
						aInWork.Add(1)
						<-gate
						aOutOfWork.Add(1)
					case step == "three" && label == "A":
						aThree.Add(1)
					case step == "three":
						bThree.Add(1)
					}
					return label, nil
				})
				if err != nil {
					return Done{}, err
				}
			}
			return Done{}, nil
		})
	}
	storeA := e.store()
	storeA.LeaseTTL = time.Minute // no renewal during the test: the pause is A's
	var logA testenv.LogBuffer
	storeA.Logger = slog.New(slog.NewTextHandler(&logA, nil))
	svcA := engine.NewService("wforders", "1")
	wfA := newWF("A")
	if err := workflow.Register(svcA, storeA, wfA); err != nil {
		t.Fatal(err)
	}
	engA, stopA := startEngine(t, bus, svcA)
	defer close(gate)
	ctx := engine.WithEngine(t.Context(), engA)
	for i := range runs {
		if _, err := wfA.Start(ctx, ChargeIn{Order: fmt.Sprint(i)}, workflow.RunID(fmt.Sprintf("f-%03d", i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "A's 16 runs in their step", func() bool { return aInWork.Load() == workflow.DefaultConcurrency })
	// A stalls past its leases.
	res, err := e.db.Exec(`UPDATE "` + e.schema + `".workflow_runs SET lease_until = now() - interval '1 second' WHERE lease_until IS NOT NULL`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != workflow.DefaultConcurrency {
		t.Fatalf("%d leased runs, want %d", n, workflow.DefaultConcurrency)
	}
	svcB := engine.NewService("wforders", "1")
	if err := workflow.Register(svcB, e.store(), newWF("B")); err != nil {
		t.Fatal(err)
	}
	startEngine(t, bus, svcB)
	eventually(t, 30*time.Second, "B completed every run", func() bool { return e.statuses(t, "completed") == runs })

	// A resumes: its checkpoints are refused, it stops.
	gate <- struct{}{} // one at once: the others follow
	for range workflow.DefaultConcurrency - 1 {
		gate <- struct{}{}
	}
	eventually(t, 10*time.Second, "A out of its steps", func() bool { return aOutOfWork.Load() == workflow.DefaultConcurrency })
	stopA() // waits for A's executions to end

	if n := aThree.Load(); n != 0 {
		t.Errorf("runner A ran %d steps after losing its runs", n)
	}
	if n := bThree.Load(); n != runs {
		t.Errorf("the last step ran %d times, want %d", n, runs)
	}
	var stale, total int
	if err := e.db.QueryRow(`SELECT count(*) FILTER (WHERE seq > 1 AND result = '"A"'), count(*) FROM "`+e.schema+`".workflow_steps`).Scan(&stale, &total); err != nil {
		t.Fatal(err)
	}
	if stale != 0 || total != 3*runs {
		t.Errorf("%d steps recorded by the stale runner, %d steps in all (want 0, %d)", stale, total, 3*runs)
	}
	// Refused by the fence, not by a duplicate step: A saw its lease lost.
	if n := strings.Count(logA.String(), "lease lost"); n != workflow.DefaultConcurrency || strings.Contains(logA.String(), "level=ERROR") {
		t.Errorf("runner A logged %d lost leases, want %d, and no error:\n%s", n, workflow.DefaultConcurrency, logA.String())
	}
	var takenOver int
	if err := e.db.QueryRow(`SELECT count(*) FROM "` + e.schema + `".workflow_runs WHERE fence = 2`).Scan(&takenOver); err != nil {
		t.Fatal(err)
	}
	if takenOver != workflow.DefaultConcurrency {
		t.Errorf("%d runs claimed twice, want the %d taken over", takenOver, workflow.DefaultConcurrency)
	}
}

// A runner whose lease renewal is refused (another runner took the run:
// here its fence is bumped, as a claim does) cancels the run's context at
// once, so that a step waiting on it returns, and records nothing; the run
// is executed again once the lease expired.
func TestLostRenewalCancelsTheRun(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	entered, cancelled := make(chan struct{}), make(chan struct{})
	var executions atomic.Int64
	wf := workflow.New("wforders", "1", "renewed", func(wf workflow.Context, in ChargeIn) (Done, error) {
		_, err := workflow.Step(wf, "wait", func(ctx context.Context) (int64, error) {
			n := executions.Add(1)
			if n > 1 {
				return n, nil
			}
			close(entered)
			<-ctx.Done()
			close(cancelled)
			return n, ctx.Err()
		})
		return Done{}, err
	})
	store := e.store()
	store.LeaseTTL = 600 * time.Millisecond // renewed every 200 ms
	orders := engine.NewService("wforders", "1")
	if err := workflow.Register(orders, store, wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, orders)
	if _, err := wf.Start(engine.WithEngine(t.Context(), eng), ChargeIn{}, workflow.RunID("l1")); err != nil {
		t.Fatal(err)
	}
	<-entered
	if _, err := e.db.Exec(`UPDATE "` + e.schema + `".workflow_runs SET fence = fence + 1 WHERE id = 'l1'`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the step's context was not cancelled after the lease was lost")
	}
	eventually(t, 10*time.Second, "the run completed by its next execution", func() bool { return e.run(t, "l1").status == "completed" })
	var result string
	if err := e.db.QueryRow(`SELECT convert_from(result, 'UTF8') FROM "` + e.schema + `".workflow_steps WHERE run_id = 'l1' AND seq = 1`).Scan(&result); err != nil {
		t.Fatal(err)
	}
	if result != "2" {
		t.Errorf("step recorded with %s, want the second execution's 2", result)
	}
}
