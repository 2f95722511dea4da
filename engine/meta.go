package engine

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/internal/envelope"
)

// Meta is what flows with every message: ids, trace context, principal,
// tenant and deadline. Inside a handler, MetaFrom returns the Meta of the
// message being handled, and every Invoke and Emit made with the handler's
// context derives its own from it (same correlation, trace, principal,
// tenant; this message as causation; the earlier deadline).
//
// Meta is a struct with these fields (each crosses the wire as the
// message's metadata entry named in quotes):
//   - MessageID string: this message's id (Watermill's message UUID, not a
//     metadata entry).
//   - CorrelationID string: shared by every message of one conversation,
//     set once at the edge ("correlation_id").
//   - CausationID string: the id of the message that caused this one, ""
//     at the edge ("causation_id").
//   - Traceparent string: W3C trace context of this message: the trace id
//     of the conversation, a new span id per message ("traceparent").
//   - Tracestate string: W3C vendor trace state, copied unchanged; at most
//     512 bytes, a longer or malformed one is dropped ("tracestate").
//   - PrincipalID string: who the conversation acts for ("principal_id").
//   - TenantID string: whose data it concerns ("tenant_id").
//   - Deadline time.Time: after it nobody waits for the result; zero for
//     none ("deadline", RFC 3339 with nanoseconds).
//   - ScheduledFor time.Time: when a scheduled message (Command.Schedule,
//     Event.Schedule, Every) was due, in UTC, so that its handler can tell
//     how late it runs (time.Since); zero for a message sent at once, and
//     for a malformed value ("scheduled_for", RFC 3339 with nanoseconds).
//     The engine acts on nothing in it, and never copies it to the
//     messages a handler causes.
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

// Route says where the message being handled was going. The engine puts it
// in every handler's context, before any middleware runs; middleware that
// records or routes messages reads it with RouteFrom.
//
// Route is a struct with these fields:
//   - Service string: the service that handles the message,
//     "<name>.v<version>".
//   - Handler string: the command's or event's name.
//   - Group string: the consumer group the message was delivered to.
//   - Topic string: the topic it was published on.
//   - Kind string: KindCommand or KindEvent (the message carries it in
//     its "kind" metadata entry).
//   - Awaited bool: a caller waits for this message's reply (a command
//     whose "reply_to" metadata entry names a reply topic); decided before
//     any middleware runs, so a middleware editing reply_to cannot change
//     it.
type Route = envelope.Route

// Values of Route.Kind.
const (
	// KindCommand: the message is a command (Handle).
	KindCommand = envelope.KindCommand
	// KindEvent: the message is an event (Subscribe).
	KindEvent = envelope.KindEvent
)

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
	return context.WithValue(ctx, envelope.EngineKey{}, eng)
}

// EngineFrom returns the engine ctx carries — put there by WithEngine, or
// by the engine in a handler's context and a Service.Background function's
// — and false when it carries none. Packages built on the engine read its
// settings with it (package workflow bounds its drain by DrainTimeout).
func EngineFrom(ctx context.Context) (*Engine, bool) {
	e, ok := ctx.Value(envelope.EngineKey{}).(*Engine)
	return e, ok && e != nil
}

// engineFrom returns the engine ctx carries, or ErrNoEngine.
func engineFrom(ctx context.Context) (*Engine, error) {
	if e, ok := EngineFrom(ctx); ok {
		return e, nil
	}
	return nil, ErrNoEngine
}

// MaxMessageIDLen bounds an id given to WithMessageID.
const MaxMessageIDLen = 128

// WithMessageID returns ctx on which every message sent — Invoke, Send, Emit,
// Schedule — takes id as its message id instead of a fresh random one. A
// receiver using outbox.Inbox treats a message sent again with the same id
// as the same message: its handler runs once, and an awaited command's
// caller gets the first reply again. That makes a retry after a crash safe:
// durable workflows send each step's message with an id derived from the
// run and the step. Use one id for one message: two different messages
// with one id are, to an inbox, one. id must be 1 to MaxMessageIDLen
// printable ASCII characters without spaces; another is ErrInvalidInput at
// the call, and so is an Invoke while a call with the same id waits for its
// reply on the same engine.
func WithMessageID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, envelope.MessageIDKey{}, id)
}

// checkMessageID reports what is wrong with an id given to WithMessageID.
func checkMessageID(id string) error {
	if id == "" || len(id) > MaxMessageIDLen {
		return with(ErrInvalidInput, fmt.Sprintf("message id must be 1 to %d characters, got %d", MaxMessageIDLen, len(id)), nil)
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return with(ErrInvalidInput, fmt.Sprintf("message id %q: byte %d is not printable ASCII", id, i), nil)
		}
	}
	return nil
}

type publisherKey struct{}

// WithPublisher returns ctx whose Emit and Send go through pub instead of
// the engine's bridge. The transactional outbox uses it to write messages
// in the caller's database transaction (see package outbox); Invoke, which
// must wait for a reply, always uses the bridge.
func WithPublisher(ctx context.Context, pub message.Publisher) context.Context {
	return context.WithValue(ctx, publisherKey{}, pub)
}
