package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-go/switchboard/bridge"
)

// Subscriber implements bridge.Bridge.
func (b *Bridge) Subscriber(_ context.Context, spec bridge.Spec) (message.Subscriber, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	queue, retry, err := queueNames(spec)
	if err != nil {
		return nil, err
	}
	o := b.opts
	s := &subscriber{
		b:    b,
		spec: spec,
		top:  topology{exchange: o.exchange, topic: spec.Topic, kind: spec.Kind, queue: queue, retry: retry, expires: o.queueExpires},
		stop: make(chan struct{}), force: make(chan struct{}), closeDone: make(chan struct{}),
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bridge.ErrClosed
	}
	b.subs[s] = struct{}{}
	return s, nil
}

// subscriber is one bridge.Spec's subscriber. Each Subscribe call consumes
// the group's queue on one channel of the bridge's consuming connection,
// with a prefetch count of spec.Concurrency × the URL parameter prefetch
// (default 2), and spec.Concurrency workers that each hand one message at a
// time to the handlers and settle it when its verdict comes: N workers are
// N messages in flight, and each has the next one waiting on the client.
type subscriber struct {
	b    *Bridge
	spec bridge.Spec
	top  topology

	mu     sync.Mutex
	closed bool

	stop      chan struct{} // closed by Close: deliver nothing new
	force     chan struct{} // closed when Close stops waiting for verdicts
	forceOnce sync.Once
	wg        sync.WaitGroup // workers and channel closers
	closeOnce sync.Once
	closeDone chan struct{}
	keptOnce  sync.Once // the warning about a retry queue kept as it is
}

// Subscribe declares the group's topology, starts spec.Concurrency workers
// and returns their messages. Each message must be acked or nacked; a Nack
// sends it to the group's retry queue, from which it comes back to the same
// group after bridge.DefaultNackDelay (or to a delay queue for the delay it
// asks for). The channel closes when the subscriber closes or ctx is
// done, once the messages in flight were acked or nacked. Workers survive
// connection losses: they declare the topology again and resume.
func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic != s.spec.Topic {
		return nil, fmt.Errorf("amqp: subscriber for topic %q asked to subscribe to %q", s.spec.Topic, topic)
	}
	b := s.b
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || b.isClosed() {
		return nil, bridge.ErrClosed
	}
	// Declare once now, so that a refused declaration (arguments changed,
	// another instance's reply queue, permissions) fails Subscribe.
	a, _ := b.sub.current()
	if a == nil {
		return nil, fmt.Errorf("%w: amqp %s: subscribe to %q: connection lost, reconnecting", bridge.ErrUnreachable, b.opts.addr, topic)
	}
	if err := withChannel(a, func(ch *amqp091.Channel) error { return s.declare(a, ch) }); err != nil {
		err = fmt.Errorf("amqp: subscribe to %q as group %q: %w", topic, s.spec.Group, err)
		if a.IsClosed() {
			err = fmt.Errorf("%w: amqp %s: %w", bridge.ErrUnreachable, b.opts.addr, err)
		}
		return nil, err
	}
	out := make(chan *message.Message)
	ctx, cancel := context.WithCancel(ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.work(ctx, out)
		cancel()
		close(out)
	}()
	return out, nil
}

// declare declares the subscription's topology on a (see topology.declare),
// warning once per subscriber when it keeps a retry queue whose arguments
// differ.
func (s *subscriber) declare(a *amqp091.Connection, ch *amqp091.Channel) error {
	kept, err := s.top.declare(a, ch)
	if kept != nil {
		s.keptOnce.Do(func() {
			s.b.log.Warn("amqp: retry queue exists with other arguments (likely another message TTL): used as it is, so a nack without a delay of its own waits its TTL, not bridge.DefaultNackDelay; to migrate, delete the queue once it is empty (no message parked in it), and the next Subscribe declares it anew",
				"queue", s.top.retry, "broker", kept.Error(), "default_nack_delay", bridge.DefaultNackDelay)
		})
	}
	return err
}

// errStopped ends consume when the subscriber stops or its context is done.
var errStopped = errors.New("stopped")

// work consumes until the subscriber stops, starting again after every
// channel or connection loss: at once on a new connection, after a backoff
// (100 ms ×2 up to reconnect_max) when the channel failed on a live one.
func (s *subscriber) work(ctx context.Context, out chan<- *message.Message) {
	backoff := 100 * time.Millisecond
	for {
		a, changed := s.b.sub.current()
		var retry <-chan time.Time
		if a != nil {
			delivered, err := s.consume(ctx, a, out)
			if errors.Is(err, errStopped) {
				return
			}
			if delivered {
				backoff = 100 * time.Millisecond
			}
			if !a.IsClosed() {
				s.b.log.Warn("amqp: consumer stopped, starting again", "queue", s.top.queue, "error", err, "in", backoff)
				retry = time.After(backoff)
				backoff = min(2*backoff, s.b.opts.reconnectMax)
			}
		}
		select {
		case <-changed:
		case <-retry:
		case <-s.stop:
			return
		case <-ctx.Done():
			return
		}
	}
}

// consume runs one channel and consumer until it fails or the subscriber
// stops, with spec.Concurrency workers sharing its deliveries. When the
// subscriber stops, the consumer is cancelled and what it prefetched goes
// back to the queue at once (requeued), while the workers wait for the
// verdicts of the messages the handlers hold. Closing the channel
// (deferred) makes the broker requeue whatever the channel still holds:
// when Close gave up waiting, the messages in flight. delivered reports
// whether any message was delivered.
func (s *subscriber) consume(ctx context.Context, a *amqp091.Connection, out chan<- *message.Message) (delivered bool, err error) {
	ch, err := a.Channel()
	if err != nil {
		return false, err
	}
	defer func() { _ = ch.Close() }()
	if err := ch.Qos(s.prefetch(), 0, false); err != nil {
		return false, err
	}
	if err := s.declare(a, ch); err != nil {
		return false, err
	}
	tag := "switchboard-" + watermill.NewShortUUID()
	deliveries, err := ch.Consume(s.top.queue, tag, false, false, false, false, nil)
	if err != nil {
		return false, fmt.Errorf("consume %q: %w", s.top.queue, err)
	}

	ended := make(chan struct{}) // the workers have returned
	cancelled := make(chan struct{})
	go func() {
		defer close(cancelled)
		select {
		case <-s.stop:
		case <-ctx.Done():
		case <-ended:
			return
		}
		// Nothing new for this channel; what it prefetched goes back now,
		// not when the last handler's verdict is in.
		if ch.Cancel(tag, false) != nil {
			return // the channel is gone: the broker requeued everything
		}
		for d := range deliveries {
			_ = d.Nack(false, true)
		}
	}()

	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range s.spec.Concurrency {
		wg.Go(func() {
			got, err := s.worker(ctx, deliveries, out)
			mu.Lock()
			defer mu.Unlock()
			delivered = delivered || got
			if firstErr == nil || errors.Is(firstErr, errStopped) {
				firstErr = err
			}
		})
	}
	wg.Wait()
	close(ended)
	<-cancelled
	return delivered, firstErr
}

// prefetch is the prefetch count of a subscription's channel:
// Concurrency × the prefetch parameter, at most 65535 (AMQP's limit).
func (s *subscriber) prefetch() int { return min(s.spec.Concurrency*s.b.opts.prefetch, 65535) }

// worker hands deliveries to the handlers one at a time and settles each
// with its verdict.
func (s *subscriber) worker(ctx context.Context, deliveries <-chan amqp091.Delivery, out chan<- *message.Message) (delivered bool, err error) {
	for {
		var d amqp091.Delivery
		select {
		case got, ok := <-deliveries:
			if !ok { // channel closed, or the broker cancelled the consumer
				select {
				case <-s.stop:
					return delivered, errStopped
				case <-ctx.Done():
					return delivered, errStopped
				default:
				}
				return delivered, fmt.Errorf("consumer of %q ended", s.top.queue)
			}
			d = got
		case <-s.stop:
			return delivered, errStopped
		case <-ctx.Done():
			return delivered, errStopped
		}
		msg, err := marshaler{}.Unmarshal(d)
		if err != nil { // not with this marshaler; park it in the retry queue
			_ = d.Reject(false)
			continue
		}
		msgCtx, cancel := context.WithCancel(ctx)
		msg.SetContext(msgCtx)
		select {
		case out <- msg:
			delivered = true
		case <-s.stop:
			cancel()
			_ = d.Nack(false, true)
			return delivered, errStopped
		case <-ctx.Done():
			cancel()
			_ = d.Nack(false, true)
			return delivered, errStopped
		}
		// The handler runs: wait for its verdict even while stopping.
		select {
		case <-msg.Acked():
			err = d.Ack(false)
		case <-msg.Nacked():
			err = s.nack(d, msg)
		case <-s.force:
			err = errStopped
		}
		cancel()
		if err != nil {
			return delivered, err // a lost channel: the broker requeued it
		}
	}
}

// nack settles a nacked delivery. By default it is rejected and the broker
// dead-letters it to the retry queue (back after bridge.DefaultNackDelay).
// When the handler asked for its own delay (bridge.NackDelayKey), a copy
// goes to the delay queue for that delay, confirmed, and then the delivery
// is acked; if that fails, the delivery is rejected as by default: never
// lost, at worst early or twice.
func (s *subscriber) nack(d amqp091.Delivery, msg *message.Message) error {
	if _, own := msg.Metadata[bridge.NackDelayKey]; own {
		wait := bridge.NackDelay(msg.Metadata)
		err := s.b.delay(s.top, d, wait, deliveryCount(d))
		if err == nil {
			return d.Ack(false)
		}
		s.b.log.Warn("amqp: nacked message not moved to its delay queue; it is redelivered after bridge.DefaultNackDelay instead",
			"queue", s.top.queue, "message_id", msg.UUID, "delay", wait, "error", err)
	}
	return d.Reject(false)
}

// Close stops delivering new messages, waits up to close_timeout for the
// messages handlers still hold to be acked or nacked, then closes the
// workers' channels: the broker requeues at once whatever they still hold.
// It does not close the bridge or its publisher.
func (s *subscriber) Close() error {
	s.close(s.b.opts.closeTimeout)
	return nil
}

func (s *subscriber) close(drain time.Duration) {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if drain <= 0 {
		s.forceOnce.Do(func() { close(s.force) }) // also cuts short a Close already draining
	}
	s.closeOnce.Do(func() {
		defer close(s.closeDone)
		close(s.stop)
		drained := make(chan struct{})
		go func() { s.wg.Wait(); close(drained) }()
		timer := time.NewTimer(drain)
		defer timer.Stop()
		select {
		case <-drained:
		case <-timer.C:
			s.b.log.Warn("amqp: subscriber closed with messages still in flight; they go back to the queue",
				"topic", s.spec.Topic, "group", s.spec.Group, "waited", drain)
			s.forceOnce.Do(func() { close(s.force) })
			<-drained
		}
		s.b.mu.Lock()
		delete(s.b.subs, s)
		s.b.mu.Unlock()
	})
	<-s.closeDone
}

var _ message.Subscriber = (*subscriber)(nil)
