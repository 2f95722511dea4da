package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// count returns how many steps of run id have kind.
func (e env) count(t testing.TB, kind string) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(`SELECT count(*) FROM "`+e.schema+`".workflow_steps WHERE kind = $1`, kind).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (e env) statuses(t testing.TB, status string) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(`SELECT count(*) FROM "`+e.schema+`".workflow_runs WHERE status = $1`, status).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A 2 s sleep survives a restart in the middle: the runs are given back
// while they sleep, another engine's runner takes them at their due time,
// replays the step before the sleep without running it again, and runs the
// step after it once, within 100 ms of the due time (p99 over 50 runs).
func TestSleepSurvivesRestartAndFiresOnTime(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	const runs = 50
	var before, after atomic.Int64
	var mu sync.Mutex
	fired := map[string]time.Time{}
	newWF := func() *workflow.Workflow[ChargeIn, Done] {
		return workflow.New("orders", "1", "nap", func(wf workflow.Context, in ChargeIn) (Done, error) {
			if _, err := workflow.Step(wf, "before", func(context.Context) (int, error) { return int(before.Add(1)), nil }); err != nil {
				return Done{}, err
			}
			if err := workflow.Sleep(wf, 2*time.Second); err != nil {
				return Done{}, err
			}
			_, err := workflow.Step(wf, "after", func(context.Context) (int, error) {
				mu.Lock()
				fired[wf.RunID()] = time.Now()
				mu.Unlock()
				return int(after.Add(1)), nil
			})
			return Done{}, err
		})
	}
	first := engine.NewService("orders", "1")
	wfA := newWF()
	if err := workflow.Register(first, e.store(), wfA); err != nil {
		t.Fatal(err)
	}
	engA, stopA := startEngine(t, bus, first)
	ctx := engine.WithEngine(t.Context(), engA)
	for i := range runs {
		if _, err := wfA.Start(ctx, ChargeIn{Order: fmt.Sprint(i)}, workflow.RunID(fmt.Sprintf("nap-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "every run asleep", func() bool { return e.count(t, "sleep") == runs })
	stopA()

	second := engine.NewService("orders", "1")
	if err := workflow.Register(second, e.store(), newWF()); err != nil {
		t.Fatal(err)
	}
	startEngine(t, bus, second)
	eventually(t, 15*time.Second, "every run completed", func() bool { return e.statuses(t, "completed") == runs })

	if b, a := before.Load(), after.Load(); b != runs || a != runs {
		t.Errorf("step before ran %d times, after %d times; want %d each", b, a, runs)
	}
	rows, err := e.db.Query(`SELECT run_id, due_at FROM "` + e.schema + `".workflow_steps WHERE kind = 'sleep'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var late []time.Duration
	mu.Lock()
	defer mu.Unlock()
	for rows.Next() {
		var id string
		var due time.Time
		if err := rows.Scan(&id, &due); err != nil {
			t.Fatal(err)
		}
		at, ok := fired[id]
		if !ok {
			t.Fatalf("run %s: the step after the sleep did not run", id)
		}
		if at.Before(due) {
			t.Errorf("run %s fired %s before its due time", id, due.Sub(at))
		}
		late = append(late, at.Sub(due))
	}
	slices.Sort(late)
	p50, p99 := late[len(late)/2], late[len(late)*99/100]
	t.Logf("sleep lateness over %d runs: p50 %s, p99 %s, max %s", len(late), p50, p99, late[len(late)-1])
	if p99 > 100*time.Millisecond {
		t.Errorf("p99 lateness %s, want at most 100 ms", p99)
	}
}

// A cancelled run (what `switchboard workflow cancel` does: cancel_requested
// and wake now) stops at its next step boundary, here while it sleeps,
// runs its compensations once, and ends cancelled; Invoke returns
// ErrCancelled.
func TestCancelCompensates(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	var after atomic.Int64
	wf := workflow.New("orders", "1", "cancellable", func(wf workflow.Context, in ChargeIn) (Done, error) {
		pay, err := workflow.Invoke(wf, Charge, in)
		if err != nil {
			return Done{}, err
		}
		workflow.OnFailure(wf, Refund, RefundIn{PaymentID: pay.PaymentID})
		if err := workflow.Sleep(wf, time.Hour); err != nil {
			return Done{}, err
		}
		after.Add(1)
		_, err = workflow.Invoke(wf, Reserve, in)
		return Done{}, err
	})
	orders := engine.NewService("orders", "1")
	if err := workflow.Register(orders, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, append(e.participants(nil), orders)...)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 30*time.Second)
	defer cancel()
	if _, err := wf.Start(ctx, ChargeIn{Order: "c1"}, workflow.RunID("c1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the run asleep", func() bool { return e.count(t, "sleep") == 1 })
	if _, err := e.db.Exec(`UPDATE "` + e.schema + `".workflow_runs SET cancel_requested = true, wake_at = now() WHERE id = 'c1'`); err != nil {
		t.Fatal(err)
	}
	_, err := wf.Invoke(ctx, ChargeIn{Order: "c1"}, workflow.RunID("c1"))
	if !errors.Is(err, workflow.ErrCancelled) {
		t.Fatalf("Invoke: %v, want ErrCancelled", err)
	}
	want := []string{"invoke payments.v1.charge", "sleep sleep", "compensate payments.v1.refund"}
	if got := e.steps(t, "c1"); !slices.Equal(got, want) {
		t.Errorf("steps %q, want %q", got, want)
	}
	if n := e.effects(t, "refund", "p-c1"); n != 1 {
		t.Errorf("refund ran %d times", n)
	}
	if n := e.effects(t, "reserve", "c1"); n != 0 || after.Load() != 0 {
		t.Errorf("the run went on after the cancel: reserve %d, after %d", n, after.Load())
	}
	if r := e.run(t, "c1"); r.status != "cancelled" {
		t.Errorf("run %+v", r)
	}
}

// A run whose code changed under it (a deploy) stops at the first step
// that differs, with an error naming it, and runs nothing more (no
// compensation).
func TestNondeterminismStopsTheRunNamingTheStep(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	var ran atomic.Int64
	v1 := workflow.New("orders", "1", "changing", func(wf workflow.Context, in ChargeIn) (Done, error) {
		if _, err := workflow.Step(wf, "weigh", func(context.Context) (int, error) { return 1, nil }); err != nil {
			return Done{}, err
		}
		return Done{}, workflow.Sleep(wf, time.Hour)
	})
	first := engine.NewService("orders", "1")
	if err := workflow.Register(first, e.store(), v1); err != nil {
		t.Fatal(err)
	}
	engA, stopA := startEngine(t, bus, first)
	if _, err := v1.Start(engine.WithEngine(t.Context(), engA), ChargeIn{Order: "n1"}, workflow.RunID("n1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the run asleep", func() bool { return e.count(t, "sleep") == 1 })
	stopA()

	v2 := workflow.New("orders", "1", "changing", func(wf workflow.Context, in ChargeIn) (Done, error) {
		_, err := workflow.Step(wf, "measure", func(context.Context) (int, error) { ran.Add(1); return 2, nil })
		return Done{}, err
	})
	second := engine.NewService("orders", "1")
	if err := workflow.Register(second, e.store(), v2); err != nil {
		t.Fatal(err)
	}
	engB, _ := startEngine(t, bus, second)
	if _, err := e.db.Exec(`UPDATE "` + e.schema + `".workflow_runs SET wake_at = now() WHERE id = 'n1'`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), engB), 30*time.Second)
	defer cancel()
	_, err := v2.Invoke(ctx, ChargeIn{Order: "n1"}, workflow.RunID("n1"))
	if !errors.Is(err, workflow.ErrNondeterministic) {
		t.Fatalf("Invoke: %v, want ErrNondeterministic", err)
	}
	for _, s := range []string{"step 1", `step "weigh"`, `step "measure"`} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("the error %q does not say %s", err, s)
		}
	}
	if ran.Load() != 0 {
		t.Error("the changed step ran")
	}
	if r := e.run(t, "n1"); r.status != "stopped" {
		t.Errorf("run %+v", r)
	}
}

// Start with a RunID is idempotent: the same id again is the same run (its
// steps ran once); the id of another workflow's run is a 409; a bad id is
// a 400.
func TestStartIsIdempotent(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	var local atomic.Int64
	wf := place("place", &local)
	other := workflow.New("orders", "1", "other", func(wf workflow.Context, in ChargeIn) (Done, error) { return Done{}, nil })
	orders := engine.NewService("orders", "1")
	if err := workflow.Register(orders, e.store(), wf, other); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, append(e.participants(nil), orders)...)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 30*time.Second)
	defer cancel()
	for range 3 {
		id, err := wf.Start(ctx, ChargeIn{Order: "i1"}, workflow.RunID("same"))
		if err != nil || id != "same" {
			t.Fatalf("Start: %q, %v", id, err)
		}
	}
	if _, err := wf.Invoke(ctx, ChargeIn{Order: "i1"}, workflow.RunID("same")); err != nil {
		t.Fatal(err)
	}
	if n := e.effects(t, "charge", "i1"); n != 1 || local.Load() != 1 {
		t.Errorf("charge ran %d times, the local step %d", n, local.Load())
	}
	if _, err := other.Start(ctx, ChargeIn{}, workflow.RunID("same")); !errors.Is(err, engine.ErrConflict) {
		t.Errorf("another workflow's run id: %v, want a 409", err)
	}
	if _, err := wf.Start(ctx, ChargeIn{}, workflow.RunID("bad\nid")); !errors.Is(err, engine.ErrInvalidInput) {
		t.Errorf("a bad run id: %v, want a 400", err)
	}
	id, err := wf.Start(ctx, ChargeIn{Order: "i2"})
	if err != nil || len(id) != 36 {
		t.Errorf("Start without RunID: %q, %v; want a UUID", id, err)
	}
}

// Register reports a missing or invalid store, a workflow of another
// service, a workflow given twice, at once.
func TestRegisterErrors(t *testing.T) {
	wf := workflow.New("orders", "1", "reg", func(wf workflow.Context, in ChargeIn) (Done, error) { return Done{}, nil })
	e := newEnv(t)
	for _, c := range []struct {
		name  string
		svc   *engine.Service
		store *workflow.Store
		wfs   []workflow.Registrable
		want  []string
	}{
		{"no store", engine.NewService("orders", "1"), nil, []workflow.Registrable{wf}, []string{"no store"}},
		{"invalid store", engine.NewService("orders", "1"), &workflow.Store{Schema: "bad schema", Concurrency: -1}, []workflow.Registrable{wf}, []string{"DB is nil", "bad schema", "Concurrency"}},
		{"wrong service", engine.NewService("orders", "2"), e.store(), []workflow.Registrable{wf}, []string{"does not belong to service orders.v2"}},
		{"twice", engine.NewService("orders", "1"), e.store(), []workflow.Registrable{wf, wf}, []string{"given twice"}},
		{"nil service", nil, e.store(), []workflow.Registrable{wf}, []string{"nil service"}},
	} {
		err := workflow.Register(c.svc, c.store, c.wfs...)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", c.name, err, w)
			}
		}
	}
}

// Await returns the correlated event's payload, whether it came before the
// run reached the Await or while the run waited (given back); past its
// deadline it returns ErrAwaitTimeout.
func TestAwait(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	wf := workflow.New("orders", "1", "ship", func(wf workflow.Context, in ChargeIn) (Shipped, error) {
		timeout := time.Hour
		if in.Amount > 0 {
			timeout = time.Duration(in.Amount) * time.Millisecond
		}
		return workflow.Await(wf, ShippedEv, in.Order, timeout)
	}, workflow.Correlate(ShippedEv, func(s Shipped) string { return s.Order }))
	orders := engine.NewService("orders", "1")
	if err := workflow.Register(orders, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, orders)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 30*time.Second)
	defer cancel()

	// The event first.
	if err := ShippedEv.Emit(ctx, Shipped{Order: "early", Carrier: "ups"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the event stored", func() bool {
		var n int
		_ = e.db.QueryRow(`SELECT count(*) FROM "` + e.schema + `".workflow_signals`).Scan(&n)
		return n == 1
	})
	out, err := wf.Invoke(ctx, ChargeIn{Order: "early"})
	if err != nil || out.Carrier != "ups" {
		t.Errorf("early: %+v, %v", out, err)
	}

	// The run first: it waits, given back, until the event.
	id, err := wf.Start(ctx, ChargeIn{Order: "late"}, workflow.RunID("late"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the run waiting", func() bool {
		var owner *string
		var awaiting *string
		_ = e.db.QueryRow(`SELECT owner, awaiting_event FROM "`+e.schema+`".workflow_runs WHERE id = $1`, id).Scan(&owner, &awaiting)
		return owner == nil && awaiting != nil
	})
	if err := ShippedEv.Emit(ctx, Shipped{Order: "late", Carrier: "dhl"}); err != nil {
		t.Fatal(err)
	}
	out, err = wf.Invoke(ctx, ChargeIn{Order: "late"}, workflow.RunID("late"))
	if err != nil || out.Carrier != "dhl" {
		t.Errorf("late: %+v, %v", out, err)
	}

	// No event.
	_, err = wf.Invoke(ctx, ChargeIn{Order: "never", Amount: 1500})
	if !errors.Is(err, workflow.ErrAwaitTimeout) {
		t.Errorf("never: %v, want ErrAwaitTimeout", err)
	}
	var we *engine.Error
	if errors.As(err, &we) && we.Code != http.StatusGatewayTimeout {
		t.Errorf("code %d", we.Code)
	}
}
