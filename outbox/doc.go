// Package outbox makes PostgreSQL deployments reliable: a service writes its
// business rows and the messages they cause in ONE transaction, a relay
// forwards those messages to the broker right after commit, and an inbox on
// the receiving side gives every message an exactly-once effect.
//
// # Transactional publish
//
//	tx, _ := db.BeginTx(ctx, nil)
//	ctx = outbox.WithTx(ctx, tx, outbox.DefaultSchema)    // or WithPgxTx for a pgx.Tx
//	_, _ = tx.ExecContext(ctx, `INSERT INTO orders …`)
//	_ = OrderPlaced.Emit(ctx, order)                      // a row in the outbox, same tx
//	_ = tx.Commit()                                       // both, or (Rollback) neither
//
// Emit and Send (fire-and-forget commands) on such a context write to the
// outbox table through Watermill's SQL transaction adapters; Invoke, which
// waits for a reply, never does. A rollback leaves nothing; a commit makes
// the messages deliverable and notifies the relay.
//
// # Relay
//
// Relay.Run forwards outbox rows to a bridge (NATS, RabbitMQ, or PostgreSQL
// itself). Several relays may run: one leads and forwards, the others wait
// to take over. Leadership is a lease in the outbox_leader table, not a
// session lock: the leader renews it every LeaseTTL/3 and every statement
// it sends has a deadline of LeaseTTL/3, so a leader whose connection
// freezes (no reset: the server still sees a live session) notices within
// 2/3 LeaseTTL, stops forwarding, and never resumes without taking the
// lease again. A standby takes the lease when it expired, or at once when
// the session that last renewed it has ended (a relay killed or cut off).
// With the defaults a standby forwards within MaxTakeover (21 s) of the
// leader's death or freeze. The leader trusts its lease only until 2/3
// LeaseTTL after it sent the last renewal, and starts no publish after
// that, so a frozen leader stops at least LeaseTTL/3 before its successor
// may start (the margin for a publish in flight). A leader whose session
// was cut may finish the batch it is publishing while the standby starts:
// its rows are then forwarded twice, which at-least-once allows. Relays of
// releases before migration 6 took an advisory lock instead: stop them
// before starting these.
//
// The leader wakes on the commit notification (LISTEN) and sweeps every
// PollInterval in case one was missed. It forwards in id order, so messages
// of one topic written one after another arrive in that order.
//
// # Refused messages
//
// When the target refuses a row, the relay decides by the error:
//
//   - The target is unreachable (bridge.ErrUnreachable, ErrClosed): no row
//     is to blame; the round stops and is tried again after LeaderPoll.
//   - An event nobody subscribes to has nobody to reach: it is done.
//   - A reason that can pass — a command whose service has no consumer
//     (not yet, or any more: a retired version), any other broker error:
//     the row is retried after RetryBackoff, doubling with each attempt up
//     to MaxRetryBackoff. It holds back the later rows of its own topic, so
//     the order within a topic is kept; every other topic goes on.
//   - A reason that cannot pass, the message itself (NATS max_payload,
//     which counts headers, so an event within the engine's payload limit
//     may exceed it): the row is parked. It is not retried, and it holds
//     back nothing: later rows of its topic go on, since waiting for a
//     message that can never be delivered would stop the topic for good.
//
// Every refusal is logged and recorded on the row (attempts, last_error).
// Stats and the gauges of RegisterMetrics count the rows waiting for a
// retry and the parked ones; ListFailed and `switchboard outbox failed`
// show them; Retry and `switchboard outbox retry` make them deliverable at
// once (a parked message refused again is parked again).
//
// A crash between a publish and the row's update forwards the message again
// (at-least-once: the inbox makes it harmless). Forwarded rows are deleted
// after Retention.
//
// # Inbox
//
// Inbox.Middleware runs a handler inside a transaction that first records
// the message (its id and topic) for the handler's consumer group: a
// message already recorded is acknowledged without running the handler
// again, and the handler's output stored with the record — an awaited
// command's reply — is returned again, so a caller whose first reply was
// lost (a crash between the commit and the reply) gets the same answer. The
// handler gets the transaction with TxFrom(ctx) for its own writes, and
// whatever it emits goes to the outbox in the same transaction, so the
// handler's effects, its inbox row, its reply and the messages it causes
// commit or roll back together. PurgeInbox removes rows older than the
// redelivery window.
//
// # Scheduled messages
//
// A scheduled message is an outbox row with a due time (deliver_at): one
// table, one timer and one leader serve it and the immediate rows. A
// message whose metadata holds "scheduled_for" (RFC 3339, as the engine
// sets it) is written with that due time, so Emit or Send on a WithTx
// context schedules it in the caller's transaction; Scheduler, an
// engine.Scheduler, writes it on its own connection pool and cancels
// (Cancel, `switchboard schedule cancel`) or moves (Reschedule) it while it
// waits. ListScheduled and `switchboard schedule list` show what waits.
//
// The leading relay forwards the due rows, the first due first, after the
// immediate ones; a row not due yet is never read and holds back nothing.
// It sleeps until the next due time (on the database's clock), a commit
// notification, or PollInterval, whichever comes first, so a message is
// forwarded within milliseconds of its due time, never before it. A
// scheduled row the target refuses is retried or parked as any other.
//
// A recurring schedule (Scheduler.Recur, table outbox_recurring) is
// declared by name, idempotently: every engine declares it at start and
// nothing changes unless its spec, topic, message or catch-up policy does.
// The leading relay writes each due tick as a scheduled row, with an id
// derived from the name and the tick (TickID), and advances the schedule's
// next tick in the same transaction, so each tick is written once whichever
// relay leads. Ticks that passed while no relay ran (more than MissedAfter
// late) follow the schedule's catch-up policy: engine.CatchUpOnce (the
// default) writes one message, for the first missed tick, for all of them;
// engine.CatchUpSkip writes none; engine.CatchUpAll writes one per missed
// tick, at most 1,000 per schedule and round (the rest in the next rounds).
//
// What survives what: everything scheduled or declared is in PostgreSQL
// and survives any process, relay or engine restart. A relay killed
// between publishing a batch and marking it forwards that batch again
// (at-least-once, as for immediate rows); no message is lost. A message
// cancelled or rescheduled while the relay is publishing it is locked: the
// Cancel or Reschedule waits for the publish and then fails with
// engine.ErrScheduleNotFound (a relay killed meanwhile releases the lock:
// the call then succeeds, and the message may have been published once).
//
// Tables come from package migrations (versions 3, 4, 6 and 7).
//
// # Upgrading to migration 6
//
// Migration 6 keeps what earlier releases wrote: their outbox rows are
// forwarded, and their inbox rows (recorded without a topic) still mark a
// message as processed, whatever its topic. The reverse does not hold: the
// Inbox of a release before migration 6 does not see the rows this one
// records, so a message processed by an upgraded instance and redelivered
// to one not yet upgraded runs again. Stop the consumers of earlier
// releases that use the Inbox before starting upgraded ones, as for the
// relays, rather than upgrading them one at a time.
//
// # Upgrading to migration 7
//
// A relay of this release needs migration 7 (deliver_at, outbox_recurring)
// and ends its session, logging why, until it is applied. A relay of an
// earlier release keeps forwarding immediate rows after it, but knows
// nothing of due times: it would forward a scheduled message at once. Stop
// the relays of earlier releases before anything is scheduled.
package outbox
