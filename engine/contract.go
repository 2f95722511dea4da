package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/router"
)

// Command is a typed request/response contract: the service that implements
// it registers a handler with Handle, and any caller, anywhere, calls Invoke.
// Declare it once, as a package-level variable shared by both sides.
type Command[In, Out any] struct {
	service, version, name string
	topic                  string
	success                *Event[Out]
	idempotent             bool
	ins                    scratch[In]
	outs                   scratch[Out]
}

// NewCommand declares command name of service at version. Names are checked
// (router.ValidName, router.ValidVersion); an invalid one panics, like
// regexp.MustCompile, because contracts are package-level declarations.
func NewCommand[In, Out any](service, version, name string) *Command[In, Out] {
	for _, err := range []error{router.ValidName("service", service), router.ValidVersion(version), router.ValidName("command", name)} {
		if err != nil {
			panic("switchboard: NewCommand: " + err.Error())
		}
	}
	return &Command[In, Out]{service: service, version: version, name: name, topic: router.CommandTopic(service, version, name)}
}

// EmitsOnSuccess declares that every successful call emits ev with the
// handler's result as payload, after the handler returns and before the
// reply is sent, inside every middleware (so inside an inbox transaction,
// through its outbox). If the event cannot be published the call fails like
// a handler error. It returns c for use in the declaration.
func (c *Command[In, Out]) EmitsOnSuccess(ev *Event[Out]) *Command[In, Out] {
	c.success = ev
	return c
}

// Idempotent declares that running the command twice has the effect of
// running it once, so a caller may retry it: Invoke then retries, with
// Config.Reliability.Retry's backoff, when the call timed out or the
// service was unavailable — never after a handled error. It returns c.
func (c *Command[In, Out]) Idempotent() *Command[In, Out] {
	c.idempotent = true
	return c
}

// String returns "<service>.v<version>.<name>", which is also its topic.
func (c *Command[In, Out]) String() string { return c.topic }

// Service returns the name of the service that implements the command.
func (c *Command[In, Out]) Service() string { return c.service }

// Version returns the version of the service that implements the command.
func (c *Command[In, Out]) Version() string { return c.version }

// Name returns the command's name within its service.
func (c *Command[In, Out]) Name() string { return c.name }

// CallOption changes one Invoke.
type CallOption func(*callOptions)

type callOptions struct {
	timeout time.Duration
}

// CallTimeout bounds this call instead of Config.CallTimeout. The caller's
// context deadline, and the deadline of the message being handled, still
// apply when earlier.
func CallTimeout(d time.Duration) CallOption {
	return func(o *callOptions) { o.timeout = d }
}

// Invoke sends in to the command's service and waits for its result. ctx
// must come from a handler or from WithEngine. Errors are *Error values:
// the handler's own, or ErrInvalidInput, ErrPayloadTooLarge, ErrTimeout,
// ErrNoHandler, ErrUnreachable, ErrShuttingDown; ErrNoEngine when ctx has no
// engine; ctx.Err() when ctx is cancelled.
func (c *Command[In, Out]) Invoke(ctx context.Context, in In, opts ...CallOption) (Out, error) {
	var out Out
	e, err := engineFrom(ctx)
	if err != nil {
		return out, fmt.Errorf("invoke %s: %w", c.topic, err)
	}
	timeout := e.cfg.CallTimeout
	if len(opts) > 0 { // o escapes to the options: allocated only when there are some
		o := callOptions{timeout: timeout}
		for _, opt := range opts {
			opt(&o)
		}
		timeout = o.timeout
	}
	payload, err := c.ins.encodeInput(e.codec, in)
	if err != nil {
		return out, err
	}
	reply, err := e.call(ctx, c.topic, payload, timeout, c.idempotent)
	if err != nil {
		return out, err
	}
	if out, err = c.outs.decodeOutput(e.codec, reply); err != nil {
		return out, fmt.Errorf("invoke %s: %w", c.topic, err)
	}
	return out, nil
}

// Send sends in to the command's service without waiting for a result
// (fire-and-forget): it returns once the bridge accepted the message. The
// handler's result is discarded; if it fails, the message is retried and
// finally dead-lettered like an event. ErrNoHandler when the backend knows
// nobody consumes the command.
func (c *Command[In, Out]) Send(ctx context.Context, in In) error {
	e, err := engineFrom(ctx)
	if err != nil {
		return fmt.Errorf("send %s: %w", c.topic, err)
	}
	payload, err := e.codec.encodeInput(&in)
	if err != nil {
		return err
	}
	return e.send(ctx, c.topic, envelope.KindCommand, payload)
}

// Schedule sends in to the command's service at at, fire-and-forget (see
// Send), and returns the schedule id (the message's id), for
// Engine.Schedules. The input is encoded and checked now, like Send's; the
// message carries the metadata it would carry if sent now, plus its due
// time (Meta.ScheduledFor). See Engine.Schedules for the rules on at and
// the errors.
func (c *Command[In, Out]) Schedule(ctx context.Context, at time.Time, in In) (string, error) {
	e, err := engineFrom(ctx)
	if err != nil {
		return "", fmt.Errorf("schedule %s: %w", c.topic, err)
	}
	payload, err := e.codec.encodeInput(&in)
	if err != nil {
		return "", err
	}
	return e.schedule(ctx, c.topic, envelope.KindCommand, payload, at)
}

// target makes a command a Target of Every.
func (c *Command[In, Out]) target(In) (topic, kind string) { return c.topic, envelope.KindCommand }

// Event is a typed event contract: services Subscribe to it, anyone Emits
// it. Declare it once, as a package-level variable.
type Event[T any] struct {
	name, topic string
	payloads    scratch[T]
}

// NewEvent declares an event named name ("user.created"). An invalid name
// panics (see NewCommand).
func NewEvent[T any](name string) *Event[T] {
	if err := router.ValidEventName(name); err != nil {
		panic("switchboard: NewEvent: " + err.Error())
	}
	return &Event[T]{name: name, topic: router.EventTopic(name)}
}

// String returns the event's name.
func (ev *Event[T]) String() string { return ev.name }

// Emit publishes payload to every subscribing service. It returns once the
// bridge accepted the message (with no subscriber at all, that is at once).
// ctx must come from a handler or from WithEngine.
func (ev *Event[T]) Emit(ctx context.Context, payload T) error {
	e, err := engineFrom(ctx)
	if err != nil {
		return fmt.Errorf("emit %s: %w", ev.name, err)
	}
	body, err := ev.payloads.encodeInput(e.codec, payload)
	if err != nil {
		return err
	}
	return e.send(ctx, ev.topic, envelope.KindEvent, body)
}

// Schedule emits payload at at and returns the schedule id (the message's
// id), for Engine.Schedules. The payload is encoded and checked now, like
// Emit's. See Engine.Schedules for the rules on at and the errors.
func (ev *Event[T]) Schedule(ctx context.Context, at time.Time, payload T) (string, error) {
	e, err := engineFrom(ctx)
	if err != nil {
		return "", fmt.Errorf("schedule %s: %w", ev.name, err)
	}
	body, err := e.codec.encodeInput(&payload)
	if err != nil {
		return "", err
	}
	return e.schedule(ctx, ev.topic, envelope.KindEvent, body, at)
}

// target makes an event a Target of Every.
func (ev *Event[T]) target(T) (topic, kind string) { return ev.topic, envelope.KindEvent }
