// Package engine is Switchboard's public core: services with typed commands
// and events, the context handlers call other services through, errors that
// cross the wire as data, and the Engine that runs it all on a bridge.
//
// # Contracts
//
// A Command[In, Out] or Event[T] is declared once, in a package shared by
// the service that implements it and every caller. Callers never spell a
// topic:
//
//	var SendWelcome = engine.NewCommand[SendWelcomeIn, SendWelcomeOut]("email", "1", "sendWelcome")
//	var UserCreated = engine.NewEvent[User]("user.created")
//
// # Services
//
// A Service has a name and a version; Handle and Subscribe attach handlers.
// From inside a handler, SendWelcome.Invoke(ctx, in) and
// UserCreated.Emit(ctx, ev) work with the handler's ctx; from outside, with
// WithEngine(ctx, eng). A command may declare an event it emits on success
// (EmitsOnSuccess): its result becomes the event's payload. An Invoke
// waits at most Config.CallTimeout (30 s), or what its CallTimeout option
// says.
//
// # What flows with every message
//
// Meta (message id, correlation id, causation id, W3C traceparent,
// principal, tenant, deadline) is read from a handler's context with
// MetaFrom and is derived automatically for every nested Invoke and Emit;
// WithMeta sets it at the edge, and TraceID gives the trace id of its
// traceparent. RouteFrom says which service, handler, group and topic the
// message being handled reached.
//
// PrincipalID and TenantID are claims carried as metadata, not verified
// proofs: the engine believes what a message read from the broker says, so
// a guard can rely on them only as far as the broker's access control keeps
// untrusted publishers out. At the HTTP edge only the gateway's
// Authenticator sets them. README.md, "Trust model", has the details.
//
// # Input and output
//
// Payloads are JSON. Input is decoded strictly (unknown fields are a 400
// unless AllowUnknownFields; empty payloads, trailing data and wrong types
// are a 400 naming the field) and a payload type's Validate method runs on
// both sides; output is encoded once, on the handler's side.
//
// # Errors
//
// A handler's *Error reaches the caller intact; any other error or a panic
// arrives as ErrInternal (500) and is logged on the service side, with the
// stack for a panic. Timeouts, a missing handler, an unreachable backend, an
// open circuit and a stopping engine are distinct sentinels (see Error).
//
// # Middleware
//
// Any Watermill message.HandlerMiddleware plugs in at three scopes, with
// one verb: Engine.Use (every handler; before Start, like Register),
// Service.Use (one service) and the Use HandlerOption (one handler), run
// outermost first in that order. A middleware sees the incoming message
// (with the handler context, so MetaFrom and RouteFrom work on
// msg.Context()) and, for commands, the reply message the handler
// produced; an error it returns is answered to the caller like a handler's
// error, so guards return ErrUnauthorized or ErrForbidden.
//
// # Lifecycle
//
// Run starts the engine and blocks; on context cancellation (or a signal,
// with Config.HandleSignals) it drains: no handler starts any more,
// in-flight handlers finish and their replies reach the callers waiting on
// this engine within Config.DrainTimeout; past it their contexts are
// cancelled and the drain waits for them to return (a handler owns its
// message until it returns); then connections close. Run waits for all of
// it at most 2 × Config.DrainTimeout. Ready and Health expose readiness and
// bridge connectivity.
//
// A program that owns its lifecycle calls Start and Stop instead of Run.
// Config.SharedBridge runs the engine on a bridge the program opened
// (shared by several engines, or a backend of its own); the engine never
// closes it. Raw access to the bridge, for replay tools, is
// Bridge().Publisher().
//
// Deadlines apply to awaited commands only: an event or a fire-and-forget
// command is handled whenever it arrives, whatever deadline it carries.
//
// # Delivery
//
// Commands are handled by one instance of their service (up to
// Config.CommandConcurrency at once per instance, see Concurrency); events
// reach every subscribing service once, in order per subscription by
// default. A subscription that fails with a transient error is redelivered
// (up to Reliability.MaxDeliveries, then dead-lettered); a permanent failure
// (a 4xx *Error, undecodable payload) is dead-lettered at once: stored in
// Reliability.DeadLetters and acknowledged (see package deadletter for
// listing and replaying). A command whose caller waits is neither retried
// nor dead-lettered: the caller receives the error.
//
// # Delayed and scheduled messages
//
// Command.Schedule and Event.Schedule send a message later, at a given
// time, and return its id, which Engine.Schedules cancels or moves; the
// message is checked at the call and carries the caller's metadata like one
// sent now, plus its due time (Meta.ScheduledFor). Every declares, with a
// service, a message sent on each tick of a cron spec. Config.Scheduler
// keeps them until due: by default in memory on the in-process bus (lost
// with the process), none on a broker (ErrNoScheduler); outbox.Scheduler
// keeps them in PostgreSQL, with any bridge, across restarts. See
// Schedules for the rules on times, and Every for names.
//
// # Vocabulary
//
// One word per concept, in this package and every other: a Config is a
// struct of long-lived settings whose zero fields take documented defaults
// and whose Validate reports every problem at once; a per-call or
// per-declaration choice is a functional option, its type named for what
// it configures (CallOption for Invoke, HandlerOption for Handle and
// Subscribe); no struct is called Options. Every timeout is named for what
// it bounds: CallTimeout (one call), DrainTimeout, ConnectTimeout,
// Reliability.AttemptTimeout (one handler attempt), and a constant
// Default<Name> holds its default (DefaultCallTimeout). Context helpers
// are named the same way everywhere: With<Thing>(ctx, thing) returns a
// context carrying thing (WithEngine, WithMeta, WithPublisher) and
// <Thing>From(ctx) reads it (MetaFrom, RouteFrom).
package engine
