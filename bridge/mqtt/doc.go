// Package mqtt is the MQTT v5 backend, registered for "mqtt://" and
// "mqtts://" (TLS) URLs, built on Eclipse Paho (paho.golang's autopaho,
// which reconnects) and tested against Mosquitto 2.0. Import it for its
// side effect (or import bridge/all):
//
//	import _ "github.com/switchboard-go/switchboard/bridge/mqtt"
//	b, err := bridge.Open(ctx, "mqtt://user:pass@127.0.0.1:1883?client_id=orders-0")
//
// # URL
//
// mqtt://[user:pass@]host[:port][?params] (port 1883; mqtts:// 8883, with
// the system's root certificates). Unknown or malformed parameters fail
// with bridge.ErrBadURL, every problem reported. Parameters and defaults:
//
//	client_id=           this instance's name, 1 to 64 characters without
//	                     '/', '+', '#': a name each instance keeps across
//	                     restarts (a pod name in a StatefulSet) makes its
//	                     members durable (see "Sessions"). Default: none,
//	                     ephemeral members named at random.
//	session_expiry=1h    how long the broker keeps a member's session after
//	                     its connection is lost (at least 1s); 1m without a
//	                     client_id.
//	keep_alive=10s       MQTT keep-alive (at least 1s): a silently dead
//	                     connection is noticed within 1.5 times it.
//
// Opening is bounded by the context given to bridge.Open (each connection
// attempt by DialTimeout): an unreachable broker fails with
// bridge.ErrUnreachable, a refused login with the broker's reason. Once
// connected, every connection reconnects on its own (100 ms doubling to
// 2 s). Health fails while any subscription is not connected and
// subscribed, and otherwise publishes one QoS 1 message to
// "_sb/health" and awaits the broker's PUBACK.
//
// # Topics
//
// A router topic's dot-separated tokens become MQTT topic levels:
// "email.v1.sendWelcome" is published as "email/v1/sendWelcome". A topic
// with an empty token, a '/', a wildcard ('+', '#'), a control character,
// a leading '$' (broker topics such as $SYS) or the first token "_sb"
// (this backend's own topics) is refused with bridge.ErrRefused, so a
// topic name never becomes a wildcard or another topic's name; a group
// name must be a valid topic level too.
//
// # Publishing
//
// Every message is published with QoS 1, and Publish returns nil only once
// the broker has acknowledged each (PUBACK), within PublishTimeout; several
// are pipelined (at most 256, and the broker's receive maximum, awaiting
// their PUBACK), and the first failure is returned once every one sent is
// answered, so an error may follow messages that were stored. Every
// publish of a bridge goes on its one publisher connection, and Mosquitto
// takes at most max_inflight_messages (20 by default, its receive maximum)
// unacknowledged QoS 1 publishes per connection: more wait in the client,
// which bounds a bridge's publish rate to 20 per round trip. Metadata
// travels as MQTT v5 user properties (UTF-8 without NUL, else
// bridge.ErrRefused), the message UUID in the user property
// "_watermill_message_uuid". A message from another producer without one
// gets a new UUID on receipt.
//
// The broker answers "no matching subscribers" (reason 0x10) when no
// session subscribes to the topic; Publish then fails with
// bridge.ErrNoSubscriber (Capabilities.DetectsMissingHandler): a command to
// a service that never subscribed (or whose sessions all expired) fails at
// once with engine.ErrNoHandler, and the engine drops an event nobody
// subscribes to. A command to a service whose members are all stopped,
// but whose sessions live, is queued in them.
//
// # Subscriptions and delivery
//
// Every Subscribe call is one member: one connection with its own session,
// subscribed with QoS 1 to the topic and to its group's redelivery topic
// "_sb/retry/<group>/<topic>":
//
//	Command, Event  shared subscriptions "$share/<group>/<topic>": members
//	                of a group compete (the broker hands each message to
//	                one of them in turn), every group gets each message.
//	Reply           plain subscriptions of the instance; its session ends
//	                when it closes: not durable.
//
// The connection's receive maximum is Spec.Concurrency: the broker sends at
// most that many unacknowledged messages, which wait in the client until
// the consumer runtime hands them to handlers. A message is acknowledged
// (PUBACK) only when its handler acks it, at once: paho's own manual
// acknowledgement is not used (it sends queued acks from a 50 ms ticker, a
// delay on every message). PUBACKs do not wait for those of messages
// received earlier, as MQTT v5 (4.6) asks of a client: a nacked message
// stays unacknowledged for its delay (see "Redelivery") and would hold
// back every later PUBACK, which a dropped connection then turns into
// redeliveries (in the chaos run, 88 to 217 duplicates after a broker
// restart). Mosquitto matches a PUBACK by packet id, in any order. A
// PUBACK is never sent on a later connection than its message came on: the
// broker sends an unacknowledged message again after a reconnect (flagged
// DUP), and the messages of the lost connection still waiting in the
// client are dropped then rather than handled twice.
//
// # Redelivery
//
// MQTT has no negative acknowledgement and no delivery count. A Nack keeps
// the message unacknowledged for its delay (bridge.NackDelayKey, or
// bridge.DefaultNackDelay), then publishes a copy to the group's redelivery
// topic, with its UUID, metadata and the deliveries it had in the user
// property "_sb_delivered", and acknowledges the original once the broker
// has the copy (a copy that cannot be published is tried again every
// second). So a redelivery goes to the nacking group only, to any of its
// members, and bridge.DeliveryKey counts the copies' deliveries, plus one
// for a message the broker sent again after a reconnect (DUP)
// (Capabilities.CountsDeliveries and NackDelay). While it waits, a nacked
// message holds one of the subscription's Concurrency places.
// Messages fetched but handed to no handler when a subscriber stops go
// back the same way at once, without counting a delivery; nacks still
// waiting when it closes are handed back at once.
//
// # Sessions
//
// A member's session (its subscriptions, the messages it was sent and did
// not acknowledge, those queued for it) outlives a lost connection by
// session_expiry, so a reconnect, or a broker restart, loses nothing.
// Mosquitto deals a shared subscription's messages in turn to every
// session that has it, connected or not: a session left behind by a member
// that will not come back holds its share of the group's messages until it
// expires, and the broker then drops them. So what a member does when it
// closes depends on whether it has a stable name:
//
//	durable (client_id given; Capabilities.Durable): a Command or Event
//	member connects as "<client_id>-<hash of kind, topic and group>-<n>", n
//	the lowest number no open member of this process uses, with CleanStart
//	false. Its session is kept when it closes (session_expiry, 1h), and the
//	next member that connects under that name takes it over, with what it
//	held and what was queued for it meanwhile: a member opened later in the
//	same process, or the instance restarted with the same client_id. An
//	instance removed for good leaves its share to expire: scale down by
//	stopping consumers of a name only when it will come back, or accept
//	that loss.
//	ephemeral (no client_id): members are named at random. A closing member
//	leaves its group first (unsubscribes), hands what it holds back to the
//	group's other members (nacked messages at once, messages it was sent
//	and had not handed to a handler), then ends its session. When it was
//	its group's last member, the group ceases to exist on the broker: what
//	it handed back is dropped (logged), and messages published until a
//	member subscribes again are refused (a command fails with
//	engine.ErrNoHandler, an event is dropped). A process that crashes
//	leaves its sessions, and their share of its groups' messages, for
//	session_expiry (1m), then the broker drops them.
//
// # Broker restarts
//
// Mosquitto keeps sessions, queued and unacknowledged messages across a
// restart when persistence is on (it saves on shutdown; after a crash,
// what changed since its last autosave is lost: see autosave_interval), but
// not shared subscriptions. Every member therefore subscribes again on
// every connection, and for 5 s after the publisher reconnects, a "no
// matching subscribers" answer is retried, so that messages published
// while the members come back are not refused. Mosquitto also drops QoS 1
// messages beyond max_queued_messages (1000 by default) per session
// without telling the publisher: size it (or set 0) for the backlog a
// group may have.
//
// # Closing
//
// Subscriber.Close (the consumer runtime's) stops fetching, hands back what
// no handler took, waits for the handlers' verdicts and sends their
// PUBACKs, hands back pending nacks, then disconnects (see "Sessions" for
// the rest). Bridge.Close
// stops its subscribers at once (messages handlers still hold stay
// unacknowledged: a durable member's session keeps them, an ephemeral
// member's ends) and then the publisher; it is idempotent, and
// Publisher().Close is a no-op.
//
// # Capabilities
//
// CrossProcess, DetectsMissingHandler, CountsDeliveries and NackDelay are
// true; Durable and GroupOutlivesMembers are true when client_id is given
// (without it, the conformance suite starts a group's next member before
// the last one closes, as a rolling restart must). MaxMessageBytes is 0:
// the broker's own limit (message_size_limit) applies, and a message it
// refuses as too large (PUBACK reason 0x95) fails with bridge.ErrTooLarge.
// Delivery is at least once: a reconnect or a copy may duplicate a
// message, and redeliveries do not keep order.
package mqtt
