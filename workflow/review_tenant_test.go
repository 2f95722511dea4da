package workflow_test

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// TestReviewRunIDCrossesTenants: DEFECT (medium, multi-tenant). Start's
// idempotency is keyed by the run id alone: a start with an existing id is
// "the same run" whatever its input and whoever asks, and the wait command
// returns any run's output to any caller. Run ids are caller-chosen
// (RunID("order-1") is the documented idiom), so tenant b starting
// "order-1" with its own input gets tenant a's run — and its output —
// instead of a 409: the run's captured tenant and principal (runMeta) are
// never compared with the caller's, and b's input is silently dropped.
func TestReviewRunIDCrossesTenants(t *testing.T) {
	e := newEnv(t)
	bus := inprocBus(t)
	wf := workflow.New("wfrevtenant", "1", "echo", func(wf workflow.Context, in ChargeIn) (ChargeOut, error) {
		tenant := engine.MetaFrom(wf).TenantID
		return workflow.Step(wf, "echo", func(context.Context) (ChargeOut, error) {
			return ChargeOut{PaymentID: tenant + ":" + in.Order}, nil
		})
	})
	svc := engine.NewService("wfrevtenant", "1")
	if err := workflow.Register(svc, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, svc)
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 20*time.Second)
	defer cancel()
	a := engine.WithMeta(ctx, engine.Meta{TenantID: "a", PrincipalID: "alice"})
	b := engine.WithMeta(ctx, engine.Meta{TenantID: "b", PrincipalID: "bob"})
	out, err := wf.Invoke(a, ChargeIn{Order: "a-secret-order"}, workflow.RunID("order-1"))
	if err != nil || out.PaymentID != "a:a-secret-order" {
		t.Fatalf("tenant a: %+v, %v", out, err)
	}
	out, err = wf.Invoke(b, ChargeIn{Order: "b-order"}, workflow.RunID("order-1"))
	if err == nil {
		t.Errorf("tenant b, same run id, other input: got tenant a's run output %+v, want a conflict", out)
	}
}
