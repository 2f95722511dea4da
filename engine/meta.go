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

type publisherKey struct{}

// WithPublisher returns ctx whose Emit and Send go through pub instead of
// the engine's bridge. The transactional outbox uses it to write messages
// in the caller's database transaction (see package outbox); Invoke, which
// must wait for a reply, always uses the bridge.
func WithPublisher(ctx context.Context, pub message.Publisher) context.Context {
	return context.WithValue(ctx, publisherKey{}, pub)
}
