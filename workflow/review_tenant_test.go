package workflow_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
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
	var we *engine.Error
	if !errors.As(err, &we) || we.Code != http.StatusConflict || we.Reason != "run_id_taken" || strings.Contains(we.Message, "wfrevtenant") {
		t.Errorf("tenant b, same run id, other input: %+v, %v; want a 409 run_id_taken that does not say whose run it is", out, err)
	}
	// The same tenant again is the same run.
	if out, err := wf.Invoke(a, ChargeIn{Order: "a-secret-order"}, workflow.RunID("order-1")); err != nil || out.PaymentID != "a:a-secret-order" {
		t.Errorf("tenant a again: %+v, %v", out, err)
	}
	// The wait command ("wf-<name>-wait", see the package documentation)
	// does not show another tenant's run.
	type waitIn struct {
		RunID string `json:"run_id"`
	}
	wait := engine.NewCommand[waitIn, json.RawMessage]("wfrevtenant", "1", "wf-echo-wait")
	if res, err := wait.Invoke(b, waitIn{RunID: "order-1"}); !errors.Is(err, workflow.ErrRunNotFound) {
		t.Errorf("tenant b waits on tenant a's run: %s, %v; want ErrRunNotFound", res, err)
	}
	if res, err := wait.Invoke(a, waitIn{RunID: "order-1"}); err != nil || !strings.Contains(string(res), "a-secret-order") {
		t.Errorf("tenant a waits on its run: %s, %v", res, err)
	}
}
