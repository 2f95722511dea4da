// Package envelope defines what travels with every Switchboard message
// besides its payload: the metadata keys, the Meta a handler reads from its
// context, W3C trace context, and the wire form of errors.
//
// It is the vocabulary shared by engine, router and middleware; it depends
// on nothing but Watermill's message type.
//
// Metadata keys (all lower-case, safe as NATS, AMQP and SQL header names):
//
//	correlation_id  the conversation: set once at the edge, copied to every
//	                message caused by it (same key as Watermill's
//	                CorrelationID middleware, so it interoperates)
//	causation_id    the id of the message that caused this one
//	traceparent     W3C trace context: same trace id, new span id per message
//	tracestate      W3C vendor state, copied unchanged
//	principal_id    who the first message acted for
//	tenant_id       whose data it concerns
//	deadline        RFC 3339 (nanoseconds) instant after which nobody waits
//	                for the result
//	reply_to        the topic a command's reply goes to (absent: no reply);
//	                only a reply topic ("reply.<instance>") is accepted
//	kind            command, event or reply
//	error           "1" on a reply that carries an Error instead of a result
//	scheduled_for   RFC 3339 (nanoseconds, UTC) instant a scheduled message
//	                was due; set by the engine when it schedules one, read
//	                as Meta.ScheduledFor, never copied to the messages it
//	                causes; a malformed value reads as absent
//
// The message id is Watermill's message UUID.
//
// # Limits
//
// Metadata is copied from every message to the messages it causes, and
// NATS counts it in its max_payload, so it is bounded: at most
// MaxMetadataKeys entries, each (key plus value) at most
// MaxMetadataEntryBytes, all together at most MaxMetadataBytes.
// CheckMetadata enforces them: the engine answers a command that exceeds
// them with a 431 error, dead-letters any other such message, and refuses
// to send one. A tracestate longer than MaxTracestateBytes (W3C's
// propagation limit) or malformed is dropped, never an error, and so is a
// malformed traceparent (a new trace starts).
package envelope
