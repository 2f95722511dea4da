package workflow_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// TestReviewStartLostReplyStartsTwoRuns: DEFECT (medium-high). Start picks
// the run id on the caller's side (a random UUID unless RunID), so its
// command is idempotent — but it is not declared Idempotent, so the engine
// does not retry it with the same id when the reply is late or the service
// briefly unavailable: Start fails although the run was stored and runs,
// and its id is lost to the caller. A caller that retries (the natural
// reaction to a timeout) starts a second run: every step's effect twice
// (two charges), inboxes notwithstanding, since the message ids derive
// from the run id. Fault injected: the first insert of a run is slowed past
// the call timeout (a trigger sleeps 1.5 s; CallTimeout 1 s).
func TestReviewStartLostReplyStartsTwoRuns(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	s := `"` + e.schema + `"`
	if _, err := e.db.Exec(`CREATE SEQUENCE ` + s + `.inserts;
		CREATE FUNCTION ` + s + `.slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF nextval('` + s + `.inserts') = 1 THEN PERFORM pg_sleep(1.5); END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER slow_insert BEFORE INSERT ON ` + s + `.workflow_runs FOR EACH ROW EXECUTE FUNCTION ` + s + `.slow_insert()`); err != nil {
		t.Fatal(err)
	}
	wf := workflow.New("wfrevstart", "1", "place", func(wf workflow.Context, in ChargeIn) (Done, error) {
		_, err := workflow.Invoke(wf, Charge, in)
		return Done{}, err
	})
	svc := engine.NewService("wfrevstart", "1")
	if err := workflow.Register(svc, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.Config{SharedBridge: bus, Logger: quiet(), DrainTimeout: 3 * time.Second, CallTimeout: time.Second,
		Reliability: engine.Reliability{CallBreaker: engine.BreakerPolicy{Disabled: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Register(append(e.participants(nil), svc)...); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = eng.Stop(ctx)
	})
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 20*time.Second)
	defer cancel()
	in := ChargeIn{Order: "st1", Amount: 10}
	_, err = wf.Start(ctx, in)
	if err != nil {
		// What a caller does after a timeout.
		if _, err2 := wf.Start(ctx, in); err2 != nil {
			t.Fatal(err2)
		}
	}
	// settled waits for the slowed insert to be over, the runs it leaves
	// to be stored (a commit follows the sleep by a moment: at least want
	// runs) and none to be running.
	settled := func(want int) {
		eventually(t, 10*time.Second, "the slowed insert committed and the runs completed", func() bool {
			var running, sleeping, runs int
			_ = e.db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%workflow_runs%'`).Scan(&sleeping)
			_ = e.db.QueryRow(`SELECT count(*) FILTER (WHERE status = 'running'), count(*) FROM `+s+`.workflow_runs`).Scan(&running, &runs)
			return sleeping == 0 && running == 0 && runs >= want
		})
	}
	settled(1)
	var runs int
	if err := e.db.QueryRow(`SELECT count(*) FROM ` + s + `.workflow_runs`).Scan(&runs); err != nil {
		t.Fatal(err)
	}
	if n := e.effects(t, "charge", "st1"); n != 1 || err != nil {
		t.Errorf("Start failed (%v) although its run was stored; the caller's retry started another run: %d runs, charged %d times", err, runs, n)
	}

	// StartCommand (what a gateway routes) is not retried: its empty
	// run_id is given a new id by the service at each attempt, so a retry
	// would start a second run. Its call times out, leaving one run.
	if _, err := e.db.Exec(`ALTER SEQUENCE ` + s + `.inserts RESTART`); err != nil {
		t.Fatal(err)
	}
	if _, err := wf.StartCommand().Invoke(ctx, workflow.StartRequest[ChargeIn]{Input: ChargeIn{Order: "st2", Amount: 10}}); err == nil {
		t.Error("StartCommand: no error although the insert was slowed past the call timeout")
	}
	settled(runs + 1)
	if n := e.effects(t, "charge", "st2"); n != 1 {
		t.Errorf("StartCommand with no run_id: charged %d times, want once (a timed-out call retried starts another run)", n)
	}

	// StartByName with no run id chooses it on the caller's side: retried
	// with it, like Start.
	if _, err := e.db.Exec(`ALTER SEQUENCE ` + s + `.inserts RESTART`); err != nil {
		t.Fatal(err)
	}
	_, err = workflow.StartByName(ctx, wf.String(), json.RawMessage(`{"order":"st3","amount":10}`), "")
	settled(runs + 2)
	if n := e.effects(t, "charge", "st3"); n != 1 || err != nil {
		t.Errorf("StartByName: %v; charged %d times, want once", err, n)
	}
}
