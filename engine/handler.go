package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cenkalti/backoff/v4"
	"github.com/sony/gobreaker"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/middleware"
)

// errOutput marks a result that could not be encoded.
var errOutput = errors.New("switchboard: handler output")

// outgoing builds a message caused by the one handled in ctx (or starting a
// conversation): its Meta derives from ctx's, and with a recording tracer
// its traceparent is a new producer span's, which the returned function
// ends. Replies get no span of their own: they are the end of their
// handler's process span. Its id is the one WithMessageID put on ctx, if
// any (never for a reply, which is answered with the request's), else a
// fresh one; an invalid one is ErrInvalidInput.
func (e *Engine) outgoing(ctx context.Context, topic, kind string, payload []byte, deadline time.Time) (*message.Message, func(error), error) {
	given := ""
	if kind != envelope.KindReply {
		if id, ok := ctx.Value(envelope.MessageIDKey{}).(string); ok {
			if err := checkMessageID(id); err != nil {
				return nil, nil, err
			}
			given = id
		}
	}
	parent, _ := envelope.MetaFrom(ctx)
	if kind != envelope.KindCommand || deadline.IsZero() {
		// Only an awaited command inherits a deadline: events, replies and
		// fire-and-forget commands are processed whenever they arrive.
		parent.Deadline = time.Time{}
	}
	var meta Meta
	if given != "" {
		meta = envelope.Child(parent, given, deadline)
	} else {
		meta = envelope.NewChild(parent, deadline)
	}
	msg := message.NewMessage(meta.MessageID, payload)
	msg.SetContext(ctx)
	envelope.Write(msg, meta)
	msg.Metadata.Set(envelope.KeyKind, kind)
	if kind == envelope.KindReply || e.tracingOff() {
		return msg, noSpan, nil
	}
	return msg, e.producerSpan(ctx, msg, parent, meta, topic), nil
}

// producerSpan starts msg's producer span, as a child of ctx's span or of
// parent's traceparent, and writes its trace context on msg when it
// records.
func (e *Engine) producerSpan(ctx context.Context, msg *message.Message, parent, meta Meta, topic string) func(error) {
	if !trace.SpanContextFromContext(ctx).IsValid() && parent.Traceparent != "" {
		ctx = middleware.Extract(ctx, message.Metadata{envelope.KeyTraceparent: parent.Traceparent, envelope.KeyTracestate: parent.Tracestate})
	}
	sctx, span := e.tracer.Start(ctx, topic+" publish", trace.WithSpanKind(trace.SpanKindProducer))
	if span.IsRecording() { // attributes and injection only for a real tracer
		span.SetAttributes(
			attribute.String("messaging.system", "switchboard"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", topic),
			attribute.String("messaging.message.id", msg.UUID),
			attribute.String("messaging.message.conversation_id", meta.CorrelationID),
		)
		middleware.Inject(sctx, msg.Metadata)
	}
	return func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// noSpan is stamp's finish when it started no span.
func noSpan(error) {}

// publish sends msg to topic (see hand), ending its span.
func (e *Engine) publish(topic string, msg *message.Message, finish func(error)) error {
	err := e.hand(topic, msg)
	finish(err)
	return err
}

// hand sends a message the engine built and gives up: on the in-process
// bus without a copy, and an awaited command or a reply straight to a
// handler or the waiting caller (inproc.Direct); else published. Once it
// returned nil, msg is the bridge's: the caller must not touch it.
func (e *Engine) hand(topic string, msg *message.Message) error {
	if e.direct != nil {
		return e.direct.Call(topic, msg)
	}
	return e.b.Publisher().Publish(topic, msg)
}

// call publishes a command and waits for its reply payload, through the
// command's caller-side circuit breaker, with caller-side retries when the
// command is idempotent.
func (e *Engine) call(ctx context.Context, topic string, payload []byte, timeout time.Duration, idempotent bool) ([]byte, error) {
	switch s := e.State(); s {
	case StateRunning, StateDraining:
	default:
		return nil, with(ErrUnavailable, fmt.Sprintf("calling %s: engine is %s", topic, s), nil)
	}
	if timeout <= 0 {
		timeout = e.cfg.CallTimeout
	}
	cb := e.breaker(topic)
	attempt := func() ([]byte, error) {
		if cb == nil {
			return e.callOnce(ctx, topic, payload, timeout)
		}
		// The reply goes around Execute's any: a []byte in an interface
		// is one more allocation per call.
		var out []byte
		_, err := cb.Execute(func() (any, error) {
			var err error
			out, err = e.callOnce(ctx, topic, payload, timeout)
			return nil, err
		})
		if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
			return nil, with(ErrCircuitOpen, "circuit open for "+topic+": failing fast", map[string]any{"topic": topic})
		}
		return out, err
	}
	if !idempotent {
		return attempt()
	}
	// Attempts and the caller's context bound the retries, not the policy's
	// MaxElapsedTime: each attempt already waits up to its timeout.
	policy := e.cfg.Reliability.Retry
	policy.Backoff.MaxElapsedTime = -1
	var out []byte
	err := backoff.Retry(func() error {
		var err error
		out, err = attempt()
		if err != nil && !retryableCall(err) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(policy.NewBackOff(), ctx))
	if errors.Is(err, context.DeadlineExceeded) {
		var we *Error
		if !errors.As(err, &we) {
			d, _ := ctx.Deadline()
			return nil, timeoutError(topic, timeout, d)
		}
	}
	return out, err
}

// retryableCall: a caller retries only when the command may not have run,
// or ran without answering in time — never after an answer from the
// handler, even a 5xx one.
func retryableCall(err error) bool {
	return errors.Is(err, ErrTimeout) || errors.Is(err, ErrUnreachable) || errors.Is(err, ErrNoHandler)
}

// downstreamFailure tells the caller-side breaker which results count
// against the downstream's health: timeouts and 5xx.
func downstreamFailure(err error) bool {
	var e *Error
	return err != nil && errors.As(err, &e) && e.Code >= 500
}

// breaker returns the caller-side breaker of topic (nil when disabled),
// made from Reliability.CallBreaker on first use.
func (e *Engine) breaker(topic string) *gobreaker.CircuitBreaker {
	p := e.cfg.Reliability.CallBreaker
	if p.Disabled {
		return nil
	}
	if cb, ok := e.breakers.Load(topic); ok {
		return cb.(*gobreaker.CircuitBreaker)
	}
	if p.IsFailure == nil {
		p.IsFailure = downstreamFailure
	}
	b := middleware.Breaker{BreakerPolicy: p, Name: "call " + topic, Logger: e.log}
	cb, _ := e.breakers.LoadOrStore(topic, b.New())
	return cb.(*gobreaker.CircuitBreaker)
}

func (e *Engine) callOnce(ctx context.Context, topic string, payload []byte, timeout time.Duration) ([]byte, error) {
	// The earliest of the call's timeout, ctx's deadline and the deadline of
	// the message being handled: the one stamp writes on the request.
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if p, ok := envelope.MetaFrom(ctx); ok && !p.Deadline.IsZero() && p.Deadline.Before(deadline) {
		deadline = p.Deadline
	}
	msg, finish, err := e.outgoing(ctx, topic, envelope.KindCommand, payload, deadline)
	if err != nil {
		return nil, err
	}
	msg.Metadata.Set(envelope.KeyReplyTo, e.replyTopic)
	if err := envelope.CheckMetadata(msg.Metadata); err != nil {
		finish(err) // the receiver would refuse it: say so before sending
		return nil, err
	}

	id := msg.UUID // msg is the bridge's once handed over
	reply, ok := e.calls.Expect(id)
	if !ok {
		finish(ErrInvalidInput)
		return nil, with(ErrInvalidInput, "a call with message id "+id+" already waits for its reply on this engine",
			map[string]any{"topic": topic, "message_id": id})
	}
	defer e.calls.Forget(id, reply)
	err = e.hand(topic, msg)
	finish(err)
	if err != nil {
		return nil, publishFailure(topic, err)
	}
	timer := startTimer(time.Until(deadline))
	defer stopTimer(timer)
	select {
	case r := <-reply:
		if r.Metadata.Get(envelope.KeyError) == "1" {
			return nil, envelope.UnmarshalError(r.Payload)
		}
		return r.Payload, nil
	case <-timer.C:
		return nil, timeoutError(topic, timeout, deadline)
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, timeoutError(topic, timeout, deadline)
		}
		return nil, fmt.Errorf("invoke %s: %w", topic, ctx.Err())
	case <-e.stopped:
		return nil, with(ErrShuttingDown, "engine stopped while waiting for "+topic, nil)
	}
}

// timers recycles callOnce's timers. Since Go 1.23 a stopped timer
// delivers nothing stale, so one can be reset and reused safely.
var timers sync.Pool

func startTimer(d time.Duration) *time.Timer {
	if t, ok := timers.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

func stopTimer(t *time.Timer) {
	t.Stop()
	timers.Put(t)
}

func timeoutError(topic string, timeout time.Duration, deadline time.Time) *Error {
	return with(ErrTimeout, fmt.Sprintf("no reply from %s before the deadline", topic),
		map[string]any{"topic": topic, "timeout": timeout.String(), "deadline": deadline.UTC().Format(time.RFC3339Nano)})
}

// send publishes a command nobody waits for (fire-and-forget) or an event.
// A missing subscriber is not an error for an event; for a command it is
// ErrNoHandler.
func (e *Engine) send(ctx context.Context, topic, kind string, payload []byte) error {
	msg, finish, err := e.outgoing(ctx, topic, kind, payload, time.Time{})
	if err != nil {
		return err
	}
	if err := envelope.CheckMetadata(msg.Metadata); err != nil {
		finish(err)
		return err
	}
	if pub, ok := ctx.Value(publisherKey{}).(message.Publisher); ok {
		err := pub.Publish(topic, msg) // e.g. the outbox, inside the caller's transaction
		finish(err)
		if err != nil {
			return fmt.Errorf("publishing to %s: %w", topic, err)
		}
		return nil
	}
	if err := e.publish(topic, msg, finish); err != nil {
		if errors.Is(err, bridge.ErrNoSubscriber) && kind == envelope.KindEvent {
			return nil
		}
		return publishFailure(topic, err)
	}
	return nil
}

// publishFailure is what a caller gets when its message could not be
// published: ErrNoHandler when the backend knows nobody consumes topic,
// ErrPayloadTooLarge (413: the caller must send less, retrying cannot help)
// when the backend refused the size, ErrUnreachable (counted by the
// caller's breaker, retried for idempotent commands) otherwise.
func publishFailure(topic string, err error) *Error {
	switch {
	case errors.Is(err, bridge.ErrNoSubscriber):
		return with(ErrNoHandler, "no handler registered for "+topic, map[string]any{"topic": topic})
	case errors.Is(err, bridge.ErrTooLarge):
		return with(ErrPayloadTooLarge, "the message to "+topic+" is too large for the transport", map[string]any{"topic": topic})
	case errors.Is(err, bridge.ErrRefused):
		return with(ErrUnprocessable, "the transport cannot carry the message to "+topic, map[string]any{"topic": topic})
	}
	return with(ErrUnreachable, fmt.Sprintf("publishing to %s: %v", topic, err), map[string]any{"topic": topic})
}

// handler turns one registration into the function the router runs: it
// builds the handler context, runs the middleware chain around the user's
// function, and turns the outcome into a reply, a success event, an ack or
// a nack.
func (e *Engine) handler(s *Service, r *registration) message.NoPublishHandlerFunc {
	route := envelope.Route{Service: s.id, Handler: r.name, Group: s.group(r), Topic: r.topic, Kind: envelope.KindEvent}
	if r.kind == bridge.Command {
		route.Kind = envelope.KindCommand
	}
	// What the contexts of this handler's messages share, awaited or not.
	scope := &envelope.Scope{Stop: e.hardCtx, Engine: e, Route: route}
	awaitedScope := new(*scope)
	awaitedScope.Route.Awaited = true
	log := e.log.With("service", s.id, "handler", r.name, "kind", route.Kind)
	inner := func(msg *message.Message) ([]*message.Message, error) {
		out, err := r.run(msg.Context(), e.codec, msg.Payload, r.allowUnknown)
		if err != nil || r.kind != bridge.Command {
			return nil, err
		}
		rt, _ := envelope.RouteFrom(msg.Context())
		awaited := rt.Awaited
		if !awaited && r.successTopic == "" {
			return nil, nil // the result goes nowhere: its size does not matter
		}
		if len(out) > e.codec.maxBytes {
			// Permanent: running the handler again makes the same result.
			return nil, middleware.Permanent(fmt.Errorf("%w: result of %s is %d bytes, the limit is %d", errOutput, r.topic, len(out), e.codec.maxBytes))
		}
		if r.successTopic != "" {
			// Inside the chain, so that it joins a transaction a middleware
			// opened (the inbox's outbox) and a failure is retried or
			// dead-lettered like the handler's own; not cut by the deadline.
			if err := e.send(context.WithoutCancel(msg.Context()), r.successTopic, envelope.KindEvent, out); err != nil {
				return nil, fmt.Errorf("success event %s: %w", r.successTopic, err)
			}
		}
		if !awaited {
			return nil, nil
		}
		reply, _, _ := e.outgoing(msg.Context(), "", envelope.KindReply, out, time.Time{})
		return []*message.Message{reply}, nil
	}
	chain := message.HandlerFunc(inner)
	mws := append(e.reliability(r, route, log), e.mws...)
	mws = append(append(mws, s.middleware...), r.middleware...)
	for i := len(mws) - 1; i >= 0; i-- {
		chain = mws[i](chain)
	}

	return func(msg *message.Message) error {
		if !e.handlers.enter() {
			// Stop has begun: no handler starts any more. The message goes
			// back to the backend for another instance, or this one after a
			// restart, after bridge.DefaultNackDelay (no delay of its own:
			// not a failure, and this instance must not spin on it while
			// it drains). Nacked here rather than by an error, which
			// Watermill would log as a handler failure.
			msg.Nack()
			return nil
		}
		defer e.handlers.leave()
		if g := msg.Metadata.Get(deadletter.TargetGroupKey); g != "" && g != route.Group {
			return nil // a replay or retry meant for another group
		}
		meta := envelope.Read(msg)
		if meta.CorrelationID == "" { // from a producer that is not Switchboard
			meta.CorrelationID = msg.UUID
		}
		mlog := msgLogger{log, msg.UUID, meta.CorrelationID}
		replyTo := msg.Metadata.Get(envelope.KeyReplyTo) // before the chain: middleware may edit metadata
		// Only a command with a valid reply topic is awaited (replyToCheck
		// refuses the others in the chain).
		awaited := r.kind == bridge.Command && validReplyTo(replyTo)
		if awaited && !meta.Deadline.IsZero() && time.Now().After(meta.Deadline) {
			mlog.get().Warn("command arrived after its caller's deadline; nobody waits for it, not handled", "deadline", meta.Deadline)
			return nil
		}
		if !awaited {
			// Only an awaited command has a deadline (see stamp): one on an
			// event or a fire-and-forget command is foreign or forged, and
			// would end the handler's context before it starts.
			meta.Deadline = time.Time{}
		}
		// The handler's context: not cancelled by the subscription (see
		// package router), carrying the engine, Meta and Route, ending at
		// meta's deadline (cleared above on messages nobody awaits), when
		// a drain runs out of time (e.hardCtx), or when the handler is done.
		sc := scope
		if awaited {
			sc = awaitedScope
		}
		ctx := envelope.Handling(msg.Context(), meta, sc)
		defer ctx.End()
		msg.SetContext(ctx)

		produced, err := e.runChain(chain, msg, mlog)
		if !awaited {
			return err // nil acks; an error nacks (DeadLetter has set the delay)
		}
		var reply *message.Message
		if err == nil {
			if len(produced) != 1 {
				err = fmt.Errorf("%w: middleware left %d messages, want the reply alone", errOutput, len(produced))
			} else {
				reply = produced[0]
			}
		}
		if err != nil {
			reply = e.errorReply(ctx, e.wireError(err, msg, mlog))
		}
		if e.direct == nil { // a broker's publisher may read it; a direct hand-off sets its own
			reply.SetContext(context.WithoutCancel(ctx))
		}
		return e.sendReply(ctx, replyTo, reply, msg, mlog)
	}
}

// reliability returns the engine's middleware for one handler, outermost
// first, in the order package middleware documents. Retry and DeadLetter do
// not apply to a command whose caller waits: the caller receives the error
// and decides (Idempotent commands are retried by the caller), because
// retrying a handler that is not idempotent behind its caller's back would
// repeat its side effects.
func (e *Engine) reliability(r *registration, route envelope.Route, log *slog.Logger) []message.HandlerMiddleware {
	rel := e.cfg.Reliability
	retry := rel.Retry
	if r.retry != nil {
		retry = *r.retry
	}
	mws := []message.HandlerMiddleware{
		e.traced(middleware.Tracing(e.cfg.TracerProvider)),
		unlessAwaited(middleware.DeadLetter{Store: rel.DeadLetters, MaxDeliveries: rel.MaxDeliveries, Redelivery: rel.Redelivery, Logger: log}.Middleware()),
		metadataLimits,
	}
	if r.kind == bridge.Command {
		mws = append(mws, replyToCheck)
	}
	if r.kind == bridge.Event && !rel.Breaker.Disabled {
		b := middleware.Breaker{BreakerPolicy: rel.Breaker, Name: route.Group + " " + route.Topic, Logger: log}
		mws = append(mws, b.Middleware())
	}
	return append(mws,
		unlessAwaited(retry.Middleware()),
		middleware.AttemptTimeout(rel.AttemptTimeout),
		middleware.Recoverer(log),
	)
}

// unlessAwaited applies mw only to messages nobody waits a reply for
// (Route.Awaited false): events, fire-and-forget commands, and commands
// whose reply_to is no reply topic (replyToCheck refuses those, and
// DeadLetter must store them).
func unlessAwaited(mw message.HandlerMiddleware) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		wrapped := mw(h)
		return func(msg *message.Message) ([]*message.Message, error) {
			if rt, _ := envelope.RouteFrom(msg.Context()); rt.Awaited {
				return h(msg)
			}
			return wrapped(msg)
		}
	}
}

// msgLogger is a handler's logger for one message, made only when
// something is logged: slog's With copies its attributes on every call, and
// most messages log nothing.
type msgLogger struct {
	base            *slog.Logger
	id, correlation string
}

func (l msgLogger) get() *slog.Logger {
	return l.base.With("message_id", l.id, "correlation_id", l.correlation)
}

// runChain runs the chain, turning a panic that escaped every middleware
// into an error (logged with its stack). It returns only when the chain
// has: until then the chain owns the message (its metadata, its ack), so
// giving up on it early would let the backend redeliver a message still
// being handled. A handler that outlives its context is the one that keeps
// it waiting; Stop logs them.
func (e *Engine) runChain(chain message.HandlerFunc, msg *message.Message, log msgLogger) (msgs []*message.Message, err error) {
	defer func() {
		if v := recover(); v != nil {
			log.get().Error("handler panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			msgs, err = nil, &middleware.PanicError{Value: v}
		}
	}()
	return chain(msg)
}

// wireError turns a handler's error into what the caller receives.
// Unexpected errors are logged here and reach the caller without details.
func (e *Engine) wireError(err error, msg *message.Message, log msgLogger) *Error {
	var we *Error
	if errors.As(err, &we) {
		return we
	}
	if errors.Is(err, context.Canceled) && e.hardCtx.Err() != nil {
		// Stop cut the handler short: the service is going away, it did
		// not fail, and another instance may take the call.
		log.get().Warn("handler cut short by the engine stopping", "err", err)
		return with(ErrShuttingDown, "the service stopped before the handler finished", nil)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return with(ErrTimeout, "the handler ran out of time", nil)
	}
	var p *middleware.PanicError
	if !errors.As(err, &p) { // a panic was logged with its stack already
		log.get().Error("handler failed", "err", err)
	}
	return with(ErrInternal, "internal error", map[string]any{"message_id": msg.UUID})
}
