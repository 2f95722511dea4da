// Package inproc is the in-process backend, opened by the empty bridge URL or
// "gochannel://".
//
// The bus is Switchboard's own, not Watermill's GoChannel: its queues per
// consumer group, delivery counts and nack delays are
// written here, and no code of GoChannel (watermill/pubsub/gochannel) runs
// in it. It replaces GoChannel as the in-process backend and keeps its
// semantics (messages in memory, within one process, nothing written
// anywhere), adding what GoChannel lacks: GoChannel gives every subscriber
// of a topic its own copy, with no consumer groups, so neither competing
// consumers (two instances of one service sharing commands) nor a
// per-handler worker count can be expressed with it. This bus has what the
// engine's delivery table needs: a queue per (topic, group), members that
// compete for it, up to Spec.Concurrency messages in flight per
// subscription, a delivery count on every message, and redelivery after a
// Nack (after the delay the message asks for, or bridge.DefaultNackDelay,
// so a failing handler does not spin). The URL takes no parameters.
//
// The scheme stays gochannel://, one scheme with no alias, because the
// developers' guide and existing deployments name it so: a configuration
// saying SWITCHBOARD_BRIDGE=gochannel:// keeps working, and means this bus.
//
// A subscriber's Close waits until every message it handed out is acked or
// nacked, with no timer of its own: a handler owns its message until it
// settles it, so no other member of the group (another engine on the same
// bus) gets the message while it runs. What bounds shutdown is the engine:
// it cancels its handlers' contexts past its DrainTimeout, and its Stop
// gives up when its context ends. Closing the bus does not wait: its
// subscriptions end at once, a Close waiting on them returns, and the
// messages held or queued are dropped.
//
// Every delivery is a copy of the published message, as it would be after a
// trip through a broker, so a handler cannot mutate its caller's message.
//
// A message the engine sends (a command, its reply, an event) can skip the
// queue: the bus implements Direct, whose Call offers the message to a
// member of each of its groups served with Serve, in the caller's
// goroutine, and the member takes it if it has room (the engine serves
// every command and event handler and every reply subscription this way).
// An event group is offered a message only when nothing of the group is
// ahead of it (queued, or fetched by a subscriber and not settled), so a
// subscription taking one message at a time keeps the emit order. The
// message is then the caller's own, handed over (the last group's) or a
// copy of it, and it is a delivery like any other: it carries bridge.DeliveryKey, one member gets
// it, a nack puts it in the group's queue for redelivery
// (Member.Requeue). What finds no member with room waits in the queue.
// While a command or event group has served members, they drain its queue
// and its subscribers fetch nothing: a message queued (no member had
// room, a nack's redelivery, a Publish) is offered as a pull to a member
// with room, and a member takes the queue's head (Member.Next) whenever it
// has room again; with no member served, the subscribers take it. A call then crosses no queue, no
// consumer runtime and no Watermill router, and the same engine code runs
// on it as on a broker (engine's TestInProcessMatchesABroker compares the
// two).
//
// Messages wait in a group's queue while the group has no member, so an
// engine restarted inside the same process picks up where the last one
// stopped; they are lost when the process exits (Capabilities.Durable is
// false). Reply groups are removed with their last member.
//
// Queues are not bounded, deliberately. Publish cannot wait for room with
// the caller's context (Watermill's Publisher takes none), and waiting at all
// can deadlock a process whose handlers publish to one another: a handler
// blocked on a full queue holds the worker that would drain a queue it
// depends on. Failing instead would turn a burst a broker absorbs into
// errors. What bounds the queues is the producers: awaited commands by their
// callers, events by the handlers that emit them; a group whose service
// stopped for good keeps growing, so a process that runs for long with
// services coming and going wants a broker, whose limits (stream size, queue
// length) are configured there.
//
// Bridges opened with the same URL host share one bus inside the process:
// "gochannel://" and "gochannel://a" are different buses, two opens of
// "gochannel://a" are the same one. This is how several engines in one test
// behave like instances of a service on a broker.
package inproc
