package workflow_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/outbox"
	"github.com/switchboard-go/switchboard/workflow"
)

// TestReviewRetryRunsASentCompensationTwice: DEFECT (high). A compensation
// that kept failing is sent fire-and-forget and recorded with an error
// ("sent": true); the participant's engine then runs it. Retry counts only
// compensations recorded without an error as "undone", so for such a run
// it deletes the history from the first failed forward step, the sent
// compensation's record included, and resumes the forward steps. When the
// run fails again the compensation runs at a new seq, so with a new message
// id that the participant's inbox does not know: the refund happens twice.
// (Had the retried run completed instead, it would have completed with its
// charge refunded.) Impact: an operator's retry, the documented way out of
// a failed run, duplicates a compensation's effect despite the inbox.
func TestReviewRetryRunsASentCompensationTwice(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	var undoDown, checkBroken, laterBroken atomic.Bool
	undoDown.Store(true)
	checkBroken.Store(true)
	undo := engine.NewCommand[ChargeIn, Done]("wfrevundo", "1", "undo")
	undoSvc := engine.NewService("wfrevundo", "1")
	inbox := engine.Use(outbox.Inbox{DB: e.db, Schema: e.schema, Logger: quiet()}.Middleware())
	engine.Handle(undoSvc, undo, func(ctx context.Context, in ChargeIn) (Done, error) {
		if undoDown.Load() {
			return Done{}, &engine.Error{Code: http.StatusServiceUnavailable, Reason: "down", Message: "undo is down"}
		}
		tx, _ := outbox.TxFrom(ctx)
		_, err := tx.ExecContext(ctx, `INSERT INTO "`+e.schema+`".effects (kind, key) VALUES ('undo', $1)`, in.Order)
		return Done{}, err
	}, inbox)
	wf := workflow.New("wfrevretry", "1", "place", func(wf workflow.Context, in ChargeIn) (Done, error) {
		if _, err := workflow.Invoke(wf, Charge, in); err != nil {
			return Done{}, err
		}
		workflow.OnFailure(wf, undo, in)
		for _, s := range []struct {
			name   string
			broken *atomic.Bool
		}{{"check", &checkBroken}, {"later", &laterBroken}} {
			if _, err := workflow.Step(wf, s.name, func(context.Context) (int, error) {
				if s.broken.Load() {
					return 0, workflow.Permanent(errors.New(s.name + " broken"))
				}
				return 1, nil
			}); err != nil {
				return Done{}, err
			}
		}
		return Done{}, nil
	})
	svc := engine.NewService("wfrevretry", "1")
	store := e.store()
	store.StepRetry.MaxAttempts = 2
	if err := workflow.Register(svc, store, wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, append(e.participants(nil), undoSvc, svc)...)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 20*time.Second)
	defer cancel()

	// 1. check fails; undo fails its attempts and is sent; the
	// participant's engine runs it once the participant is back.
	if _, err := wf.Start(ctx, ChargeIn{Order: "r1"}, workflow.RunID("r1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the run failed", func() bool { return e.run(t, "r1").status == "failed" })
	undoDown.Store(false)
	eventually(t, 10*time.Second, "the sent undo handled", func() bool { return e.effects(t, "undo", "r1") == 1 })

	// 2. The operator retries (check would pass now, a later step fail):
	// the run is undone, its one compensation sent, so there is nothing to
	// resume. Before the fix, Retry resumed the forward steps and the
	// compensation ran again at a new seq.
	checkBroken.Store(false)
	laterBroken.Store(true)
	if err := workflow.Retry(ctx, e.db, e.schema, "r1"); !errors.Is(err, workflow.ErrRunFinished) {
		t.Errorf("Retry: %v; want ErrRunFinished", err)
		eventually(t, 10*time.Second, "the retried run ended", func() bool { return e.run(t, "r1").status != "running" })
	}
	if st := e.run(t, "r1").status; st != "failed" {
		t.Errorf("after Retry, the run is %s, want failed", st)
	}
	if n := e.effects(t, "undo", "r1"); n != 1 {
		t.Errorf("the compensation took effect %d times (charged %d times), want once: Retry deleted its \"sent\" record and ran it again under a new message id; steps now %q",
			n, e.effects(t, "charge", "r1"), e.steps(t, "r1"))
	}
}
