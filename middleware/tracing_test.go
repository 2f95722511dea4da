package middleware_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/middleware"
)

// recorder returns a tracer provider whose spans rec records (a
// SpanRecorder is a SpanProcessor: sdktrace has no WithSpanRecorder).
func recorder(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, rec
}

// remoteParent is the traceparent T of a producer span elsewhere.
const remoteParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value.AsString()
		}
	}
	return ""
}

func TestTracingConsumerSpanIsChildOfTraceparent(t *testing.T) {
	t.Parallel()
	tp, rec := recorder(t)
	msg := newMsg(routed(), envelope.KeyTraceparent, remoteParent, envelope.KeyCorrelationID, "corr-7")
	orig := msg.Context()
	var inHandler trace.SpanContext
	_, err := middleware.Tracing(tp)(func(m *message.Message) ([]*message.Message, error) {
		inHandler = trace.SpanContextFromContext(m.Context())
		return nil, nil
	})(msg)
	if err != nil {
		t.Fatal(err)
	}
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans ended, want 1", len(spans))
	}
	s := spans[0]
	if s.SpanKind() != trace.SpanKindConsumer || s.Name() != route.Topic+" process" {
		t.Errorf("span %q kind %v, want %q consumer", s.Name(), s.SpanKind(), route.Topic+" process")
	}
	if got := s.SpanContext().TraceID().String(); got != envelope.TraceID(remoteParent) {
		t.Errorf("trace id %s, want the traceparent's %s", got, envelope.TraceID(remoteParent))
	}
	if p := s.Parent(); p.SpanID().String() != remoteParent[36:52] || !p.IsRemote() {
		t.Errorf("parent %v, want the traceparent's remote span %s", p, remoteParent[36:52])
	}
	if !inHandler.Equal(s.SpanContext()) {
		t.Errorf("handler saw span %v, want the consumer span %v", inHandler, s.SpanContext())
	}
	if s.Status().Code == codes.Error {
		t.Errorf("status %v on success", s.Status())
	}
	for key, want := range map[attribute.Key]string{
		"messaging.destination.name":        route.Topic,
		"messaging.consumer.group.name":     route.Group,
		"messaging.message.id":              msg.UUID,
		"messaging.message.conversation_id": "corr-7",
		"messaging.operation.type":          "process",
	} {
		if got := attr(s, key); got != want {
			t.Errorf("attribute %s = %q, want %q", key, got, want)
		}
	}
	if msg.Context() != orig {
		t.Error("message context not restored after Tracing")
	}
}

func TestTracingWithoutTraceparentStartsATrace(t *testing.T) {
	t.Parallel()
	tp, rec := recorder(t)
	_, _ = middleware.Tracing(tp)(func(*message.Message) ([]*message.Message, error) { return nil, nil })(newMsg(routed()))
	spans := rec.Ended()
	if len(spans) != 1 || spans[0].Parent().IsValid() || !spans[0].SpanContext().IsValid() {
		t.Fatalf("spans %v, want one valid root span", spans)
	}
}

func TestTracingRecordsError(t *testing.T) {
	t.Parallel()
	tp, rec := recorder(t)
	cause := errors.New("card declined")
	_, err := middleware.Tracing(tp)(func(*message.Message) ([]*message.Message, error) {
		return nil, cause
	})(newMsg(routed(), envelope.KeyTraceparent, remoteParent))
	if !errors.Is(err, cause) {
		t.Errorf("err = %v, want the handler's", err)
	}
	s := rec.Ended()[0]
	if s.Status().Code != codes.Error || s.Status().Description != cause.Error() {
		t.Errorf("status %+v, want Error %q", s.Status(), cause)
	}
	recorded := false
	for _, ev := range s.Events() {
		if ev.Name == "exception" {
			for _, kv := range ev.Attributes {
				recorded = recorded || kv.Key == "exception.message" && kv.Value.AsString() == cause.Error()
			}
		}
	}
	if !recorded {
		t.Errorf("no exception event with the error: %v", s.Events())
	}
}

// One span per message, covering every attempt of the Retry inside it.
func TestTracingSpanCoversAllAttempts(t *testing.T) {
	t.Parallel()
	tp, rec := recorder(t)
	var ids []trace.SpanID
	c := &counter{outcome: failing(2, errTransient)}
	h := func(m *message.Message) ([]*message.Message, error) {
		ids = append(ids, trace.SpanContextFromContext(m.Context()).SpanID())
		return c.handle(m)
	}
	if _, err := middleware.Tracing(tp)(fast(3).Middleware()(h))(newMsg(routed())); err != nil {
		t.Fatal(err)
	}
	spans := rec.Ended()
	if len(spans) != 1 || len(ids) != 3 {
		t.Fatalf("%d spans for %d attempts, want 1 for 3", len(spans), len(ids))
	}
	for i, id := range ids {
		if id != spans[0].SpanContext().SpanID() {
			t.Errorf("attempt %d ran in span %s, want %s", i+1, id, spans[0].SpanContext().SpanID())
		}
	}
}

func TestInjectExtractRoundTrip(t *testing.T) {
	t.Parallel()
	tp, _ := recorder(t)
	ctx, span := tp.Tracer("test").Start(context.Background(), "producer")
	defer span.End()
	md := message.Metadata{}
	middleware.Inject(ctx, md)
	if !envelope.ValidTraceparent(md.Get(envelope.KeyTraceparent)) {
		t.Fatalf("Inject wrote traceparent %q", md.Get(envelope.KeyTraceparent))
	}
	got := trace.SpanContextFromContext(middleware.Extract(context.Background(), md))
	want := span.SpanContext()
	if got.TraceID() != want.TraceID() || got.SpanID() != want.SpanID() || got.TraceFlags() != want.TraceFlags() || !got.IsRemote() {
		t.Errorf("extracted %v, want %v (remote)", got, want)
	}

	withState := message.Metadata{envelope.KeyTraceparent: remoteParent, envelope.KeyTracestate: "vendor=abc"}
	ctx = middleware.Extract(context.Background(), withState)
	out := message.Metadata{}
	middleware.Inject(ctx, out)
	if out.Get(envelope.KeyTraceparent) != remoteParent || out.Get(envelope.KeyTracestate) != "vendor=abc" {
		t.Errorf("round trip gave %v, want %v", out, withState)
	}

	none := message.Metadata{}
	middleware.Inject(context.Background(), none)
	if len(none) != 0 {
		t.Errorf("Inject without a span wrote %v", none)
	}
	if trace.SpanContextFromContext(middleware.Extract(context.Background(), message.Metadata{envelope.KeyTraceparent: "garbage"})).IsValid() {
		t.Error("a malformed traceparent was extracted as valid")
	}
}
