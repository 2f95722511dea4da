package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/internal/cronspec"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/router"
)

// maxScheduleYear is the last year a message may be scheduled in: RFC 3339,
// which carries "scheduled_for", has four-digit years.
const maxScheduleYear = 9999

// checkAt refuses a time a message cannot be scheduled at: the zero time,
// or one outside years 1 to 9999 (UTC). A time in the past is valid: the
// message is due at once.
func checkAt(at time.Time) error {
	if at.IsZero() {
		return Invalid("at", "is the zero time")
	}
	if y := at.UTC().Year(); y < 1 || y > maxScheduleYear {
		return Invalid("at", fmt.Sprintf("is in year %d, outside 1 to %d", y, maxScheduleYear))
	}
	return nil
}

// scheduler returns the engine's Scheduler for op, or an error wrapping
// ErrNoScheduler when it has none, or ErrUnavailable (503) unless the
// engine is running or draining (a handler finishing during the drain may
// still schedule a follow-up).
func (e *Engine) scheduler(op string) (Scheduler, error) {
	if e.sched == nil {
		return nil, fmt.Errorf("%s: %w", op, ErrNoScheduler)
	}
	switch s := e.State(); s {
	case StateRunning, StateDraining:
		return e.sched, nil
	default:
		return nil, with(ErrUnavailable, fmt.Sprintf("%s: engine is %s", op, s), nil)
	}
}

// schedule hands the scheduler a message built as send builds one, plus
// its due time in "scheduled_for", and returns its id. On a context
// carrying a publisher (WithPublisher: outbox.WithTx) the message goes
// through that publisher instead, as Send's and Emit's do: the outbox
// stores it with its due time in the caller's transaction, and whatever
// forwards that outbox (outbox.Relay, an outbox.Scheduler's Run) publishes
// it when due; this engine needs no Scheduler then.
func (e *Engine) schedule(ctx context.Context, topic, kind string, payload []byte, at time.Time) (string, error) {
	op := "schedule " + topic
	pub, inTx := ctx.Value(publisherKey{}).(message.Publisher)
	var sched Scheduler
	if !inTx {
		var err error
		if sched, err = e.scheduler(op); err != nil {
			return "", err
		}
	}
	if err := checkAt(at); err != nil {
		return "", err
	}
	at = at.UTC()
	msg, finish, err := e.outgoing(ctx, topic, kind, payload, time.Time{})
	if err != nil {
		return "", err
	}
	msg.Metadata.Set(envelope.KeyScheduledFor, envelope.FormatTime(at))
	if err := envelope.CheckMetadata(msg.Metadata); err != nil {
		finish(err)
		return "", err
	}
	id := msg.UUID
	if inTx {
		err = pub.Publish(topic, msg) // with the caller's context: its transaction
	} else {
		// The scheduler may keep msg for long: not with the caller's context.
		msg.SetContext(context.Background())
		err = sched.Schedule(ctx, topic, msg, at)
	}
	finish(err)
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	return id, nil
}

// Schedules cancels and moves the messages scheduled with Command.Schedule
// and Event.Schedule, by the id those returned. Engine.Schedules returns
// it.
//
// The rules of every scheduling call (Schedule, Reschedule):
//   - The engine must be running (or draining: a handler finishing then may
//     schedule a follow-up); before Start or after Stop the call fails
//     with ErrUnavailable.
//   - An engine with no Scheduler (a broker without Config.Scheduler) fails
//     with an error wrapping ErrNoScheduler.
//   - On a context from outbox.WithTx (WithPublisher), Schedule writes the
//     message in the caller's transaction instead, as Send and Emit do: it
//     is scheduled if and only if the transaction commits, and whatever
//     forwards that outbox (outbox.Relay, `switchboard relay`, an
//     outbox.Scheduler's Run) publishes it when due. No Scheduler is needed
//     then; Cancel and Reschedule need one (an outbox.Scheduler on the
//     same schema), or `switchboard schedule cancel`.
//   - A zero at, or one outside years 1 to 9999 (UTC: RFC 3339, the form of
//     "scheduled_for", has four-digit years), is ErrInvalidInput; an at in
//     the past is due at once.
//   - The in-memory scheduler keeps at most 1,000,000 pending messages;
//     past that Schedule fails with ErrUnavailable. It stops when Stop
//     begins: from then on (during the drain too) its Schedule and
//     Reschedule fail with ErrUnavailable, since the message would never
//     be published, and the messages it still holds are logged as lost.
type Schedules struct{ e *Engine }

// Schedules returns the engine's scheduled messages.
func (e *Engine) Schedules() *Schedules { return &Schedules{e: e} }

// Cancel removes the scheduled message id. It fails with an error matching
// ErrScheduleNotFound when no such message waits: unknown, cancelled, or
// already published.
func (s *Schedules) Cancel(ctx context.Context, id string) error {
	op := fmt.Sprintf("cancel schedule %q", id)
	sched, err := s.e.scheduler(op)
	if err != nil {
		return err
	}
	if err := sched.Cancel(ctx, id); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// Reschedule moves the scheduled message id to at (its Meta.ScheduledFor
// becomes at), under the terms of Cancel and of Schedule.
func (s *Schedules) Reschedule(ctx context.Context, id string, at time.Time) error {
	op := fmt.Sprintf("reschedule %q", id)
	sched, err := s.e.scheduler(op)
	if err != nil {
		return err
	}
	if err := checkAt(at); err != nil {
		return err
	}
	if err := sched.Reschedule(ctx, id, at.UTC()); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// Target is what Every publishes to: a *Command[T, Out] (sent
// fire-and-forget) or an *Event[T] (emitted).
type Target[T any] interface {
	target(T) (topic, kind string)
}

// EveryOption configures one recurring schedule (Every).
type EveryOption func(*recurrence)

// CatchUpPolicy sets what happens to the ticks that passed while no
// scheduler ran (default CatchUpOnce). Only a durable Scheduler has missed
// ticks to catch up: the in-memory one starts afresh with its process.
func CatchUpPolicy(p CatchUp) EveryOption {
	return func(r *recurrence) {
		if p < CatchUpOnce || p > CatchUpAll {
			r.errs = append(r.errs, fmt.Errorf("recurring schedule %s: unknown CatchUp %d", r.name, p))
		}
		r.catchUp = p
	}
}

// recurrence is one recurring schedule of a service, declared by Every.
type recurrence struct {
	name        string // unique in its service
	spec        string
	topic, kind string
	catchUp     CatchUp
	errs        []error
	// encode encodes and checks the payload with the engine's codec.
	encode func(payloadCodec) ([]byte, error)
}

// Every declares, in service s, the recurring schedule name: on each tick
// of the cron spec, payload is sent to to (a command, fire-and-forget, or
// an event). The spec has five fields (minute hour day-of-month month
// day-of-week), or six with seconds first, or is a descriptor such as
// "@daily" or "@every 1h"; "CRON_TZ=Europe/Paris " in front sets its time
// zone (default UTC); a spec with fixed hours keeps the wall clock across
// DST changes (a time the clocks skip fires once, at that wall time in the
// former offset; a time they repeat fires once). Each tick's message is a
// conversation of its own
// (new correlation id and trace), with Meta.ScheduledFor the tick.
//
// A malformed name (a letter followed by up to 62 letters, digits, '_' or
// '-') or spec, a name used twice in s, a payload that fails its checks,
// and an engine with no Scheduler (ErrNoScheduler: a broker without
// Config.Scheduler; the Scheduler is known at New) are errors of
// Engine.Register. Start declares the schedules to the Scheduler under the
// name "<service>.v<version>/<name>", so that services never collide and
// every instance of one service declares the same schedule, which fires
// once per tick across them (with a durable Scheduler shared by them; the
// in-memory one belongs to one engine, and fires in each).
func Every[T any](s *Service, name, spec string, to Target[T], payload T, opts ...EveryOption) {
	r := &recurrence{name: name, spec: spec}
	if err := router.ValidName("schedule", name); err != nil {
		r.errs = append(r.errs, err)
	}
	if _, err := cronspec.Parse(spec); err != nil {
		r.errs = append(r.errs, fmt.Errorf("recurring schedule %s: %w", name, err))
	}
	if to == nil {
		r.errs = append(r.errs, fmt.Errorf("recurring schedule %s: nil target", name))
	} else {
		r.topic, r.kind = to.target(payload)
	}
	r.encode = func(c payloadCodec) ([]byte, error) { return c.encodeInput(&payload) }
	for _, o := range opts {
		o(r)
	}
	s.recurs = append(s.recurs, r)
}

// declaredRecurrence is a recurring schedule as Register accepted it, with
// its encoded payload; Start declares it to the Scheduler.
type declaredRecurrence struct {
	name, spec, topic, kind string
	catchUp                 CatchUp
	payload                 []byte
}

// recurrences checks and encodes the recurring schedules of s (which
// passed check) for this engine.
func (e *Engine) recurrences(s *Service) ([]declaredRecurrence, error) {
	if len(s.recurs) == 0 {
		return nil, nil
	}
	if e.sched == nil {
		return nil, fmt.Errorf("service %s: recurring schedule %s: %w", s, s.recurs[0].name, ErrNoScheduler)
	}
	var errs []error
	out := make([]declaredRecurrence, 0, len(s.recurs))
	for _, r := range s.recurs {
		payload, err := r.encode(e.codec)
		if err != nil {
			errs = append(errs, fmt.Errorf("recurring schedule %s: payload: %w", r.name, err))
			continue
		}
		out = append(out, declaredRecurrence{name: s.id + "/" + r.name, spec: r.spec, topic: r.topic, kind: r.kind, catchUp: r.catchUp, payload: payload})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("service %s: %w", s, err)
	}
	return out, nil
}

// startScheduler declares the recurring schedules and runs the Scheduler
// until Stop (beginStop cancels e.schedCtx).
func (e *Engine) startScheduler(ctx context.Context) error {
	if e.sched == nil {
		return nil
	}
	e.mu.Lock()
	recurs := e.recurs
	e.mu.Unlock()
	for _, r := range recurs {
		// The template carries its kind only: each tick starts its own
		// conversation.
		msg := message.NewMessage(envelope.NewID(), r.payload)
		msg.Metadata.Set(envelope.KeyKind, r.kind)
		rec := Recurrence{Name: r.name, Spec: r.spec, Topic: r.topic, Msg: msg, CatchUp: r.catchUp}
		if err := e.sched.Recur(ctx, rec); err != nil {
			return fmt.Errorf("switchboard: recurring schedule %s: %w", r.name, err)
		}
	}
	done := make(chan struct{})
	e.mu.Lock()
	if e.state != StateStarting {
		// Stop began during Start and has read schedDone already: it would
		// not wait for a Run started now.
		e.mu.Unlock()
		return nil
	}
	e.schedDone = done
	e.mu.Unlock()
	go func() {
		defer close(done)
		if err := e.sched.Run(e.schedCtx, e.b); err != nil && e.schedCtx.Err() == nil {
			e.log.Error("scheduler stopped: scheduled messages are no longer published", "err", err)
		}
	}()
	return nil
}
