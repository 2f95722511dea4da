package engine

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
)

// A Scheduler keeps messages until they are due and then publishes them on
// the engine's bridge. Config.Scheduler sets it: outbox.Scheduler keeps
// them in PostgreSQL (durable, with any bridge); without one, an engine on
// the in-process bus keeps them in memory (lost with the process) and an
// engine on a broker refuses to schedule (ErrNoScheduler).
//
// The engine builds each scheduled message as it builds one it sends now
// (id, correlation, trace, tenant), plus the metadata key "scheduled_for"
// (RFC 3339, UTC, nanoseconds) holding its due time, which the handler
// reads as Meta.ScheduledFor. The message's id is its schedule id.
type Scheduler interface {
	// Schedule keeps msg, for topic, until at (msg's "scheduled_for"
	// holds the same time). An at in the past is due at once. The id
	// (msg.UUID) must not be scheduled already.
	Schedule(ctx context.Context, topic string, msg *message.Message, at time.Time) error
	// Cancel removes the scheduled message id. It returns an error
	// matching ErrScheduleNotFound when no such message waits: unknown,
	// cancelled, or already handed to the bridge.
	Cancel(ctx context.Context, id string) error
	// Reschedule moves the scheduled message id to at, under the same
	// terms as Cancel.
	Reschedule(ctx context.Context, id string, at time.Time) error
	// Recur declares a recurring schedule, idempotently by its name: each
	// tick of r.Spec publishes a copy of r.Msg to r.Topic, once across
	// every engine sharing the scheduler's store.
	Recur(ctx context.Context, r Recurrence) error
	// Run publishes the due messages on b until ctx ends; the engine runs
	// it from Start to Stop. Several engines may run it on one store: each
	// message is still published once (at least once if a process dies
	// between the publish and its record).
	Run(ctx context.Context, b bridge.Bridge) error
	// Durable reports whether what is scheduled survives the process.
	Durable() bool
}

// A Recurrence is a recurring schedule as a Scheduler receives it.
type Recurrence struct {
	// Name identifies the schedule across engines and restarts.
	Name string
	// Spec is a cron expression: five fields (minute hour day-of-month
	// month day-of-week), or six with seconds first, or a descriptor such
	// as "@daily"; optionally prefixed by "CRON_TZ=<IANA zone> " (default
	// UTC). internal/cronspec parses it, for the engine and every
	// Scheduler alike.
	Spec string
	// Topic is where each tick's message goes.
	Topic string
	// Msg is the message each tick publishes a copy of, with a fresh id
	// derived from Name and the tick's time, and "scheduled_for" set to
	// the tick. The engine gives it its payload and "kind" only: each tick
	// starts a conversation of its own (its handler's correlation id is the
	// tick message's id).
	Msg *message.Message
	// CatchUp is what happens to the ticks missed while no engine ran.
	CatchUp CatchUp
}

// CatchUp is a recurring schedule's policy for the ticks that passed while
// no scheduler ran.
type CatchUp int

const (
	// CatchUpOnce fires one message for all the missed ticks, at once (the
	// default).
	CatchUpOnce CatchUp = iota
	// CatchUpSkip fires none of them: the next tick is the next one due.
	CatchUpSkip
	// CatchUpAll fires one message per missed tick, in order.
	CatchUpAll
)
