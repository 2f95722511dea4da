package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/internal/envelope"
)

// DeadLetter is the durable tier around the in-memory Retry: a message that
// still fails is redelivered later by the backend, to the failing group
// only, with growing delays; once MaxDeliveries is reached — or at once for
// a permanent error — it is stored in Store and acknowledged.
//
// The store write comes before the acknowledgement: a crash between the two
// redelivers the message and the store's Put, idempotent on (message id,
// group, topic) — the group and topic come from the route in the message's
// context, or on a plain Watermill router from its subscribed topic and
// handler name (the group is then empty) — updates the same record.
// Nothing is lost; at worst a record is written twice.
//
// Failures caused by an open circuit
// (ErrCircuitOpen from Breaker) are redelivered without counting towards
// the budget, so an outage downstream never drains a queue into the store.
type DeadLetter struct {
	// Store receives the messages. Required.
	Store deadletter.Store
	// MaxDeliveries is how many deliveries a failing message gets before it
	// is dead-lettered. Default 5. Backends without delivery counts
	// (Capabilities.CountsDeliveries false) dead-letter on the first failure
	// that finds no count.
	MaxDeliveries int
	// Redelivery is the wait before each redelivery: after delivery n,
	// InitialInterval × Multiplier^(n-1), at most MaxInterval, ± the
	// RandomizationFactor; it travels with the Nack (bridge.NackDelayKey).
	// Zero fields take DefaultRedelivery's: 1 s doubling to 1 min, ±50 %.
	// MaxElapsedTime must stay 0: MaxDeliveries bounds redelivery.
	Redelivery Backoff
	// Logger records every dead-lettered message. Default slog.Default().
	Logger *slog.Logger
}

// DefaultMaxDeliveries is DeadLetter's default delivery budget.
const DefaultMaxDeliveries = 5

// errRedeliveryElapsed: DeadLetter has no use for a time budget.
var errRedeliveryElapsed = errors.New("dead letter: Redelivery.MaxElapsedTime is not used (MaxDeliveries bounds redelivery); leave it 0")

// Validate reports every problem in d.
func (d DeadLetter) Validate() error {
	var errs []error
	if d.Store == nil {
		errs = append(errs, errors.New("dead letter: Store is nil"))
	}
	if d.MaxDeliveries < 0 {
		errs = append(errs, fmt.Errorf("dead letter: MaxDeliveries is negative (%d)", d.MaxDeliveries))
	}
	if err := d.Redelivery.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("dead letter: Redelivery: %w", err))
	}
	if d.Redelivery.MaxElapsedTime != 0 {
		errs = append(errs, errRedeliveryElapsed)
	}
	return errors.Join(errs...)
}

// Middleware returns the dead-letter middleware.
func (d DeadLetter) Middleware() message.HandlerMiddleware {
	if d.MaxDeliveries == 0 {
		d.MaxDeliveries = DefaultMaxDeliveries
	}
	d.Redelivery = d.Redelivery.WithDefaults(DefaultRedelivery)
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	failing := &failures{at: map[string]*failure{}}
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err == nil {
				failing.forget(msg.UUID)
				return out, nil
			}
			f := failing.note(msg.UUID, errors.Is(err, ErrCircuitOpen))
			delivery, counted := deliveryOf(msg)
			delivery -= f.bounces // deliveries spent waiting on an open circuit do not count
			firstSeen := f.first
			kind := ""
			switch {
			case IsPermanent(err):
				kind = deadletter.KindPermanent
			case errors.Is(err, ErrCircuitOpen):
				msg.Metadata.Set(bridge.NackDelayKey, d.delay(1).String())
				return nil, err
			case !counted || delivery >= d.MaxDeliveries:
				kind = deadletter.KindExhausted
			default:
				msg.Metadata.Set(bridge.NackDelayKey, d.delay(delivery).String())
				return nil, err
			}
			if perr := d.store(msg, err, kind, delivery, firstSeen); perr != nil {
				// Not stored: it must not be acked. Redeliver it later.
				d.Logger.Error("dead-letter store failed; the message will be redelivered", "message_id", msg.UUID, "err", perr)
				msg.Metadata.Set(bridge.NackDelayKey, d.delay(delivery).String())
				return nil, errors.Join(err, perr)
			}
			failing.forget(msg.UUID)
			return nil, nil
		}
	}
}

// delay is the wait before delivery n+1.
func (d DeadLetter) delay(n int) time.Duration { return d.Redelivery.wait(n) }

func deliveryOf(msg *message.Message) (int, bool) {
	n, err := strconv.Atoi(msg.Metadata.Get(bridge.DeliveryKey))
	return n, err == nil && n > 0
}

func (d DeadLetter) store(msg *message.Message, cause error, kind string, delivery int, firstSeen time.Time) error {
	route, _ := envelope.RouteFrom(msg.Context())
	// Composed on a plain Watermill router there is no route: its handler
	// and subscribed topic still name the record (the topic is in its key).
	if route.Topic == "" {
		route.Topic = message.SubscribeTopicFromCtx(msg.Context())
	}
	if route.Handler == "" {
		route.Handler = message.HandlerNameFromCtx(msg.Context())
	}
	// Every delivery ran the same in-memory policy: deliveries × the attempts
	// this one made.
	inMemory, _ := strconv.Atoi(msg.Metadata.Get(AttemptKey))
	attempts := max(delivery, 1) * max(inMemory, 1)
	md := maps.Clone(msg.Metadata)
	for _, k := range []string{bridge.DeliveryKey, bridge.NackDelayKey, AttemptKey, deadletter.TargetGroupKey} {
		delete(md, k)
	}
	first := firstSeen
	rec := deadletter.Record{
		MessageID: msg.UUID, Topic: route.Topic, Service: route.Service, Handler: route.Handler, Group: route.Group,
		Payload: msg.Payload, Metadata: md, Error: cause.Error(), ErrorKind: kind, Attempts: attempts,
		FirstFailedAt: first, LastFailedAt: time.Now(),
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(msg.Context()), 30*time.Second)
	defer cancel()
	id, err := d.Store.Put(ctx, rec)
	if err != nil {
		return err
	}
	d.Logger.Warn("message dead-lettered", "dead_letter_id", id, "message_id", msg.UUID, "service", route.Service,
		"handler", route.Handler, "topic", route.Topic, "kind", kind, "attempts", attempts, "err", cause)
	return nil
}

// failures remembers, per failing message, when this process first saw it
// fail and how many of its deliveries bounced off an open circuit, across
// redeliveries. It is bounded: past maxTracked entries it starts afresh (a
// record's first failure is then its latest delivery's).
type failures struct {
	mu sync.Mutex
	at map[string]*failure
}

type failure struct {
	first   time.Time
	bounces int
}

const maxTracked = 100_000

// note records a failure of message id (a bounce when bounced) and returns
// a copy of what is known about it.
func (f *failures) note(id string, bounced bool) failure {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.at[id]
	if !ok {
		if len(f.at) >= maxTracked {
			clear(f.at)
		}
		e = &failure{first: time.Now()}
		f.at[id] = e
	}
	if bounced {
		e.bounces++
	}
	return *e
}

func (f *failures) forget(id string) {
	f.mu.Lock()
	delete(f.at, id)
	f.mu.Unlock()
}
