package workflow_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// A claim slower than the lease returns a lease that has lapsed already
// (it runs from the claim statement's start): another runner may take the
// run at once. The runner renews such a claim's leases before executing
// them, so that the run's step runs once. Fault injected: the first claim
// of the run is slowed past LeaseTTL (a trigger sleeps 1.5 s in it, the
// lease is 1 s), and a second runner polls every 50 ms meanwhile.
func TestSlowClaimRenewsItsLeasesBeforeExecuting(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	var effects atomic.Int64
	wf := workflow.New("wfslowclaim", "1", "slow", func(wf workflow.Context, in ChargeIn) (Done, error) {
		_, err := workflow.Step(wf, "work", func(context.Context) (int, error) {
			effects.Add(1)
			time.Sleep(500 * time.Millisecond) // the step's work: another runner would take the run meanwhile
			return 1, nil
		})
		return Done{}, err
	})
	s := `"` + e.schema + `"`
	if _, err := e.db.Exec(`CREATE FUNCTION ` + s + `.slow_claim() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.id = 'slow' AND OLD.claims = 0 AND NEW.claims = 1 THEN PERFORM pg_sleep(1.5); END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER slow_claim BEFORE UPDATE ON ` + s + `.workflow_runs FOR EACH ROW EXECUTE FUNCTION ` + s + `.slow_claim()`); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		store := e.store()
		store.LeaseTTL = time.Second
		store.PollInterval = 50 * time.Millisecond
		svc := engine.NewService("wfslowclaim", "1")
		if err := workflow.Register(svc, store, wf); err != nil {
			t.Fatal(err)
		}
		startEngine(t, bus, svc)
	}
	if _, err := e.db.Exec(`INSERT INTO `+s+`.workflow_runs (id, workflow, input, wake_at) VALUES ('slow', $1, '{"order":"slow","amount":0}', now())`, wf.String()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the run completed", func() bool { return e.run(t, "slow").status == "completed" })
	// A second execution would have begun within a poll of the slow
	// claim's end, before the first one's step ended.
	if n := effects.Load(); n != 1 {
		t.Errorf("the step ran %d times: the slow claim's lapsed lease let another runner take the run", n)
	}
}
