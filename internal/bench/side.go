package main

import (
	"context"
	"time"
)

// A side builds each workload's topology on one backend: once through
// Switchboard (sbSide), once through hand-written Watermill (rawSide). Every
// call gets a namespace, unique in the run, for its topics, services and
// consumer groups, so that nothing durable from another figure or an
// earlier run interferes.
type side interface {
	// commands starts an echo service and, for 2 hops, a front service whose
	// handler calls echo (the seed's user → email call); the rig's op is one
	// round trip to the first of them.
	commands(ctx context.Context, ns string, hops int) (*rig, error)
	// events starts groups subscribing services (1 or 2), each reporting
	// every event it handles to deliver (consumer 0 or 1); the rig's op
	// publishes one event.
	events(ctx context.Context, ns string, groups int, deliver func(consumer int, id string)) (*rig, error)
	// publisher creates the event's two subscribing groups (where the
	// backend stores messages for a group whose consumers are away), stops
	// their consumers, and returns a rig whose op publishes one event.
	publisher(ctx context.Context, ns string) (*rig, error)
	// outbox starts a service subscribing to an event, written to the
	// outbox in a transaction and forwarded by the relay to an in-process
	// bus (local) or to the backend, the service reporting every event it
	// handles to deliver. Without PostgreSQL (or on the in-process backend
	// when not local) it returns errSkip.
	outbox(ctx context.Context, ns string, local bool, deliver func(id string)) (*outboxRig, error)
	// scheduled starts a service subscribing to an event that is scheduled
	// in PostgreSQL, reporting every event it handles to deliver. Without
	// PostgreSQL it returns errSkip.
	scheduled(ctx context.Context, ns string, deliver func(id string)) (*scheduleRig, error)
}

// outboxRig is a running outbox topology.
type outboxRig struct {
	// commit writes one business row and the event of newItem(seq) in one
	// transaction and commits; it returns when Commit returned.
	commit func(ctx context.Context, seq int64) (committed time.Time, err error)
	close  func() error
}

// rig is a running topology.
type rig struct {
	op    call
	timed timedCall // set instead of op when the op times itself
	close func() error
}

// timedOp returns the rig's operation, timing op when it does not time itself.
func (r *rig) timedOp() timedCall {
	if r.timed != nil {
		return r.timed
	}
	return func(ctx context.Context, seq int64) (time.Duration, error) {
		t0 := time.Now()
		err := r.op(ctx, seq)
		return time.Since(t0), err
	}
}
