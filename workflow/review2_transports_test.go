package workflow_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	_ "github.com/switchboard-go/switchboard/bridge/amqp"     // amqp:// for the review runs
	_ "github.com/switchboard-go/switchboard/bridge/postgres" // postgres:// for the review runs
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/workflow"
)

var wfr2ShippedEv = engine.NewEvent[Shipped]("wfr2.shipped")

// review2Transports are the four transports the package claims to run on.
func review2Transports(e env) []struct {
	name string
	open func(t testing.TB) bridge.Bridge
} {
	open := func(t testing.TB, raw string) bridge.Bridge {
		b, err := bridge.Open(context.Background(), raw)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	return []struct {
		name string
		open func(t testing.TB) bridge.Bridge
	}{
		{"inproc", func(t testing.TB) bridge.Bridge { return inprocBus(t) }},
		{"nats", func(t testing.TB) bridge.Bridge { return open(t, testenv.URL(t, testenv.NATS)) }},
		{"amqp", func(t testing.TB) bridge.Bridge { return open(t, testenv.URL(t, testenv.AMQP)) }},
		{"postgres", func(t testing.TB) bridge.Bridge {
			return open(t, testenv.URL(t, testenv.Postgres)+"&schema="+e.schema)
		}},
	}
}

// TestReview2EveryTransport: the documented steps on each of the four
// transports: Invoke, an event emitted before the run reaches its Await,
// a Sleep that gives the run back, a permanent failure that compensates,
// and a cancel of a run waiting at an Await.
func TestReview2EveryTransport(t *testing.T) {
	e0 := newEnv(t)
	for _, tr := range review2Transports(e0) {
		t.Run(tr.name, func(t *testing.T) {
			e := e0
			if tr.name != "postgres" {
				e = newEnv(t)
			}
			bus := tr.open(t)
			svcName := "wfr2tr" + tr.name
			wf := workflow.New(svcName, "1", "ship", func(wf workflow.Context, in ChargeIn) (Shipped, error) {
				pay, err := workflow.Invoke(wf, Charge, in)
				if err != nil {
					return Shipped{}, err
				}
				workflow.OnFailure(wf, Refund, RefundIn{PaymentID: pay.PaymentID})
				if in.Amount < 0 {
					if _, err := workflow.Invoke(wf, Fail, in); err != nil {
						return Shipped{}, err
					}
				}
				if err := workflow.Sleep(wf, 1100*time.Millisecond); err != nil {
					return Shipped{}, err
				}
				return workflow.Await(wf, wfr2ShippedEv, in.Order, time.Hour)
			}, workflow.Correlate(wfr2ShippedEv, func(s Shipped) string { return s.Order }))
			svc := engine.NewService(svcName, "1")
			if err := workflow.Register(svc, e.store(), wf); err != nil {
				t.Fatal(err)
			}
			eng, _ := startEngine(t, bus, append(e.participants(func(ChargeIn) error {
				return &engine.Error{Code: http.StatusUnprocessableEntity, Reason: "no_stock", Message: "no stock"}
			}), svc)...)
			ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 18*time.Second)
			defer cancel()
			// The event comes first.
			time.Sleep(200 * time.Millisecond) // let the subscriptions settle on the brokers
			if err := wfr2ShippedEv.Emit(ctx, Shipped{Order: "o1", Carrier: "dhl"}); err != nil {
				t.Fatal(err)
			}
			out, err := wf.Invoke(ctx, ChargeIn{Order: "o1", Amount: 1}, workflow.RunID("r1"))
			if err != nil || out.Carrier != "dhl" {
				t.Errorf("run r1: %+v, %v", out, err)
			}
			// A permanent failure: the participant's error, compensated.
			_, err = wf.Invoke(ctx, ChargeIn{Order: "o2", Amount: -1}, workflow.RunID("r2"))
			var we *engine.Error
			if !errors.As(err, &we) || we.Code != http.StatusUnprocessableEntity || we.Reason != "no_stock" {
				t.Errorf("run r2: %v, want the participant's 422", err)
			}
			if n := e.effects(t, "refund", "p-o2"); n != 1 {
				t.Errorf("r2: refund ran %d times", n)
			}
			// A cancel of a run waiting at its Await.
			if _, err := wf.Start(ctx, ChargeIn{Order: "o3", Amount: 1}, workflow.RunID("r3")); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "r3 awaits", func() bool {
				return slices.Contains(e.steps(t, "r3"), "await wfr2.shipped/o3")
			})
			if err := workflow.Cancel(ctx, e.db, e.schema, "r3"); err != nil {
				t.Fatal(err)
			}
			if _, err := wf.Invoke(ctx, ChargeIn{Order: "o3", Amount: 1}, workflow.RunID("r3")); !errors.Is(err, workflow.ErrCancelled) {
				t.Errorf("run r3: %v, want ErrCancelled", err)
			}
			if n := e.effects(t, "refund", "p-o3"); n != 1 {
				t.Errorf("r3: refund ran %d times", n)
			}
		})
	}
}
