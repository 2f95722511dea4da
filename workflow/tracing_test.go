package workflow_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// Each step executed has a span, in the trace of the call that started the
// run, parent of the messages the step sends.
func TestStepSpansJoinTheRunsTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(prev)
		_ = tp.Shutdown(context.Background())
	})
	e := newEnv(t)
	bus := inprocBus(t)
	var local atomic.Int64
	wf := place("traced", &local)
	orders := engine.NewService("wforders", "1")
	if err := workflow.Register(orders, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, bus, append(e.participants(nil), orders)...)
	ctx, root := tp.Tracer("test").Start(engine.WithEngine(t.Context(), eng), "caller")
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := wf.Invoke(ctx, ChargeIn{Order: "t1"}, workflow.RunID("t1")); err != nil {
		t.Fatal(err)
	}
	root.End()
	steps := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() != root.SpanContext().TraceID() {
			continue
		}
		steps[s.Name()] = s
	}
	for _, name := range []string{"workflow invoke wfpayments.v1.charge", "workflow invoke wfstock.v1.reserve", "workflow invoke wfstock.v1.fail", "workflow step local"} {
		if steps[name] == nil {
			t.Errorf("no span %q in the caller's trace", name)
		}
	}
	charge, publish := steps["workflow invoke wfpayments.v1.charge"], steps["wfpayments.v1.charge publish"]
	if charge == nil || publish == nil || publish.Parent().SpanID() != charge.SpanContext().SpanID() {
		t.Errorf("the charge message's span is not a child of its step's span")
	}
}
