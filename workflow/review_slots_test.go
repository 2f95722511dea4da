package workflow_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// TestReviewClaimedRunWaitsForASlotUnleased: DEFECT (medium). The runner
// claims as many runs as it has free slots, then takes a slot for each:
// a Start executed here meanwhile (startHere) may take one of those slots,
// and the loop then blocks on the slot while holding a claimed run whose
// lease nobody renews (renewal starts with the execution). The lease
// expires, another instance claims and executes the run, and when a slot
// frees this runner executes it again under its stale fence: the step's
// effect happens twice (the checkpoint is refused, too late). The blocked
// loop also claims nothing else and does not see the engine stop. Fault
// injected: the claim is slowed (a trigger sleeps 1.5 s in it) so that the
// Start lands inside it.
func TestReviewClaimedRunWaitsForASlotUnleased(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	gate := make(chan struct{})
	var effectA, effectB atomic.Int64
	staleRan := make(chan struct{}, 1) // A ran the victim's step
	newWF := func(label string) *workflow.Workflow[ChargeIn, Done] {
		return workflow.New("wfrevslot", "1", "slot", func(wf workflow.Context, in ChargeIn) (Done, error) {
			_, err := workflow.Step(wf, "work", func(context.Context) (int, error) {
				switch {
				case in.Order == "blocker":
					<-gate
				case label == "A":
					effectA.Add(1)
					select {
					case staleRan <- struct{}{}:
					default:
					}
				default:
					effectB.Add(1)
				}
				return 1, nil
			})
			return Done{}, err
		})
	}
	s := `"` + e.schema + `"`
	if _, err := e.db.Exec(`CREATE FUNCTION ` + s + `.slow_claim() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.id = 'victim' AND OLD.claims = 0 AND NEW.claims = 1 THEN PERFORM pg_sleep(1.5); END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER slow_claim BEFORE UPDATE ON ` + s + `.workflow_runs FOR EACH ROW EXECUTE FUNCTION ` + s + `.slow_claim()`); err != nil {
		t.Fatal(err)
	}
	storeA := e.store()
	storeA.Concurrency = 1
	storeA.LeaseTTL = time.Second
	svcA := engine.NewService("wfrevslot", "1")
	wfA := newWF("A")
	if err := workflow.Register(svcA, storeA, wfA); err != nil {
		t.Fatal(err)
	}
	engA, _ := startEngine(t, bus, svcA)
	defer close(gate)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), engA), 20*time.Second)
	defer cancel()

	// The victim is inserted by another instance's Start: runner A claims
	// it (slowly).
	if _, err := e.db.Exec(`INSERT INTO `+s+`.workflow_runs (id, workflow, input, wake_at) VALUES ('victim', $1, '{"order":"victim","amount":0}', now())`, wfA.String()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "runner A inside its claim of the victim", func() bool {
		var n int
		_ = e.db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%SKIP LOCKED%'`).Scan(&n)
		return n == 1
	})
	// Meanwhile a Start on A takes A's only slot.
	if _, err := wfA.Start(ctx, ChargeIn{Order: "blocker"}, workflow.RunID("blocker")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the victim claimed by A", func() bool {
		var fence int
		_ = e.db.QueryRow(`SELECT fence FROM ` + s + `.workflow_runs WHERE id = 'victim'`).Scan(&fence)
		return fence == 1
	})
	// Another instance takes the victim once its lease expired.
	svcB := engine.NewService("wfrevslot", "1")
	if err := workflow.Register(svcB, e.store(), newWF("B")); err != nil {
		t.Fatal(err)
	}
	startEngine(t, bus, svcB)
	eventually(t, 10*time.Second, "B completed the victim", func() bool { return e.run(t, "victim").status == "completed" })
	// A's slot frees: A executes the victim it claimed long ago.
	gate <- struct{}{}
	eventually(t, 10*time.Second, "the blocker completed", func() bool { return e.run(t, "blocker").status == "completed" })
	// A's loop, unblocked, launches what it holds, at once: give it 2 s.
	select {
	case <-staleRan:
	case <-time.After(2 * time.Second):
	}
	if a, b := effectA.Load(), effectB.Load(); a+b != 1 {
		t.Errorf("the victim's step ran %d times (A %d under its stale fence, B %d): A held the claimed run without a lease while it waited for a slot", a+b, a, b)
	}
}
