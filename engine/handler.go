package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/envelope"
	"github.com/switchboard-go/switchboard/router"
)

// errOutput marks a result that could not be encoded.
var errOutput = errors.New("switchboard: handler output")

// call publishes a command and waits for its reply payload.
func (e *Engine) call(ctx context.Context, topic string, payload []byte, timeout time.Duration) ([]byte, error) {
	switch s := e.State(); s {
	case StateRunning, StateDraining:
	default:
		return nil, with(ErrUnavailable, fmt.Sprintf("calling %s: engine is %s", topic, s), nil)
	}
	if timeout <= 0 {
		timeout = e.cfg.DefaultTimeout
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	parent, _ := envelope.MetaFrom(ctx)
	id := watermill.NewUUID()
	meta := envelope.Child(parent, id, deadline)
	msg := message.NewMessage(id, payload)
	msg.SetContext(ctx)
	envelope.Write(msg, meta)
	msg.Metadata.Set(envelope.KeyKind, envelope.KindCommand)
	msg.Metadata.Set(envelope.KeyReplyTo, router.ReplyTopic(e.cfg.InstanceID))

	reply, forget := e.calls.Expect(id)
	defer forget()
	if err := e.b.Publisher().Publish(topic, msg); err != nil {
		if errors.Is(err, bridge.ErrNoSubscriber) {
			return nil, with(ErrNoHandler, "no handler registered for "+topic, map[string]any{"topic": topic})
		}
		return nil, with(ErrUnreachable, fmt.Sprintf("publishing to %s: %v", topic, err), map[string]any{"topic": topic})
	}
	timer := time.NewTimer(time.Until(meta.Deadline))
	defer timer.Stop()
	select {
	case r := <-reply:
		if r.Metadata.Get(envelope.KeyError) == "1" {
			return nil, envelope.UnmarshalError(r.Payload)
		}
		return r.Payload, nil
	case <-timer.C:
		return nil, timeoutError(topic, timeout, meta.Deadline)
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, timeoutError(topic, timeout, meta.Deadline)
		}
		return nil, fmt.Errorf("invoke %s: %w", topic, ctx.Err())
	case <-e.stopped:
		return nil, with(ErrShuttingDown, "engine stopped while waiting for "+topic, nil)
	}
}

func timeoutError(topic string, timeout time.Duration, deadline time.Time) *Error {
	return with(ErrTimeout, fmt.Sprintf("no reply from %s before the deadline", topic),
		map[string]any{"topic": topic, "timeout": timeout.String(), "deadline": deadline.UTC().Format(time.RFC3339Nano)})
}

// emit publishes an event. Events do not inherit the caller's deadline: they
// are processed whenever their subscribers get to them.
func (e *Engine) emit(ctx context.Context, topic string, payload []byte) error {
	parent, _ := envelope.MetaFrom(ctx)
	parent.Deadline = time.Time{}
	msg := message.NewMessage(watermill.NewUUID(), payload)
	msg.SetContext(ctx)
	envelope.Write(msg, envelope.Child(parent, msg.UUID, time.Time{}))
	msg.Metadata.Set(envelope.KeyKind, envelope.KindEvent)
	if err := e.b.Publisher().Publish(topic, msg); err != nil && !errors.Is(err, bridge.ErrNoSubscriber) {
		return with(ErrUnreachable, fmt.Sprintf("publishing event to %s: %v", topic, err), map[string]any{"topic": topic})
	}
	return nil
}

// newReply builds the reply to the message handled in ctx.
func newReply(ctx context.Context, payload []byte) *message.Message {
	parent, _ := envelope.MetaFrom(ctx)
	parent.Deadline = time.Time{}
	m := message.NewMessage(watermill.NewUUID(), payload)
	envelope.Write(m, envelope.Child(parent, m.UUID, time.Time{}))
	m.Metadata.Set(envelope.KeyKind, envelope.KindReply)
	return m
}

// handler turns one registration into the function the router runs: it
// builds the handler context, runs the middleware chain around the user's
// function, and turns the outcome into a reply, a success event, an ack or
// a nack.
func (e *Engine) handler(s *Service, r *registration) message.NoPublishHandlerFunc {
	inner := func(msg *message.Message) ([]*message.Message, error) {
		out, err := r.run(msg.Context(), e.codec, msg.Payload, r.allowUnknown)
		if err != nil || r.kind != bridge.Command {
			return nil, err
		}
		return []*message.Message{newReply(msg.Context(), out)}, nil
	}
	chain := message.HandlerFunc(inner)
	mws := append(append(append([]message.HandlerMiddleware(nil), e.cfg.Middleware...), s.middleware...), r.middleware...)
	for i := len(mws) - 1; i >= 0; i-- {
		chain = mws[i](chain)
	}
	log := e.log.With("service", s.id, "handler", r.name, "kind", r.kind.String())

	return func(msg *message.Message) error {
		meta := envelope.Read(msg)
		if meta.CorrelationID == "" { // from a producer that is not Switchboard
			meta.CorrelationID = msg.UUID
		}
		mlog := log.With("message_id", msg.UUID, "correlation_id", meta.CorrelationID)
		if !meta.Deadline.IsZero() && time.Now().After(meta.Deadline) {
			mlog.Warn("message arrived after its deadline; nobody waits for it, not handled", "deadline", meta.Deadline)
			return nil
		}
		ctx, cancel := e.handlerContext(msg.Context(), meta)
		defer cancel()
		msg.SetContext(ctx)

		produced, err := e.runChain(ctx, chain, msg, mlog)
		if r.kind == bridge.Event {
			return e.eventOutcome(err, mlog)
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
			reply = newReply(ctx, envelope.MarshalError(e.wireError(err, msg, mlog)))
			reply.Metadata.Set(envelope.KeyError, "1")
		} else if r.successTopic != "" {
			if err := e.emit(ctx, r.successTopic, reply.Payload); err != nil {
				mlog.Error("success event not published; the command will be redelivered", "event_topic", r.successTopic, "err", err)
				return err
			}
		}
		replyTo := msg.Metadata.Get(envelope.KeyReplyTo)
		if replyTo == "" {
			return nil // fire-and-forget
		}
		reply.SetContext(context.WithoutCancel(ctx))
		if err := e.b.Publisher().Publish(replyTo, reply); err != nil {
			if errors.Is(err, bridge.ErrNoSubscriber) {
				mlog.Warn("caller is gone; reply dropped", "reply_to", replyTo)
				return nil
			}
			mlog.Error("reply not published; the command will be redelivered", "reply_to", replyTo, "err", err)
			return err
		}
		return nil
	}
}

// handlerContext derives a handler's context: not cancelled by the
// subscription (see package router), carrying the engine and the message's
// Meta, ending at the message's deadline or when a drain runs out of time.
func (e *Engine) handlerContext(parent context.Context, meta Meta) (context.Context, context.CancelFunc) {
	ctx := envelope.WithMeta(e.Context(context.WithoutCancel(parent)), meta)
	var cancelDeadline context.CancelFunc = func() {}
	if !meta.Deadline.IsZero() {
		ctx, cancelDeadline = context.WithDeadline(ctx, meta.Deadline)
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(e.hardCtx, cancel)
	return ctx, func() { stop(); cancel(); cancelDeadline() }
}

type panicError struct{ value any }

func (p panicError) Error() string { return fmt.Sprintf("panic: %v", p.value) }

type result struct {
	msgs []*message.Message
	err  error
}

// runChain runs the chain, turning a panic into an error (logged with its
// stack), and gives up on a handler that is still running when ctx ends.
func (e *Engine) runChain(ctx context.Context, chain message.HandlerFunc, msg *message.Message, log *slog.Logger) ([]*message.Message, error) {
	done := make(chan result, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				log.Error("handler panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				done <- result{err: panicError{v}}
			}
		}()
		msgs, err := chain(msg)
		done <- result{msgs, err}
	}()
	select {
	case r := <-done:
		return r.msgs, r.err
	case <-ctx.Done():
		select { // it may have finished at the same moment
		case r := <-done:
			return r.msgs, r.err
		default:
		}
		log.Error("handler did not return after its context ended; abandoned", "cause", context.Cause(ctx))
		return nil, fmt.Errorf("handler abandoned: %w", ctx.Err())
	}
}

// wireError turns a handler's error into what the caller receives.
// Unexpected errors are logged here and reach the caller without details.
func (e *Engine) wireError(err error, msg *message.Message, log *slog.Logger) *Error {
	var we *Error
	if errors.As(err, &we) {
		return we
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return with(ErrTimeout, "the handler ran out of time", nil)
	}
	var p panicError
	if !errors.As(err, &p) { // a panic was logged with its stack already
		log.Error("handler failed", "err", err)
	}
	return with(ErrInternal, "internal error", map[string]any{"message_id": msg.UUID})
}

// eventOutcome decides ack or nack for a subscription's result: a permanent
// failure (4xx, undecodable payload) is logged and acked, because
// redelivering it cannot help; anything else is nacked for redelivery.
func (e *Engine) eventOutcome(err error, log *slog.Logger) error {
	if err == nil {
		return nil
	}
	var we *Error
	if errors.As(err, &we) && we.Permanent() {
		log.Error("event rejected permanently; acked without effect", "err", err)
		return nil
	}
	return err
}
