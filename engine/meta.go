package engine

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/internal/envelope"
)

// Meta is what flows with every message: ids, trace context, principal,
// tenant and deadline. Inside a handler, MetaFrom returns the Meta of the
// message being handled, and every Invoke and Emit made with the handler's
// context derives its own from it (same correlation, trace, principal,
// tenant; this message as causation; the earlier deadline).
//
// PrincipalID and TenantID are claims, not proofs: see the package
// documentation, "What flows with every message".
type Meta = envelope.Meta

// MetaFrom returns the Meta in ctx (zero outside a handler unless WithMeta
// set one).
func MetaFrom(ctx context.Context) Meta {
	m, _ := envelope.MetaFrom(ctx)
	return m
}

// WithMeta returns ctx carrying m. Use it at the edge of the system (an HTTP
// handler, a job) to start a conversation with a known correlation id,
// traceparent, principal or tenant; fields left empty are generated (ids,
// trace) or stay empty (principal, tenant).
func WithMeta(ctx context.Context, m Meta) context.Context {
	return envelope.WithMeta(ctx, m)
}

// Route says where the message being handled was going: the service and
// handler it reached, the consumer group, the topic, its kind ("command" or
// "event") and whether a caller waits for its reply. The engine puts it in
// every handler's context, before any middleware runs; middleware that
// records or routes messages reads it with RouteFrom.
type Route = envelope.Route

// RouteFrom returns the Route of the message being handled in ctx, and
// false outside a handler.
func RouteFrom(ctx context.Context) (Route, bool) {
	return envelope.RouteFrom(ctx)
}

// TraceID returns the trace id (32 lower-case hex digits) of a W3C
// traceparent such as Meta.Traceparent, or "" when traceparent is not a
// valid one. Logs and stored records use it to point at the trace.
func TraceID(traceparent string) string {
	return envelope.TraceID(traceparent)
}

// WithEngine returns ctx carrying eng, for Invoke, Send and Emit from
// outside any handler (a main, a test, an HTTP handler). A handler's
// context carries its engine already.
func WithEngine(ctx context.Context, eng *Engine) context.Context {
	return context.WithValue(ctx, engineKey{}, eng)
}

type engineKey struct{}

// engineFrom returns the engine ctx carries, or ErrNoEngine.
func engineFrom(ctx context.Context) (*Engine, error) {
	if e, ok := ctx.Value(engineKey{}).(*Engine); ok && e != nil {
		return e, nil
	}
	return nil, ErrNoEngine
}

type publisherKey struct{}

// WithPublisher returns ctx whose Emit and Send go through pub instead of
// the engine's bridge. The transactional outbox uses it to write messages
// in the caller's database transaction (see package outbox); Invoke, which
// must wait for a reply, always uses the bridge.
func WithPublisher(ctx context.Context, pub message.Publisher) context.Context {
	return context.WithValue(ctx, publisherKey{}, pub)
}
