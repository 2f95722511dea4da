// Package dispatch turns the engine's registrations into Watermill router
// handlers on a bridge and carries request/reply: one reply subscription per
// engine instance and a table of pending calls keyed by the request's
// message id. Only the engine uses it.
//
// Choices made here, each fixing a Watermill default:
//
//   - Handlers are consumer handlers (no router publisher): replies go to a
//     different topic per caller and events to their own topics, so the
//     engine publishes itself, through the bridge's shared publisher. The
//     router therefore never closes a shared publisher.
//   - Watermill's router cancels the context it passed to Subscribe as soon
//     as Close starts, while handlers are still running; a backend that
//     watches that context may then abandon a message whose handler is about
//     to ack it (a duplicate after redelivery). Subscriptions here get a
//     context that is never cancelled; they end through Subscriber.Close,
//     which the router calls and which waits for in-flight acks.
//   - Per-handler concurrency is a property of the subscription
//     (bridge.Spec.Concurrency): Watermill runs every delivered message in
//     its own goroutine, and backends deliver one message at a time per
//     subscription unless told otherwise.
//   - The reply subscription is not a router handler: it must keep running
//     while the router drains, so that in-flight handlers waiting on a
//     nested call still get their reply.
//   - Close on a router that never ran would block for the whole close
//     timeout (Watermill #697); Close here only closes what was started.
//   - On the in-process bus (inproc.Direct), a command, an event and a
//     reply need not go through Watermill's router at all: the router serves
//     each command and event handler to the bus, whose Call hands the
//     message (an event only when nothing of its group is ahead of it) to a
//     parked worker goroutine with a free slot of the handler's
//     Concurrency (shared with the subscription, so the bound holds for
//     both roads), and Listen serves the reply subscription, so that a
//     reply reaches its caller in the replying handler's goroutine. The
//     handler function and its middleware chain are the same, and the
//     message's context carries the values Watermill's router adds
//     (routerValues).
package dispatch
