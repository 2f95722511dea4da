// Package amqp is the RabbitMQ backend, opened by an amqp:// or amqps://
// bridge URL. Import it (or bridge/all) for its side effect:
//
//	import _ "github.com/switchboard-go/switchboard/bridge/amqp"
//
//	b, err := bridge.Open(ctx, "amqp://user:pass@rabbit:5672/vhost?prefetch=4")
//
// # URL
//
// The standard AMQP URI, amqp://user:pass@host:port/vhost (user and
// password default to guest, the port to 5672 or 5671 for amqps, the vhost
// to "/"; write "/" as %2f). The query carries this package's parameters
// only; they are removed before the URI reaches the client. Open fails
// with bridge.ErrBadURL naming every problem at once: unknown (listed with
// the known ones), repeated, empty or out-of-range parameters:
//
//	exchange=switchboard   the exchange every topic goes through
//	prefetch=16            unacked messages a subscription holds beyond
//	                       its Concurrency (0 to 10000): its channel's
//	                       prefetch count is Concurrency + prefetch
//	publish_channels=8     channels of the publisher's pool
//	publish_window=512     messages awaiting their confirm on one channel
//	                       of the pool at once
//	heartbeat=10s          AMQP heartbeat asked of the broker
//	reconnect_max=5s       longest wait between two reconnect attempts
//	close_timeout=30s      how long Subscriber.Close waits for handlers
//	                       (0: not at all)
//	queue_expires=         x-expires of durable queues; unset (never) by
//	                       default. For tests and throw-away environments:
//	                       the queues of unique topics then vanish after
//	                       this long without consumers.
//	name=switchboard       connection name in the management UI
//	                       (suffixed /publish and /consume)
//	tls_ca, tls_cert, tls_key, tls_server_name
//	                       PEM files and server name for amqps; without
//	                       tls_ca the system roots are trusted
//
// There is no connect_timeout: opening is bounded by the context given to
// bridge.Open, and each connection attempt (the first and every
// reconnection: TCP dial, TLS and AMQP handshakes) by DialTimeout, 5 s.
// There is no nack_delay: a nacked message comes back after the delay it
// asks for (bridge.NackDelayKey), or bridge.DefaultNackDelay.
//
// Open fails when its context ends (or DialTimeout passes) while the
// broker is unreachable or silent, wrapping bridge.ErrUnreachable and
// naming the address; wrong credentials or an unknown vhost also wrap
// ErrAccessRefused. The password never appears in errors or logs.
//
// # Topology
//
// One durable direct exchange (parameter exchange) carries every topic, the
// topic being the routing key. The publisher does not know a topic's Kind,
// and does not need to: every queue interested in a topic is bound to that
// exchange with the topic as key, so one publish reaches each of them.
//
//   - Command and Event: a durable queue per group, "<group>@<topic>",
//     bound with key <topic>. Members of the group consume the same queue
//     and compete for its messages; each group has its own queue, so each
//     gets every message. For the broker the two kinds are the same thing,
//     and a group's messages wait in its queue while no member runs.
//   - Reply: an exclusive, auto-delete, non-durable queue: it belongs to the
//     connection of one engine instance (another connection is refused),
//     goes away when its last consumer does, and is not kept across broker
//     restarts. Publishing to it afterwards fails with ErrNoSubscriber.
//
// A single exchange rather than one per topic: nothing to declare per topic
// on the publishing side (no cache to go stale when a broker loses its
// definitions), no exchange left behind by every short-lived reply topic,
// and direct routing is RabbitMQ's cheapest. '@' separates group and topic
// in queue names (names from package router never contain it), so Subscriber
// refuses specs whose group or topic contains '@'.
//
// Messages are persistent and published with publisher confirms: Publish
// returns once the broker has them (on disk for durable queues). They are
// also published with the mandatory flag: a message no queue is bound for
// comes back (basic.return, received before the confirm) and Publish fails
// with bridge.ErrNoSubscriber, so Capabilities.DetectsMissingHandler is
// true. A group's queue exists from the first time one of its members
// subscribed, so commands sent while a service is down wait for it; only a
// group that never subscribed yet is "missing".
//
// The wire format is watermill-amqp's (DefaultMarshaler: the body is the
// payload, metadata are string headers, the UUID is the
// _watermill_message_uuid header), so plain watermill-amqp programs can read
// and write these messages. The AMQP message-id is set to the UUID;
// per-delivery metadata (bridge.DeliveryKey, bridge.NackDelayKey) is not
// published.
//
// # Delivery, concurrency, Nack
//
// Subscribers run on the consumer runtime every backend shares
// (bridge/internal/consume: concurrency, verdicts, ack batching, bounded
// close); this package supplies its source. A subscription consumes the
// group's queue on one channel with one consumer, whose prefetch count
// (basic.qos) is Spec.Concurrency + prefetch (default 16): up to
// Concurrency messages are with the handlers, and up to prefetch more wait
// on the client, handed out in order as handlers finish, so a handler that
// finishes finds its next message there instead of waiting a round trip to
// the broker. The price: with competing members, up to prefetch messages
// wait in one member's buffer while another may be idle (prefetch=0 avoids
// that, at a round trip per message). The broker holds at most
// Concurrency + prefetch unacked messages per subscription.
//
// Acks are batched by the runtime (acks that arrive while one batch is
// being sent go in the next). A multiple ack settles every lower delivery
// tag of the channel, including messages still being handled or nacked, so
// a batch goes out as one multiple ack only when it is exactly the run of
// the channel's unsettled tags up to its highest; otherwise one ack per
// message. Verdicts come out of order from concurrent handlers: acks are
// never held back to complete a run.
//
// Nack never requeues (a requeue comes back at once: a failing handler
// would spin). Each group queue has a retry queue, "<group>@<topic>@retry",
// as its dead-letter target: a nacked message is rejected, the broker moves
// it there, and after bridge.DefaultNackDelay (the retry queue's message
// TTL) dead-letters it back through the default exchange to the group's
// queue alone — never to other groups. Queue arguments cannot change once a
// queue exists: open with a different queue_expires and Subscribe fails
// with an explanation; delete the queues or keep the old value. A retry
// queue the broker refuses to declare again (one declared with another TTL
// by a version that had a nack_delay parameter) is used as it is, with a
// warning in the log, since deleting it would drop the messages parked in
// it: a nack without a delay of its own then waits that queue's TTL. To
// migrate, delete the retry queue once it is empty; the next Subscribe
// declares it with bridge.DefaultNackDelay.
//
// A handler may ask for its own delay (bridge.NackDelayKey, as the engine's
// redelivery tier does; Capabilities.NackDelay). RabbitMQ expires messages
// only at the head of a queue, so per-message TTLs in one queue would hold
// a short delay behind a long one; instead each delay gets its own queue,
// "<group>@<topic>@retry-<ms>ms", declared on demand with that TTL and the
// same dead-letter route back to the group's queue. Delays are rounded up to
// 1, 1.2, 1.5, 1.7, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8 or 9 × 10^k ms (never
// earlier, at most 25 % later, 1 ms to 24 h) so a group has a handful of such
// queues, and each disappears (x-expires) ten minutes after its last use,
// when every message in it is long gone. The bridge publishes a copy of the
// delivery there (the queue declared on a channel of its own, so a refused
// declaration fails no other publish; the copy confirmed, through the
// publisher's pool), then acks the delivery; if the copy fails, it rejects
// the delivery instead (default delay): nothing is lost, at worst delivered
// early or twice.
//
// Every delivery carries bridge.DeliveryKey (Capabilities.CountsDeliveries):
// 1, then one more per Nack — counted from the broker's x-death header and
// from the count a copy to a delay queue carries — plus one when the broker
// flags the delivery as redelivered (requeued after a lost channel or
// consumer, or handed back unhandled by a closing subscriber: RabbitMQ
// cannot requeue without the flag; several such requeues in a row count
// once: RabbitMQ's classic queues keep no count).
//
// Subscriber.Close stops taking messages and cancels the consumer: the
// messages prefetched for it go back to the queue at once (requeued, so
// flagged redelivered). It waits up to close_timeout for the handlers'
// verdicts, then closes the channel: the broker requeues at once whatever
// it still holds (not acked in time; such a late Ack is lost and the
// message is delivered again: at-least-once), and Close returns an error
// saying so.
// Closing a subscriber never closes the bridge or its publisher.
// Bridge.Close stops subscribers without waiting for their handlers'
// verdicts, cutting short a Subscriber.Close that is waiting (acks already
// given are sent; the broker requeues what handlers hold), then closes both
// connections; it is idempotent. Publisher().Close is a no-op.
//
// # Connections, outages, health
//
// The bridge keeps two connections, as RabbitMQ recommends: one publishes
// (a publisher blocked by a resource alarm must not block the consumers'
// acks), one consumes. Each is watched by a goroutine that reconnects with
// exponential backoff (100 ms ×1.5, jitter, at most reconnect_max). A
// subscription whose channel or consumer is lost opens another on the
// current consuming connection, declaring its topology again (so exclusive
// reply queues come back too), without waiting for the verdicts of the
// messages its handlers hold: those were requeued by the broker, and their
// acks fail (logged). A failure to re-open is retried with the runtime's
// backoff (100 ms doubling to 2 s). While the publishing connection is down Publish fails at
// once with bridge.ErrUnreachable (nothing is buffered: the caller's retry
// policy decides).
//
// # Publishing: pipelined confirms
//
// The publisher keeps a pool of up to publish_channels channels in confirm
// mode on the publishing connection, opened on demand. Publish takes the
// least loaded channel (opening another while every open one has messages
// in flight), sends its messages on it one after the other without waiting
// (so they stay in order), then waits for their confirms. Channels are
// shared: concurrent publishes interleave on one channel, up to
// publish_window messages await their confirm on it at once, and the
// broker confirms them in batches (multiple acks); a publish waits for room
// in the window when it is full. Every message is still confirmed before
// Publish returns nil. A dispatcher goroutine per channel reads its
// confirms and its returns in the order the broker sent them — the return
// of an unroutable message comes before its confirm — and matches a return
// to its message by message id (returns carry no delivery tag; two
// messages with the same id never await their confirm on one channel at
// once: the second waits for the first). A basic.nack is an error, a
// returned message bridge.ErrNoSubscriber, a channel or connection lost
// before the confirm bridge.ErrUnreachable (the message may have been
// delivered: the caller's retry may duplicate it, never lose it). Each
// message's context bounds the wait for room in the window and for its
// confirm. A publish of several messages stops sending at the first message
// it cannot send and returns the first failure; messages after a message
// that failed its confirm may have been delivered.
//
// Health reports an error while either connection is down, and otherwise
// makes a round trip on each (declares the exchange on the publishing one,
// opens a channel on the consuming one) bounded by ctx; concurrent calls
// share one round trip.
//
// # Why not watermill-amqp's Publisher and Subscriber
//
// The bridge builds on Watermill (message.Message, message.Publisher,
// message.Subscriber, watermill-amqp's marshaler and wire format) but talks
// to RabbitMQ through amqp091-go itself. watermill-amqp v3.0.2's
// Publisher and Subscriber were the first design; tests against the real
// broker showed defects no configuration reaches:
//
//   - ConnectionWrapper rewrites its "connected" channel and connection
//     pointer without synchronisation when the connection drops
//     (ThreeDotsLabs/watermill#693, open) while Publish, IsConnected and
//     every consumer goroutine read them: go test -race fails on a broker
//     restart under load or on a flapping network.
//   - The publisher's channel pool drops a channel for good when reopening
//     it fails (connection lost between its connected check and the
//     reopen); once every channel is lost, Publish blocks forever. Reopening
//     a channel that was closed without an error dereferences a nil
//     *amqp.Error and panics.
//   - Mandatory publishes are possible but basic.return is never read, so a
//     missing consumer cannot be detected; the confirm wait ignores the
//     message's context.
//   - The consumer handles one message at a time per Subscribe, nacks what
//     it holds on Close (so a handler still running loses its ack), and its
//     default unmarshaler fails on any non-string header — which the broker
//     adds itself (x-death) when it dead-letters, turning every retried
//     message into a poison message — and panics on a message with no
//     headers.
//
// The marshaler here is watermill-amqp's DefaultMarshaler with those two
// unmarshaling traps removed.
package amqp
