// Package nats is the NATS JetStream backend, registered for "nats://" URLs.
// Import it for its side effect (or import bridge/all):
//
//	import _ "github.com/switchboard-go/switchboard/bridge/nats"
//	b, err := bridge.Open(ctx, "nats://user:pass@127.0.0.1:4222?ack_wait=1m")
//
// # URL
//
// nats://[user:pass@]host[:port][?params]. A user without a password is sent
// as a token. Unknown, repeated or malformed parameters fail with
// bridge.ErrBadURL, every problem of the URL in one error, each naming its
// parameter (unknown ones with the list of known ones). Parameters and
// defaults:
//
//	ack_wait=30s         server AckWait of every consumer: how long a message
//	                     may stay with a dead process before it is delivered
//	                     again (100ms to 24h). See "Acks" below.
//	stream_prefix=SB_    prefix of the streams this backend creates.
//	retention=limits     retention of the streams it creates for commands and
//	                     events: "limits" or "interest" (see "Streams").
//	max_age=0            age limit of those streams; 0 keeps messages forever
//	                     (at most 876000h, 100 years).
//	replicas=1           replicas of those streams (1 to 5, for clusters).
//	prefetch=16          messages a subscription holds beyond its
//	                     Concurrency: pulled ahead and handed out in order
//	                     as handlers finish, so the next one is ready
//	                     without a round trip (0 to 10000; 0: none). Their
//	                     progress is reported while they wait, as for the
//	                     ones with a handler; a member that dies holds them
//	                     until ack_wait.
//	reply_prefix=reply.  topics the publisher never creates a stream for (see
//	                     "Replies"), besides "reply." (the engine's reply
//	                     topics), which it never creates one for either:
//	                     non-empty, dot-separated tokens of letters,
//	                     digits, '-' and '_' (the last may be empty), at
//	                     most 64 bytes.
//
// There is no connect_timeout: opening is bounded by the context given to
// bridge.Open, each connection attempt by DialTimeout (5 s). There is no
// nack_delay: a nacked message comes back after the delay it asks for
// (bridge.NackDelayKey), or bridge.DefaultNackDelay.
//
// # Connection
//
// The initial connect is bounded by the context given to bridge.Open (and
// by DialTimeout) and does not retry: an unreachable server, or one without
// JetStream, fails Open with bridge.ErrUnreachable naming the backend and the
// address (password redacted). Once connected, the client reconnects forever
// (every 500ms plus jitter) and pings every 10s, so a silently dead server is
// noticed. Nothing is buffered while disconnected: a publish then fails at
// once (wrapping bridge.ErrUnreachable) instead of hanging, and no stale pull
// request reaches the server after a reconnect. Health checks that the
// connection is up and that JetStream answers an account-info request. The
// backend logs to the logger given to bridge.Open (bridge.Logger; the
// engine passes its Config.Logger).
//
// # Streams
//
// Every topic gets its own stream, subjects = [topic] (dots are subject
// separators, so "email.v1.sendWelcome" is used as it is). Stream names cannot
// contain dots, so the name is stream_prefix + the topic with every character
// other than letters, digits, '-' and '_' replaced by '_' (cut to 64) + '_' +
// 8 hex digits of the topic's SHA-256: deterministic in every process, and
// "a.b" and "a_b" do not collide. Topics that are not literal NATS subjects
// (empty tokens, wildcards, spaces) are rejected.
//
// Streams are provisioned explicitly, never with watermill-nats'
// AutoProvision (which costs a stream lookup on every publish): a subscriber
// creates its stream when it is created, and the publisher creates a missing
// one the first time it publishes to a topic, then caches the name; if a
// cached stream disappears, the publish fails with "no stream", and the
// publisher looks again and retries once. A stream that already covers the
// topic (found by subject) is used as it is, so operators may provision
// streams themselves (other retention, replicas, limits); the URL's stream
// settings only apply to streams this backend creates.
//
// Streams are file-backed. The default retention is "limits" with no limits:
// nothing is ever dropped silently, including commands published before their
// service first subscribed, at the price of streams that grow until max_age
// (or an operator's limit) is set. retention=interest keeps a message only
// until every consumer existing at publish time has acked it, which bounds
// disk to the backlog, but drops messages published while a topic has no
// consumer at all (for instance a command to a service that never ran yet).
// WorkQueue retention is not offered: an event topic has one consumer per
// subscribing group.
//
// # Consumers and delivery
//
// Every group has one durable pull consumer on its topic's stream, named
// from the group like streams are (plus a hash of topic and group, so one
// group on two topics of an operator's shared stream gets two consumers).
// Members of a group, in one process or many, pull from the same consumer, so
// they compete; groups have separate consumers, so each gets every message:
//
//	Command  durable, DeliverAll: commands sent before the service first
//	         subscribed are delivered.
//	Event    durable, DeliverNew: a group gets the events published after it
//	         first subscribed (like a queue bound to an exchange); from then
//	         on the durable keeps its place while no member runs.
//	Reply    a memory stream with WorkQueue retention and a consumer, created
//	         by the subscriber and deleted when the bridge's last subscriber
//	         for that topic closes. Not durable: replies in flight are lost if
//	         the server restarts (the subscriber re-creates the stream after
//	         the reconnect), and a reply nobody took expires after ReplyMaxAge.
//
// A consumer takes the server's defaults of 1000 unacked messages, which
// bounds the sum of Spec.Concurrency over a group's members, and 512 waiting
// pull requests, which bounds the number of subscriptions of a group (each
// keeps one request waiting; see "Pulling in batches").
//
// Consumers never expire (MaxDeliver -1): a message that keeps failing is the
// engine's to dead-letter, not the broker's to drop. Subscriber.Close stops
// pulling but leaves the durable consumer in place (nats.go deletes consumers
// it created itself on Unsubscribe; here they are created explicitly, so that
// cannot happen). A subscriber checks every 30s, and after each reconnect,
// that its consumer still exists, and re-creates it (and its stream) if not.
//
// # Why pull consumers and not watermill-nats' Subscriber
//
// watermill-nats' pkg/nats Subscriber is built on push queue subscriptions
// with one callback per subscription that blocks until the message is acked.
// JetStream hands each message to a random member of the queue group, busy or
// not, so with SubscribersCount=N a second message often waits behind the
// first in a client buffer (with its ack-wait clock running, watermill #609):
// holding N messages unacked, fewer than N arrive (in a test shaped like the
// conformance suite's Concurrency test, 5 runs of 6 got 2 or 3 of 4). Its Close
// also drains the whole connection, and on close it returns without acking
// or nacking the message in flight. So this package publishes with
// watermill-nats' Publisher and its header format (NATSMarshaler: UUID in
// _watermill_message_uuid, metadata in headers, so watermill-nats
// subscribers can read what it writes), and consumes with JetStream pull
// consumers directly, so none is ever acked implicitly (nats.go auto-acks
// push callback subscriptions unless nats.ManualAck is given; a pull never
// acks by itself).
//
// # Pulling in batches
//
// Subscribers run on the consumer runtime every backend shares
// (bridge/internal/consume); this package supplies its source: one pull
// request per fetch, acks, naks and progress reports. Each Subscribe has
// Spec.Concurrency slots. The runtime waits until at least one slot is
// idle, then the source sends one pull request (Fetch) for as many messages
// as there are idle slots at that moment, and hands each message to a
// handler the moment it arrives; the request ends when it has its messages
// or after 500ms, and the runtime asks again for the slots idle then. So a
// backlog is fetched in batches (a
// subscription with Concurrency 32 and 32 messages waiting asks once), at
// most Concurrency messages per subscription are delivered and unsettled at
// any time, none waits in a client buffer while its ack_wait clock runs, and
// an idle subscription keeps one pull request waiting at the server (two
// requests per second) whatever its Concurrency. nats.go's Consume and
// Messages are not used: they keep up to PullMaxMessages messages buffered
// ahead of the handlers, each with its ack_wait clock running.
//
// A pull request is never cut short: the server may already have assigned it
// a message, which would stay with a subscriber that stopped listening until
// ack_wait. So Subscriber.Close waits for the request to end (at most 500ms)
// and gives back at once (a nak, which JetStream counts as a delivery) what
// it brought after the stop; an idle subscription closes within 500ms.
//
// A pull that fails (the server restarting, JetStream not ready yet) is
// logged once as a warning and once more when pulling works again, and
// retried after a pause of 100ms doubling to 2s. A pull that finds its
// consumer or stream gone re-creates them at once.
//
// # Acks
//
// A handler's Ack is sent to the server as a plain JetStream ack, not
// confirmed (no AckSync), and its slot is free at once. Nothing is lost by
// that: the ack is only sent after the handler's verdict, and an ack that
// never reaches the server (the connection drops first) leaves the message
// unacknowledged, so JetStream delivers it again after ack_wait — a
// duplicate, which at-least-once delivery allows, exactly as when a
// confirmed ack's confirmation is lost. Subscriber.Close flushes the
// connection (at most 1s) before it returns, so the acks of a closed
// subscriber have reached the server and no member that goes on is handed
// them again. The acks that come while others are being sent go out
// together, but each is its own message on the wire: no AckAll, since
// handlers finish out of order.
//
// Nack asks for a redelivery after the message's own delay
// (bridge.NackDelayKey) or bridge.DefaultNackDelay. While a handler runs, the
// subscriber reports progress every ack_wait/2, so a slow handler is not raced by
// a duplicate: ack_wait bounds how long a message stays with a dead process
// or connection, not how long a handler may take (the engine's deadlines do
// that). A message that is never settled is delivered again ack_wait after
// its subscriber stops reporting progress.
//
// Subscriber.Close stops pulling, gives back at once any message it pulled
// but did not hand out, and waits for the handlers' verdicts on the ones it
// did, at most ack_wait (after which it returns an error and JetStream
// redelivers them). Bridge.Close does not wait for handlers (it stops its
// subscribers together, each waiting only for its pull request): handlers
// still running lose their connection and their messages come back after
// ack_wait. Bridge.Close is idempotent, Publisher().Close is a no-op, and
// Subscriber.Close never touches the bridge's connection.
//
// # Publishing
//
// Publish returns nil only once JetStream has acknowledged (PubAck) every
// message given, each within 5s. One message is published and awaited
// (the engine's case); several are pipelined: up to 256 are sent before the
// first PubAck is awaited (4096 over the connection), in order on one
// connection, and Publish waits for every PubAck and returns the first
// failure, so an error may follow messages that were stored.
//
// # Replies
//
// The publisher never creates a stream for a topic starting with "reply."
// (as router.ReplyTopic names them) or with reply_prefix: only the reply
// subscriber does, and deletes it when it closes. A reply to an instance
// that is gone fails with bridge.ErrNoSubscriber instead of creating a
// stream nobody would read. The publisher caches the stream of at most 1024
// topics (evicting one at random when full), so topics that come and go do
// not grow it.
//
// # Message size
//
// The server's max_payload (1 MiB by default) counts headers, so
// Capabilities.MaxMessageBytes is max_payload less 1 KiB of header framing;
// the engine keeps payloads under it minus the metadata limit. A message
// the server refuses as too large fails with bridge.ErrTooLarge.
//
// # Capabilities
//
// Durable and CrossProcess are true. DetectsMissingHandler is false: a
// command to a service that never subscribed is stored and delivered once it
// does, which is what a durable bus should do; only reply topics fail fast.
//
// Delivery is at least once: a redelivery after a lost ack or a crashed
// process can duplicate a message, and redeliveries do not keep order.
package nats
