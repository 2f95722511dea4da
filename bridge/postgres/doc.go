// Package postgres is the PostgreSQL backend: the database is the broker.
// Import it for its side effect; it registers the "postgres" and
// "postgresql" schemes:
//
//	import _ "github.com/switchboard-go/switchboard/bridge/postgres"
//	b, err := bridge.Open(ctx, "postgres://app:secret@db:5432/app?sslmode=require&schema=switchboard")
//
// # URL
//
// The URL is a standard libpq/pgx connection URL. This package reads four
// query parameters of its own and removes them before the URL reaches pgx:
//
//	schema         PostgreSQL schema for the bridge's tables     default "switchboard"
//	               ([A-Za-z_][A-Za-z0-9_]*, at most 63 bytes; always quoted in SQL;
//	               also the name of the NOTIFY channel)
//	poll_interval  fallback poll, see "Wake-ups"                 default 2s  (10ms to 24h)
//	ack_deadline   lease of a delivered, unacked message         default 30s (100ms to 24h)
//	prefetch       rows a subscription holds beyond its          default 16  (0 to 10000)
//	               Concurrency, claimed ahead and handed out in
//	               order as handlers finish (0: none)
//
// Two parameters are refused with bridge.ErrBadURL naming them:
// connect_timeout (libpq's: opening is bounded by the context given to
// bridge.Open, every connection attempt by DialTimeout, 5 s, and
// PGCONNECT_TIMEOUT is not read either) and nack_delay (a nacked message
// comes back after the delay it asks for, bridge.NackDelayKey, or
// bridge.DefaultNackDelay).
//
// Invalid values fail Open with an error wrapping bridge.ErrBadURL that
// names every parameter in error at once (a value is not quoted when the
// name suggests a secret). Every other parameter belongs to pgx: libpq keywords
// (sslmode, application_name, …), pgxpool's pool_* settings
// (pool_max_conns defaults to the greater of 4 and runtime.NumCPU()), and anything
// else, which pgx sends to the server as a run-time parameter (search_path,
// statement_timeout, …). We do not keep a list of pgx's names: our three are
// the only ones we take, so a misspelt one of ours reaches the server, which
// refuses the unknown setting at connect; Open reports that as
// bridge.ErrBadURL with the server's message naming the parameter.
//
// Opening is bounded by the context given to bridge.Open (DialTimeout plus
// 15 s when it has no deadline), each connection attempt by DialTimeout.
// Open fails within that time, with an error wrapping bridge.ErrUnreachable
// that names the backend and the redacted URL, when the server is down or
// unknown, the credentials are wrong, or the database does not exist. Open creates the tables when they are missing
// (see Tables).
//
// # Why not watermill-sql's subscriber
//
// The project rule is to use what Watermill does well and fix what it does
// badly in our layer. watermill-sql v4 publishes well but subscribes badly for
// a request/response bus:
//
//   - it only polls (PollInterval, 1 s): an idle call waits up to a second;
//   - a Nack re-sends the same message in the same process, forever, while
//     the group's offset row stays locked: one failing message blocks its
//     whole consumer group (head of line);
//   - consumers of one group are serialised by a FOR UPDATE on the offsets
//     row, and each subscription hands out one message at a time, so neither
//     competing consumers nor Spec.Concurrency can work in parallel;
//   - the default schema is ordered by transaction id, so one long
//     transaction anywhere in the database stalls delivery.
//
// None of this can be fixed around its subscriber, so reading is ours: a
// small queue table read with SELECT … FOR UPDATE SKIP LOCKED. Publishing
// runs the statement of this package's SchemaAdapter on the pool, on its own
// (autocommitted: no BEGIN or COMMIT round trip); the same adapter with
// watermill-sql's Publisher is how a caller publishes inside its own
// transaction (see SchemaAdapter). watermill-sql's offsets adapters have no role:
// progress is per row (delete on ack), not an offset per group.
//
// # Tables
//
// Both live in the configured schema and are version 1 of package
// migrations (migrations/sql/0001_bridge.sql):
//
//	bridge_groups(id, topic, name, kind, created_at, seen_at)  UNIQUE (topic, name)
//	bridge_queue(id, group_id → bridge_groups ON DELETE CASCADE, uuid, payload bytea,
//	             metadata jsonb, published_at, visible_at, attempts)
//	             INDEX (group_id, visible_at, id)
//	bridge_no_subscriber(topic) raises SQLSTATE SB404 for the publish statement
//
// Open calls migrations.Up for the schema, which applies every pending
// migration of the library (so the schema also gets schema_migrations and
// the dead-letter, outbox and inbox tables: see package migrations); when
// everything is applied already it only reads schema_migrations. Concurrent Opens are serialised by Up's
// advisory lock. Teams that manage migrations themselves apply
// migrations.SQL (`switchboard migrate sql`) beforehand; Open then finds
// nothing to do and needs no DDL privileges.
//
// One table with a topic column (not a table per topic) keeps identifiers
// fixed: topics such as "reply.<uuid>" may be long, and no identifier is ever
// built from input. Topics are passed as parameters and must match
// watermill-sql's own topic check ([A-Za-z0-9-$:._], at most 1024 bytes here).
//
// # Delivery per Kind
//
// A consumer group is a bridge_groups row, created (or refreshed) when a
// Subscriber is created for a spec. Publish copies each message into
// bridge_queue once per group of the topic, like an AMQP exchange copies to
// its queues: one Publish call is one statement, whatever the number of
// messages and groups — one INSERT of every (message, group) row and one
// NOTIFY, sent on commit. Members of a group then compete for the group's
// rows. Concurrent Publish calls of a bridge share statements (group
// commit): a call made while no publish statement runs is sent at once,
// alone; the calls made while one runs are collected and the next statement
// inserts all their rows, in call order, and NOTIFYs each of their topics
// once, in one commit (PostgreSQL's notification-queue lock, which
// serialises committing publishers, is taken once per batch). Each call
// still gets its own answer: success, bridge.ErrNoSubscriber when its topic
// had no group, bridge.ErrRefused when its message cannot be stored (a batch
// that fails for that is re-run one call per statement, to tell which).
//
//   - Command: a group exists from its first Subscriber on, and keeps
//     receiving commands while none of its members runs (durable queue).
//   - Event: the same, one copy per group; a group created later does not
//     see older events.
//   - Reply: the group belongs to one instance. Its last member's
//     Subscriber.Close (or Bridge.Close) deletes it with its rows; a reply
//     group whose instance died is deleted by any bridge once it has not
//     been refreshed for 15 minutes (every bridge refreshes seen_at of its
//     groups every minute, and re-creates one deleted under it).
//
// Publishing to a topic that has no group fails with bridge.ErrNoSubscriber
// (the statement raises SQLSTATE SB404), so DetectsMissingHandler is true.
// A group is registered when its Subscriber is created, so a command service
// that has started once is never "missing", even while it is down.
// A Publish racing with a group's very first registration may or may not
// include that group.
//
// # Claims, acks, nacks and the ack deadline
//
// Subscribers run on the consumer runtime every backend shares
// (bridge/internal/consume: concurrency, verdicts, batching of acks, bounded
// close); this package supplies the statements. A subscription claims as
// many rows as it has free slots (Spec.Concurrency + prefetch minus the
// messages it holds) in one statement: FOR UPDATE SKIP LOCKED LIMIT n on the
// group's visible rows (visible_at <= now(), oldest first), setting
// visible_at = now() + ack_deadline (the lease) and attempts + 1, RETURNING
// the rows. The rows beyond Spec.Concurrency wait, in order, for a
// handler to finish (their lease runs meanwhile; one that ends before a
// handler takes the row is dropped, as the row is visible again), so the
// next message is ready without a round trip. The same statement returns when the
// group's next row becomes visible (for the timer, see "Wake-ups"). No
// transaction stays open while a handler runs. Members and handlers never
// wait on each other's locks, and the Concurrency test's N unacked messages
// are simply N leased rows. A row's attempts as its claim left them are the
// lease's token: every statement that settles a row checks it, so a row
// whose lease ended and that another member claimed again is left alone.
//
//   - Ack deletes the row. The acks that arrive while one DELETE … USING
//     unnest(ids, attempts) runs go together in the next, so a busy
//     subscription spends far fewer statements than messages on acks, and a
//     one-at-a-time subscription two per message (a claim and a delete).
//   - Nack sets visible_at = now() + the delay the message asks for
//     (bridge.NackDelayKey) or bridge.DefaultNackDelay. Other rows of the
//     group keep flowing meanwhile; the message comes back after the delay.
//   - No verdict within ack_deadline: the row is visible again and goes to
//     whichever member claims it next (a crashed consumer loses nothing).
//     The subscription gives that delivery up, so its slot is free again;
//     the handler's late Ack or Nack is ignored (the message reads as
//     nacked). A handler that runs longer than ack_deadline therefore sees
//     its message delivered again.
//   - Rows claimed but not yet handed out when a subscription stops are
//     released at once (visible_at = now(), the claim not counted in
//     attempts), in one statement.
//
// Ack and Nack writes are retried with backoff while they fail for a
// transient reason (see "Closing and outages"), until they succeed, the
// lease has ended anyway, or the bridge closes. Delivery is at least once.
// Messages of a group come out roughly in publish order; a nack or an expired
// lease reorders them, and Concurrency > 1 processes them in parallel.
//
// # Wake-ups
//
// The publish statement calls pg_notify(<schema>, topic); PostgreSQL sends
// the notification when the publishing transaction commits, so a woken
// subscriber always finds the rows. Each bridge keeps one dedicated
// connection (outside the pool) that LISTENs on the channel and wakes the
// bridge's subscriptions of the notified topic: idle-to-delivery latency is
// one notification plus one claim round trip, about 2 ms on a local server
// (BenchmarkRoundTrip). The connection is pinged when idle and re-made with
// backoff after any failure; once it is back every subscription is woken,
// since notifications sent while it was down are lost.
//
// Polling is only the fallback: after a claim that found less than it asked
// for, a subscription sleeps until the next wake-up, or until its group's
// earliest visible_at as returned by that claim (a nacked message, a lease about to expire), or at
// most poll_interval. A nacking subscription also wakes itself when the
// delay ends; members in other processes find a nacked message by their
// next-visible timer or poll.
//
// # Closing and outages
//
// Subscriber.Close stops claiming, releases what no handler took, waits for
// the verdict on every message it handed out (bounded by the ack deadline,
// when each lease ends anyway), stores the acks and leaves the group; it
// never closes the bridge's pool or publisher. Publisher().Close is a no-op.
// Bridge.Close ends every subscription (messages still held by handlers are
// abandoned and come back after the ack deadline; acks given before are
// still stored), deletes its reply groups and closes the listener and the
// pool; it is idempotent.
//
// Health runs SELECT 1 through the pool, bounded by its context: it fails
// while the database refuses connections and recovers with it. During an
// outage, claims, acks, nacks and the listener retry with backoff (capped
// at 2 s; a failed claim is logged once, and its recovery);
// Publish fails (callers retry) and is bounded by its message's context and
// 15 s.
//
// The LISTEN connection needs a real session: behind a transaction-pooling
// proxy (PgBouncer in transaction mode) wake-ups do not arrive and delivery
// falls back to poll_interval.
package postgres
