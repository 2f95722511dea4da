package middleware

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-go/switchboard/internal/envelope"
)

// TracerName is the instrumentation name of Switchboard's spans.
const TracerName = "github.com/switchboard-go/switchboard"

var propagator = propagation.TraceContext{}

// metadataCarrier adapts message metadata to OpenTelemetry's propagation.
type metadataCarrier message.Metadata

func (c metadataCarrier) Get(key string) string { return c[key] }
func (c metadataCarrier) Set(key, value string) { c[key] = value }
func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Extract returns ctx with the remote span context found in metadata
// (traceparent, tracestate). A tracestate Switchboard does not propagate
// (longer than 512 bytes, W3C's propagation limit, or malformed) is
// ignored, so no span and no message caused by this one carries it.
func Extract(ctx context.Context, md message.Metadata) context.Context {
	if ts, ok := md[envelope.KeyTracestate]; ok && !envelope.ValidTracestate(ts) {
		md = message.Metadata{envelope.KeyTraceparent: md[envelope.KeyTraceparent]}
	}
	return propagator.Extract(ctx, metadataCarrier(md))
}

// Inject writes the span context of ctx into metadata (traceparent,
// tracestate). It does nothing when ctx has no valid span context. A
// tracestate Switchboard does not propagate (see Extract) is left out.
func Inject(ctx context.Context, md message.Metadata) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	propagator.Inject(ctx, metadataCarrier(md))
	if ts, ok := md[envelope.KeyTracestate]; ok && !envelope.ValidTracestate(ts) {
		delete(md, envelope.KeyTracestate)
	}
}

// Tracing starts a consumer span for every handled message, as a child of
// the message's traceparent, on tp's tracer; the handler (and every message
// it produces through the engine) runs inside it. With the OpenTelemetry
// no-op provider it costs almost nothing and the engine still propagates
// traceparent itself.
func Tracing(tp trace.TracerProvider) message.HandlerMiddleware {
	tracer := tp.Tracer(TracerName)
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			route, _ := envelope.RouteFrom(msg.Context())
			ctx := Extract(msg.Context(), msg.Metadata)
			ctx, span := tracer.Start(ctx, route.Topic+" process", trace.WithSpanKind(trace.SpanKindConsumer))
			if span.IsRecording() { // attributes cost allocations: only for a real tracer
				span.SetAttributes(
					attribute.String("messaging.system", "switchboard"),
					attribute.String("messaging.operation.type", "process"),
					attribute.String("messaging.destination.name", route.Topic),
					attribute.String("messaging.consumer.group.name", route.Group),
					attribute.String("messaging.message.id", msg.UUID),
					attribute.String("messaging.message.conversation_id", msg.Metadata.Get(envelope.KeyCorrelationID)),
				)
			}
			defer span.End()
			orig := msg.Context()
			msg.SetContext(ctx)
			defer msg.SetContext(orig)
			out, err := h(msg)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return out, err
		}
	}
}
