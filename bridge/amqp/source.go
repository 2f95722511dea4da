package amqp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/consume"
)

// longPoll bounds how long Fetch waits for a first delivery, so that the
// runtime notices a stop.
const longPoll = time.Second

// source is one Subscribe call's consume.Source: one channel with one
// consumer on the group's queue, whose prefetch count is Concurrency +
// prefetch. When the channel or the connection is lost, Fetch opens another
// one on the current consuming connection (declaring the topology again);
// deliveries of the lost channel can no longer be settled, and the broker
// has requeued them.
type source struct {
	s      *subscriber
	closed chan struct{} // closed by Close: the stop watcher exits
	done   chan struct{} // closed when the stop watcher has exited

	mu      sync.Mutex
	cur     *consumer // nil after a failed reopen
	stopped bool      // the subscription stops: no new consumer
}

// consumer is one channel and its consumer.
type consumer struct {
	ch         *amqp091.Channel
	tag        string
	deliveries <-chan amqp091.Delivery
	cancelOnce sync.Once

	mu   sync.Mutex
	held map[uint64]struct{} // delivery tags handed to the runtime, not settled yet
}

// delivery is a consume.Delivery's Ref.
type delivery struct {
	d amqp091.Delivery
	c *consumer
}

// openSource declares the topology and starts consuming; a refusal fails
// Subscribe. The consumer is cancelled as soon as ctx ends (the
// subscription stops), not when the last handler's verdict is in: what it
// prefetched goes back to the queue at once.
func (s *subscriber) openSource(ctx context.Context) (consume.Source, error) {
	a, _ := s.b.sub.current()
	if a == nil {
		return nil, fmt.Errorf("%w: amqp %s: subscribe to %q: connection lost, reconnecting", bridge.ErrUnreachable, s.b.opts.addr, s.spec.Topic)
	}
	c, err := s.consume(a)
	if err != nil {
		err = fmt.Errorf("amqp: subscribe to %q as group %q: %w", s.spec.Topic, s.spec.Group, err)
		if a.IsClosed() {
			err = fmt.Errorf("%w: amqp %s: %w", bridge.ErrUnreachable, s.b.opts.addr, err)
		}
		return nil, err
	}
	src := &source{s: s, cur: c, closed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(src.done)
		select {
		case <-ctx.Done(): // the subscription stops
		case <-src.closed:
			return
		}
		src.stop()
	}()
	return src, nil
}

// consume opens a channel on a, declares the topology and starts a consumer.
func (s *subscriber) consume(a *amqp091.Connection) (*consumer, error) {
	ch, err := a.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	c := &consumer{ch: ch, tag: "switchboard-" + watermill.NewShortUUID(), held: map[uint64]struct{}{}}
	err = ch.Qos(min(s.spec.Concurrency+s.b.opts.prefetch, 65535), 0, false)
	if err == nil {
		err = s.declare(a, ch)
	}
	if err == nil {
		c.deliveries, err = ch.Consume(s.top.queue, c.tag, false, false, false, false, nil)
		if err != nil {
			err = fmt.Errorf("consume %q: %w", s.top.queue, err)
		}
	}
	if err != nil {
		_ = ch.Close()
		return nil, err
	}
	return c, nil
}

// stop cancels the consumer for good.
func (src *source) stop() {
	src.mu.Lock()
	src.stopped = true
	c := src.cur
	src.mu.Unlock()
	if c != nil {
		c.cancel()
	}
}

// cancel cancels the consumer and requeues what it prefetched. Fetch may
// read the same deliveries meanwhile: the runtime releases them (requeued
// as well).
func (c *consumer) cancel() {
	c.cancelOnce.Do(func() {
		if c.ch.Cancel(c.tag, false) != nil {
			return // the channel is gone: the broker requeued everything
		}
		for d := range c.deliveries { // closed by amqp091 after the cancel
			_ = d.Nack(false, true)
		}
	})
}

// Fetch implements consume.Source: the first delivery within longPoll,
// then those already on the client, up to n. A lost channel or consumer is
// replaced by a new one before Fetch returns (the error if that failed).
func (src *source) Fetch(ctx context.Context, n int, deliver func(consume.Delivery)) error {
	src.mu.Lock()
	c, stopped := src.cur, src.stopped
	src.mu.Unlock()
	if c == nil && !stopped {
		return src.reopen(ctx)
	}
	var deliveries <-chan amqp091.Delivery
	if c != nil && !stopped {
		deliveries = c.deliveries
	}
	t := time.NewTimer(longPoll)
	defer t.Stop()
	for got := 0; got < n; got++ {
		var d amqp091.Delivery
		var ok bool
		if got == 0 {
			select {
			case d, ok = <-deliveries: // nil while stopping: wait for ctx
			case <-t.C:
				return nil
			case <-ctx.Done():
				return nil
			}
		} else {
			select {
			case d, ok = <-deliveries:
			default:
				return nil
			}
		}
		if !ok { // the channel closed, or the broker cancelled the consumer
			return src.reopen(ctx)
		}
		msg, count := marshaler{}.decode(d) // never fails: nothing to park
		c.mu.Lock()
		c.held[d.DeliveryTag] = struct{}{}
		c.mu.Unlock()
		deliver(consume.Delivery{Msg: msg, Count: int(count), Ref: &delivery{d: d, c: c}})
	}
	return nil
}

// reopen replaces a lost channel and consumer, on the current consuming
// connection, waiting up to longPoll for one while it reconnects.
func (src *source) reopen(ctx context.Context) error {
	s := src.s
	src.mu.Lock()
	if src.stopped { // the consumer was cancelled on purpose; its channel settles what handlers hold
		src.mu.Unlock()
		return nil
	}
	old := src.cur
	src.cur = nil
	src.mu.Unlock()
	if old != nil {
		_ = old.ch.Close() // the broker requeues what it still held
	}
	a, changed := s.b.sub.current()
	if a == nil || a.IsClosed() {
		t := time.NewTimer(longPoll)
		defer t.Stop()
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			return nil
		}
		if a, _ = s.b.sub.current(); a == nil {
			return fmt.Errorf("%w: amqp %s: consuming connection lost, reconnecting", bridge.ErrUnreachable, s.b.opts.addr)
		}
	}
	c, err := s.consume(a)
	if err != nil {
		return fmt.Errorf("amqp: consume %q again: %w", s.top.queue, err)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.stopped { // stopped while opening
		_ = c.ch.Close()
		return nil
	}
	src.cur = c
	return nil
}

// settled forgets tags: they were acked, nacked or released.
func (c *consumer) settled(tags ...uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range tags {
		delete(c.held, t)
	}
}

// coalesce reports whether the acked tags are exactly the held tags up to
// the highest of them, so that one multiple ack settles them all and no
// other message: verdicts come out of order from concurrent handlers, and a
// multiple ack settles every lower tag of the channel, including messages
// still being handled.
func (c *consumer) coalesce(tags []uint64) bool {
	if len(tags) < 2 {
		return false
	}
	top := slices.Max(tags)
	c.mu.Lock()
	defer c.mu.Unlock()
	below := 0
	for t := range c.held {
		if t <= top {
			below++
		}
	}
	return below == len(tags)
}

// Ack implements consume.Source: one multiple ack per channel when the
// batch is the contiguous run of its held tags, otherwise one ack each.
// Acks of deliveries from a lost channel fail: the broker requeued them.
func (src *source) Ack(_ context.Context, ds []consume.Delivery) error {
	byConsumer := map[*consumer][]uint64{}
	for _, d := range ds {
		r := d.Ref.(*delivery)
		byConsumer[r.c] = append(byConsumer[r.c], r.d.DeliveryTag)
	}
	var errs []error
	for c, tags := range byConsumer {
		if c.coalesce(tags) {
			errs = append(errs, c.ch.Ack(slices.Max(tags), true))
		} else {
			for _, t := range tags {
				if err := c.ch.Ack(t, false); err != nil {
					errs = append(errs, err) // the channel is lost: so are the other acks
					break
				}
			}
		}
		c.settled(tags...)
	}
	return errors.Join(errs...)
}

// Nack implements consume.Source. By default the delivery is rejected and
// the broker dead-letters it to the retry queue (back after
// bridge.DefaultNackDelay). When the handler asked for its own delay
// (bridge.NackDelayKey), a copy goes to the delay queue for that delay,
// confirmed, and then the delivery is acked; if that fails, the delivery is
// rejected as by default: never lost, at worst early or twice.
func (src *source) Nack(_ context.Context, cd consume.Delivery, delay time.Duration) error {
	r := cd.Ref.(*delivery)
	defer r.c.settled(r.d.DeliveryTag)
	if _, own := cd.Msg.Metadata[bridge.NackDelayKey]; own {
		err := src.s.b.delay(src.s.top, r.d, delay, deliveryCount(r.d))
		if err == nil {
			return r.d.Ack(false)
		}
		src.s.b.log.Warn("amqp: nacked message not moved to its delay queue; it is redelivered after bridge.DefaultNackDelay instead",
			"queue", src.s.top.queue, "message_id", cd.Msg.UUID, "delay", delay, "error", err)
	}
	return r.d.Reject(false)
}

// Release implements consume.Source: the deliveries are requeued at once.
// RabbitMQ flags them redelivered, which the next delivery counts.
func (src *source) Release(_ context.Context, ds []consume.Delivery) error {
	var errs []error
	for _, d := range ds {
		r := d.Ref.(*delivery)
		errs = append(errs, r.d.Nack(false, true))
		r.c.settled(r.d.DeliveryTag)
	}
	return errors.Join(errs...)
}

// Close implements consume.Source: it cancels the consumer (requeuing what
// it prefetched) and closes the channel, so the broker requeues at once
// whatever the channel still holds (messages abandoned by the runtime).
func (src *source) Close() error {
	close(src.closed)
	<-src.done
	src.stop()
	src.mu.Lock()
	c := src.cur
	src.cur = nil
	src.mu.Unlock()
	if c == nil {
		return nil
	}
	if err := c.ch.Close(); err != nil && !errors.Is(err, amqp091.ErrClosed) {
		return err
	}
	return nil
}
