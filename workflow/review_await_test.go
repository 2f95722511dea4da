package workflow_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// TestReviewAwaitRaceLosesNoEvent pins a guarantee (passes on main): an
// event that arrives while its run checks for it and parks (the window
// between the Await's read and its suspend) is never lost: 60 runs whose
// events are emitted at the same time as the runs start, each Await with
// an hour's deadline, all complete with their event within seconds. A
// lost wake-up would leave a run parked until its deadline.
func TestReviewAwaitRaceLosesNoEvent(t *testing.T) {
	e := newEnv(t)
	e.db.SetMaxOpenConns(24) // 120 concurrent calls: queue for connections, not "too many clients" on a shared server
	bus := inprocBus(t)
	wf := workflow.New("wfrevawait", "1", "ship", func(wf workflow.Context, in ChargeIn) (Shipped, error) {
		if _, err := workflow.Step(wf, "before", func(context.Context) (int, error) { return in.Amount, nil }); err != nil {
			return Shipped{}, err
		}
		return workflow.Await(wf, ShippedEv, in.Order, time.Hour)
	}, workflow.Correlate(ShippedEv, func(s Shipped) string { return s.Order }))
	svc := engine.NewService("wfrevawait", "1")
	store := e.store()
	store.Concurrency = 4 // most runs are claimed, not started here
	if err := workflow.Register(svc, store, wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, svc)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 20*time.Second)
	defer cancel()
	const runs = 60
	var wg sync.WaitGroup
	errs := make(chan error, 2*runs)
	for i := range runs {
		order := fmt.Sprintf("aw-%02d", i)
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := wf.Start(ctx, ChargeIn{Order: order, Amount: i}, workflow.RunID(order)); err != nil {
				errs <- fmt.Errorf("start %s: %w", order, err)
			}
		}()
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i%7) * 3 * time.Millisecond) // spread the events over the runs' progress
			if err := ShippedEv.Emit(ctx, Shipped{Order: order, Carrier: "c-" + order}); err != nil {
				errs <- fmt.Errorf("emit %s: %w", order, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	for i := range runs {
		order := fmt.Sprintf("aw-%02d", i)
		out, err := wf.Invoke(ctx, ChargeIn{Order: order, Amount: i}, workflow.RunID(order))
		if err != nil || out.Carrier != "c-"+order {
			t.Fatalf("run %s: %+v, %v (an event lost between the check and the park leaves the run parked for an hour)", order, out, err)
		}
	}
}
