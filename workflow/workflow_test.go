package workflow_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

type PlaceOut struct {
	PaymentID string `json:"payment_id"`
	Local     int    `json:"local"`
}

// place is the order workflow of the tests: charge, reserve, a step that
// may fail (stock.fail), a local step; refund and release compensate.
func place(name string, local *atomic.Int64) *workflow.Workflow[ChargeIn, PlaceOut] {
	return workflow.New("wforders", "1", name, func(wf workflow.Context, in ChargeIn) (PlaceOut, error) {
		pay, err := workflow.Invoke(wf, Charge, in)
		if err != nil {
			return PlaceOut{}, err
		}
		workflow.OnFailure(wf, Refund, RefundIn{PaymentID: pay.PaymentID})
		if _, err := workflow.Invoke(wf, Reserve, in); err != nil {
			return PlaceOut{}, err
		}
		workflow.OnFailure(wf, Release, in)
		if _, err := workflow.Invoke(wf, Fail, in); err != nil {
			return PlaceOut{}, err
		}
		n, err := workflow.Step(wf, "local", func(context.Context) (int, error) {
			return int(local.Add(1)), nil
		})
		if err != nil {
			return PlaceOut{}, err
		}
		return PlaceOut{PaymentID: pay.PaymentID, Local: n}, nil
	})
}

// A run executes each step once, records one row per step, and Invoke
// returns its output; on every transport.
func TestRunCompletesEachStepOnce(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t)
			bus := tr.open(t)
			t.Cleanup(func() { _ = bus.Close() })
			var local atomic.Int64
			wf := place("place", &local)
			orders := engine.NewService("wforders", "1")
			if err := workflow.Register(orders, e.store(), wf); err != nil {
				t.Fatal(err)
			}
			eng, _ := startEngine(t, bus, append(e.participants(nil), orders)...)
			ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 30*time.Second)
			defer cancel()
			out, err := wf.Invoke(ctx, ChargeIn{Order: "o1", Amount: 5}, workflow.RunID("r1"))
			if err != nil {
				t.Fatal(err)
			}
			if out.PaymentID != "p-o1" || out.Local != 1 {
				t.Errorf("output %+v", out)
			}
			want := []string{"invoke wfpayments.v1.charge", "invoke wfstock.v1.reserve", "invoke wfstock.v1.fail", "step local"}
			if got := e.steps(t, "r1"); !slices.Equal(got, want) {
				t.Errorf("steps %q, want %q", got, want)
			}
			for _, k := range []string{"charge", "reserve", "fail"} {
				if n := e.effects(t, k, "o1"); n != 1 {
					t.Errorf("%s ran %d times", k, n)
				}
			}
			if r := e.run(t, "r1"); r.status != "completed" || r.claims != 1 {
				t.Errorf("run %+v", r)
			}
		})
	}
}

// A permanent failure runs the compensations registered so far in reverse
// order, once each, and the run ends failed with the step's error; a
// transient failure is retried with the same message id (the inbox makes
// it one effect).
func TestCompensationInReverseOrderOnce(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	var calls atomic.Int64
	fail := func(in ChargeIn) error {
		if calls.Add(1) < 3 {
			return &engine.Error{Code: http.StatusServiceUnavailable, Message: "flaky"} // transient, retried
		}
		return &engine.Error{Code: http.StatusUnprocessableEntity, Reason: "out_of_stock", Message: "no stock for " + in.Order}
	}
	var local atomic.Int64
	wf := place("place", &local)
	orders := engine.NewService("wforders", "1")
	if err := workflow.Register(orders, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, append(e.participants(fail), orders)...)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 30*time.Second)
	defer cancel()
	_, err := wf.Invoke(ctx, ChargeIn{Order: "o2", Amount: 5}, workflow.RunID("r2"))
	var we *engine.Error
	if !errors.As(err, &we) || we.Code != http.StatusUnprocessableEntity || we.Reason != "out_of_stock" {
		t.Fatalf("Invoke: %v, want the step's 422", err)
	}
	want := []string{"invoke wfpayments.v1.charge", "invoke wfstock.v1.reserve", "invoke wfstock.v1.fail", "compensate wfstock.v1.release", "compensate wfpayments.v1.refund"}
	if got := e.steps(t, "r2"); !slices.Equal(got, want) {
		t.Errorf("steps %q, want %q", got, want)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("stock.fail handled %d times, want 3 (two transient failures)", n)
	}
	for k, key := range map[string]string{"charge": "o2", "reserve": "o2", "release": "o2", "refund": "p-o2"} {
		if n := e.effects(t, k, key); n != 1 {
			t.Errorf("%s ran %d times", k, n)
		}
	}
	var first, second time.Time
	if err := e.db.QueryRow(`SELECT (SELECT at FROM "`+e.schema+`".effects WHERE kind = 'release'), (SELECT at FROM "`+e.schema+`".effects WHERE kind = 'refund')`).Scan(&first, &second); err != nil {
		t.Fatal(err)
	}
	if !first.Before(second) {
		t.Errorf("release at %s, refund at %s: not in reverse order", first, second)
	}
	if r := e.run(t, "r2"); r.status != "failed" || !strings.Contains(r.errJSON, "out_of_stock") {
		t.Errorf("run %+v", r)
	}
	if local.Load() != 0 {
		t.Error("the local step after the failure ran")
	}
}
