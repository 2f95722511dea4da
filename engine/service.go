package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/router"
)

// Service is a named, versioned set of command handlers and event
// subscriptions. Several versions of one service can run side by side: each
// version has its own topics.
type Service struct {
	name, version string
	id            string
	middleware    []message.HandlerMiddleware
	regs          []*registration
	recurs        []*recurrence // Every
	background    []func(ctx context.Context) error
	errs          []error
}

// NewService returns an empty service. An invalid name or version is
// reported by Engine.Register.
func NewService(name, version string) *Service {
	s := &Service{name: name, version: version, id: router.ServiceID(name, version)}
	for _, err := range []error{router.ValidName("service", name), router.ValidVersion(version)} {
		if err != nil {
			s.errs = append(s.errs, err)
		}
	}
	return s
}

// Name returns the service's name.
func (s *Service) Name() string { return s.name }

// Version returns the service's version.
func (s *Service) Version() string { return s.version }

// String returns "<name>.v<version>".
func (s *Service) String() string { return s.id }

// Use adds middleware around every handler of this service, inside the
// engine's (Engine.Use) and outside each handler's own (the Use
// HandlerOption). The first added runs first. A nil middleware is reported
// by Engine.Register.
func (s *Service) Use(mw ...message.HandlerMiddleware) {
	if err := nilMiddleware(mw); err != nil {
		s.errs = append(s.errs, fmt.Errorf("in Service.Use: %w", err))
		return
	}
	s.middleware = append(s.middleware, mw...)
}

// Background adds fn to what the service runs while its engine runs: fn
// starts, on a goroutine of its own, once the engine's handlers are
// subscribed (Start), with a context that carries the engine (so Invoke,
// Send and Emit work on it) and ends when the engine begins to stop. Stop
// waits for fn to return, up to Config.DrainTimeout. An error fn returns
// before the stop is logged at error level with the service's name: it
// ends fn, not the engine. Packages built on the engine use it for their
// long-running loops (package workflow runs its runs with it). Add it
// before Engine.Register; a nil fn is reported by Register.
func (s *Service) Background(fn func(ctx context.Context) error) {
	if fn == nil {
		s.errs = append(s.errs, errors.New("in Service.Background: nil function"))
		return
	}
	s.background = append(s.background, fn)
}

// HandlerOption configures one command handler or subscription.
type HandlerOption func(*registration)

// Concurrency sets how many messages this handler processes at once in this
// instance, at least 1 (default: Config.CommandConcurrency for commands, 1
// for subscriptions, which keeps events in order).
func Concurrency(n int) HandlerOption {
	return func(r *registration) {
		if n < 1 {
			r.errs = append(r.errs, fmt.Errorf("%s: Concurrency(%d): want at least 1", r.name, n))
		}
		r.concurrency = n
	}
}

// Use adds middleware around this handler only, innermost of the three
// scopes (Engine.Use, Service.Use, this option); the first given runs
// first. A nil middleware is reported by Engine.Register.
func Use(mw ...message.HandlerMiddleware) HandlerOption {
	return func(r *registration) {
		if err := nilMiddleware(mw); err != nil {
			r.errs = append(r.errs, fmt.Errorf("%s: in the Use option: %w", r.name, err))
			return
		}
		r.middleware = append(r.middleware, mw...)
	}
}

// AllowUnknownFields makes this handler accept payload fields its input type
// does not have (the default rejects them with a 400).
func AllowUnknownFields() HandlerOption {
	return func(r *registration) { r.allowUnknown = true }
}

// RetryPolicy replaces Config.Reliability.Retry for this handler.
func RetryPolicy(p Retry) HandlerOption {
	return func(r *registration) {
		if err := p.Validate(); err != nil {
			r.errs = append(r.errs, err)
		}
		r.retry = &p
	}
}

// SubscriptionName distinguishes several subscriptions of one service to the
// same event; each gets its own copy of every event.
func SubscriptionName(name string) HandlerOption {
	return func(r *registration) {
		if err := router.ValidName("subscription", name); err != nil {
			r.errs = append(r.errs, err)
		}
		r.subscription = name
	}
}

// registration is one handler, with its types erased.
type registration struct {
	kind         bridge.Kind
	name         string // command name or event name
	topic        string
	subscription string
	concurrency  int // 0: Config.CommandConcurrency (commands without Concurrency)
	middleware   []message.HandlerMiddleware
	allowUnknown bool
	successTopic string // commands only: event emitted on success
	retry        *Retry
	errs         []error
	// run decodes and validates payload, runs the user's function, and
	// returns the encoded result (nil for subscriptions).
	run func(ctx context.Context, c payloadCodec, payload []byte, allowUnknown bool) ([]byte, error)
}

// Handle registers fn as the handler of command c in service s. The
// command's service and version must be s's.
func Handle[In, Out any](s *Service, c *Command[In, Out], fn func(ctx context.Context, in In) (Out, error), opts ...HandlerOption) {
	r := &registration{kind: bridge.Command, name: c.name, topic: c.topic}
	if c.service != s.name || c.version != s.version {
		r.errs = append(r.errs, fmt.Errorf("command %s does not belong to service %s", c, s))
	}
	if fn == nil {
		r.errs = append(r.errs, fmt.Errorf("command %s: nil handler", c))
	}
	if c.success != nil {
		r.successTopic = c.success.topic
	}
	var ins scratch[In]
	r.run = func(ctx context.Context, cd payloadCodec, payload []byte, allowUnknown bool) ([]byte, error) {
		in, err := ins.decodeInput(cd, payload, allowUnknown)
		if err != nil {
			return nil, err
		}
		out, err := fn(ctx, in)
		if err != nil {
			return nil, err
		}
		b, err := jsonMarshal(out)
		if err != nil {
			return nil, fmt.Errorf("%w: result of %s is not JSON-serialisable: %w", errOutput, c, err)
		}
		return b, nil
	}
	s.add(r, opts)
}

// Subscribe registers fn to receive event ev in service s. Each subscribing
// service gets every event once; its instances share the work.
func Subscribe[T any](s *Service, ev *Event[T], fn func(ctx context.Context, ev T) error, opts ...HandlerOption) {
	r := &registration{kind: bridge.Event, name: ev.name, topic: ev.topic, concurrency: 1}
	if fn == nil {
		r.errs = append(r.errs, fmt.Errorf("subscription to %s: nil handler", ev))
	}
	var vs scratch[T]
	r.run = func(ctx context.Context, cd payloadCodec, payload []byte, allowUnknown bool) ([]byte, error) {
		v, err := vs.decodeInput(cd, payload, allowUnknown)
		if err != nil {
			return nil, err
		}
		return nil, fn(ctx, v)
	}
	s.add(r, opts)
}

func (s *Service) add(r *registration, opts []HandlerOption) {
	for _, o := range opts {
		o(r)
	}
	s.regs = append(s.regs, r)
}

// group returns the consumer group of r in s.
func (s *Service) group(r *registration) string {
	if r.kind == bridge.Command {
		return s.id
	}
	return router.EventGroup(s.name, s.version, r.subscription)
}

// check reports every wiring problem of s.
func (s *Service) check() error {
	errs := append([]error(nil), s.errs...)
	seen := map[string]bool{}
	for _, r := range s.regs {
		errs = append(errs, r.errs...)
		key := r.kind.String() + " " + r.topic + " " + s.group(r)
		if seen[key] {
			what := "command " + r.name + " has two handlers"
			if r.kind == bridge.Event {
				what = "event " + r.name + " has two subscriptions with the same name (use SubscriptionName)"
			}
			errs = append(errs, errors.New(what))
		}
		seen[key] = true
	}
	names := map[string]bool{}
	for _, r := range s.recurs {
		errs = append(errs, r.errs...)
		if names[r.name] {
			errs = append(errs, fmt.Errorf("recurring schedule %s declared twice", r.name))
		}
		names[r.name] = true
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("service %s: %w", s, err)
	}
	return nil
}
