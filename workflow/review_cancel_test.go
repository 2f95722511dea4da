package workflow_test

import (
	"context"
	"database/sql"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// reviewRunRow is what the review tests read of a run: its status and how
// far its wake time is (seconds, NULL when none).
func reviewRunRow(t *testing.T, e env, id string) (status string, wakeIn sql.NullFloat64, cancel bool) {
	t.Helper()
	if err := e.db.QueryRow(`SELECT status, extract(epoch FROM wake_at - now())::float8, cancel_requested
		FROM "`+e.schema+`".workflow_runs WHERE id = $1`, id).Scan(&status, &wakeIn, &cancel); err != nil {
		t.Fatalf("run %s: %v", id, err)
	}
	return status, wakeIn, cancel
}

// TestReviewCancelBeforeSleepIsLost: DEFECT. A Cancel that lands after a
// step's checkpoint and before the next long Sleep gives the run back is
// overwritten: the suspend statement sets wake_at to the sleep's due time
// without reading cancel_requested (the runner only learns of a cancel from
// a checkpoint), so Cancel's "wake_at = now()" is lost and the run sleeps
// its full duration before it compensates. Impact: `switchboard workflow
// cancel` reports success, yet the run is not cancelled (nor compensated)
// for as long as the Sleep lasts: hours or days. The same window exists
// between an Await's record and its park (awaitSuspend does not read the
// flag either).
func TestReviewCancelBeforeSleepIsLost(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	between, proceed := make(chan struct{}), make(chan struct{})
	var blocked atomic.Bool
	wf := workflow.New("wfrevcancel", "1", "sleepy", func(wf workflow.Context, in ChargeIn) (Done, error) {
		if _, err := workflow.Step(wf, "one", func(context.Context) (int, error) { return 1, nil }); err != nil {
			return Done{}, err
		}
		if blocked.CompareAndSwap(false, true) { // the first execution only: the operator cancels here
			close(between)
			<-proceed
		}
		if err := workflow.Sleep(wf, time.Hour); err != nil {
			return Done{}, err
		}
		return Done{}, nil
	})
	svc := engine.NewService("wfrevcancel", "1")
	if err := workflow.Register(svc, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, svc)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 20*time.Second)
	defer cancel()
	if _, err := wf.Start(ctx, ChargeIn{Order: "c1"}, workflow.RunID("c1")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-between:
	case <-ctx.Done():
		t.Fatal("the run did not reach the point between its steps")
	}
	if err := workflow.Cancel(ctx, e.db, e.schema, "c1"); err != nil {
		close(proceed)
		t.Fatalf("Cancel: %v", err)
	}
	close(proceed)
	deadline := time.Now().Add(8 * time.Second)
	for {
		status, wakeIn, requested := reviewRunRow(t, e, "c1")
		if status == "cancelled" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("8 s after a successful Cancel the run is %s, cancel_requested=%v, wake_at in %.0f s: the cancel waits for the sleep's due time",
				status, requested, wakeIn.Float64)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReviewCancelDuringLastStepCompletes: DEFECT (low). A Cancel that
// arrives while the last step runs is returned to the runner by that
// step's checkpoint (cancel_requested = true), but with no step after it
// the run ends "completed": body only looks at x.cancelled. Impact: Cancel
// returned success (the run was running) and the package documentation
// says the run "ends cancelled", yet no compensation runs and the run's
// caller gets the output; an operator cannot tell which of the two
// happened until they look again.
func TestReviewCancelDuringLastStepCompletes(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	inStep, proceed := make(chan struct{}), make(chan struct{})
	var compensated atomic.Int64
	var once atomic.Bool
	undo := engine.NewCommand[ChargeIn, Done]("wfrevcancel2", "1", "undo")
	wf := workflow.New("wfrevcancel2", "1", "last", func(wf workflow.Context, in ChargeIn) (Done, error) {
		workflow.OnFailure(wf, undo, in)
		_, err := workflow.Step(wf, "last", func(context.Context) (int, error) {
			if once.CompareAndSwap(false, true) {
				close(inStep)
				<-proceed
			}
			return 1, nil
		})
		return Done{}, err
	})
	svc := engine.NewService("wfrevcancel2", "1")
	engine.Handle(svc, undo, func(context.Context, ChargeIn) (Done, error) {
		compensated.Add(1)
		return Done{}, nil
	})
	if err := workflow.Register(svc, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, svc)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 20*time.Second)
	defer cancel()
	if _, err := wf.Start(ctx, ChargeIn{Order: "c2"}, workflow.RunID("c2")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inStep:
	case <-ctx.Done():
		t.Fatal("the run did not reach its step")
	}
	cerr := workflow.Cancel(ctx, e.db, e.schema, "c2")
	close(proceed)
	if cerr != nil {
		t.Fatalf("Cancel of a running run: %v", cerr)
	}
	eventually(t, 10*time.Second, "the run ended", func() bool { return e.run(t, "c2").status != "running" })
	if r := e.run(t, "c2"); r.status != "cancelled" {
		t.Errorf("Cancel succeeded while the run's last step ran, and the runner's checkpoint saw it, but the run ended %s (compensations run: %d)", r.status, compensated.Load())
	}
}
