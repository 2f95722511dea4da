// Package middleware holds Switchboard's reliability middleware. Every one
// is a plain Watermill message.HandlerMiddleware, so it composes with the
// user's own middleware and with Watermill's.
//
// The engine installs them around every handler in this order, outermost
// first (each entry says why it sits there):
//
//	Tracing         a span per handled message, child of the message's
//	                traceparent, covering every attempt
//	DeadLetter      sees the final outcome: acks a permanent failure or an
//	                exhausted budget after storing the message, otherwise
//	                asks the backend for a later redelivery to this group
//	                only
//	Breaker         pauses consumption while a downstream is failing, so a
//	                queue does not drain into the dead-letter store
//	Retry           in-memory attempts with exponential backoff and jitter;
//	                permanent errors are never retried
//	AttemptTimeout  a fresh deadline per attempt (inside Retry, never
//	                outside: Watermill's Timeout leaves later retries a
//	                cancelled context, #467)
//	Recoverer       a panic becomes an error (with its stack logged) that
//	                Retry and DeadLetter can see
//	user middleware (global, service, handler), then the handler
//
// Retry and DeadLetter share one shape of wait, Backoff: exponential with
// jitter. Retry waits DefaultRetryBackoff between attempts (100 ms doubling
// to 2 s, ±50 %, at most 10 s), DeadLetter DefaultRedelivery between
// deliveries (1 s doubling to 1 min, ±50 %, at most MaxDeliveries of them).
// Breaker takes a BreakerPolicy (what the engine's Reliability holds) plus
// a name.
//
// Watermill's own Retry, PoisonQueue, Timeout and Deduplicator are not used:
// Retry has no permanent-error type and counts MaxRetries 0 as "no retry";
// PoisonQueue has no attempt count, must wrap Retry (#580, #645) and
// publishes with a possibly cancelled context (#636); Timeout poisons later
// retries (#467); the Deduplicator records a message before the handler
// runs, so a failed message redelivered inside its window is dropped.
package middleware
