package engine

import (
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/switchboard-go/switchboard/middleware"
)

// initialProvider is what otel.GetTracerProvider returns before the program
// sets a provider: OpenTelemetry's global delegating provider, whose spans
// record nothing until otel.SetTracerProvider gives it a real provider to
// delegate to (otel.GetTracerProvider returns that one from then on).
// initialIsDelegating is false if a package's init set a provider before
// ours ran: then nothing is known about it.
var (
	initialProvider     = otel.GetTracerProvider()
	initialIsDelegating = fmt.Sprintf("%T", initialProvider) == "*global.tracerProvider"
)

// tracerKind says what Config.TracerProvider is, for tracingOff.
type tracerKind int

const (
	tracerReal       tracerKind = iota // anything else: spans may record
	tracerNoop                         // noop.TracerProvider
	tracerDelegating                   // the initial global provider
)

func kindOfTracer(tp trace.TracerProvider) tracerKind {
	if _, ok := tp.(noop.TracerProvider); ok {
		return tracerNoop
	}
	// Interfaces of different dynamic types compare unequal without
	// looking at the values: a provider of a type that is not comparable
	// cannot panic here.
	if initialIsDelegating && tp == initialProvider {
		return tracerDelegating
	}
	return tracerReal
}

// tracingOff reports whether the engine's spans would record nothing now:
// its provider is the no-op one, or the global one while the program has
// set none. Then no span is started at all: on the default configuration
// starting one cost allocations on every message and recorded nothing.
// (OpenTelemetry's eBPF auto-instrumentation, which hooks the global
// provider's span creation, sees no spans then: set a provider to trace.)
func (e *Engine) tracingOff() bool {
	switch e.tracerKind {
	case tracerNoop:
		return true
	case tracerDelegating:
		return otel.GetTracerProvider() == initialProvider
	}
	return false
}

// traced is tracing, the consumer-span middleware (middleware.Tracing),
// skipped when tracingOff. The handler's context then carries the
// message's trace context as a remote span context, as the no-op span
// would have, so that trace.SpanContextFromContext sees the same in a
// handler either way.
func (e *Engine) traced(tracing message.HandlerMiddleware) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		withSpan := tracing(h)
		return func(msg *message.Message) ([]*message.Message, error) {
			if !e.tracingOff() {
				return withSpan(msg)
			}
			orig := msg.Context()
			msg.SetContext(middleware.Extract(orig, msg.Metadata))
			defer msg.SetContext(orig)
			return h(msg)
		}
	}
}
