// Package outbox makes PostgreSQL deployments reliable: a service writes its
// business rows and the messages they cause in ONE transaction, a relay
// forwards those messages to the broker right after commit, and an inbox on
// the receiving side gives every message an exactly-once effect.
//
// # Transactional publish
//
//	tx, _ := db.BeginTx(ctx, nil)
//	ctx := outbox.WithTx(ctx, tx, outbox.DefaultSchema)   // or WithPgxTx for a pgx.Tx
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
// itself). Several relays may run: one holds a PostgreSQL advisory lock and
// forwards, the others wait to take over; when the leader dies its session
// ends, the lock is released and another relay continues within
// Relay.LeaderPoll. The leader wakes on the commit notification (LISTEN) and
// sweeps every PollInterval in case one was missed. It forwards in id order,
// stopping at the first failed publish, so messages of one topic written one
// after another arrive in that order. An event nobody subscribes to is done;
// a command whose service has never subscribed on the broker waits (the
// relay retries and logs it), because dropping it would lose a committed
// message. A crash between a publish and the
// row's update forwards the message again (at-least-once: the inbox makes
// it harmless). Forwarded rows are deleted after Retention. Stats reports
// the backlog and the age of the oldest waiting row.
//
// # Inbox
//
// Inbox.Middleware runs a handler inside a transaction that first records
// the message id for the handler's consumer group: a message already
// recorded is acknowledged without running the handler again. The handler
// gets the transaction with TxFrom(ctx) for its own writes, and whatever it
// emits goes to the outbox in the same transaction, so the handler's
// effects, its inbox row and the messages it causes commit or roll back
// together. PurgeInbox removes rows older than the redelivery window.
//
// Tables come from package migrations (versions 3 and 4).
package outbox
