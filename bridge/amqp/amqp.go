package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/consume"
)

// ErrAccessRefused is wrapped (together with bridge.ErrUnreachable) by Open
// when the broker refuses the credentials or the virtual host.
var ErrAccessRefused = errors.New("amqp: access refused")

func init() {
	bridge.Register("amqp", open)
	bridge.Register("amqps", open)
}

// Bridge is a connection to RabbitMQ. It implements bridge.Bridge; open it
// with bridge.Open and an amqp:// or amqps:// URL.
type Bridge struct {
	opts options
	log  *slog.Logger

	// Two connections, as RabbitMQ recommends: a publisher blocked by flow
	// control must not stall the consumers' acks.
	pub, sub *conn
	chans    *channels // the publisher's channel pool

	mu       sync.Mutex
	closed   bool
	life     context.Context // cancelled by Close
	kill     context.CancelFunc
	closing  <-chan struct{} // life.Done()
	subs     map[*subscriber]struct{}
	inflight sync.WaitGroup // publishes running

	probeMu sync.Mutex
	probe   *probe
	probes  sync.WaitGroup // probe goroutines; Close waits for them
	noProbe bool           // set by Close: no probe starts any more
}

func open(ctx context.Context, u *url.URL, log *slog.Logger) (bridge.Bridge, error) {
	o, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: amqp %s: %w", bridge.ErrUnreachable, o.addr, err)
	}
	log = log.With("bridge", "amqp", "addr", o.addr, "vhost", o.vhost)
	b := &Bridge{
		opts:  o,
		log:   log,
		subs:  map[*subscriber]struct{}{},
		chans: newChannels(o.publishChannels, o.publishWindow),
	}
	b.life, b.kill = context.WithCancel(context.Background())
	b.closing = b.life.Done()
	// The exchange is declared on every new publishing connection: a
	// missing permission shows at Open, and it is back after the broker
	// lost its definitions.
	b.pub, err = dial(ctx, b.life, o, "publish", log, func(a *amqp091.Connection) error {
		return withChannel(a, func(ch *amqp091.Channel) error { return declareExchange(ch, o.exchange) })
	})
	if err != nil {
		b.kill()
		return nil, err
	}
	b.sub, err = dial(ctx, b.life, o, "consume", log, nil)
	if err != nil {
		b.kill()
		_ = b.pub.close()
		return nil, err
	}
	log.Debug("amqp bridge open", "exchange", o.exchange)
	return b, nil
}

// enter registers a publish; it fails once the bridge is closed. Close
// waits for the registered publishes after closing the publishing
// connection, which ends their waits.
func (b *Bridge) enter() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.inflight.Add(1)
	return true
}

func (b *Bridge) leave() { b.inflight.Done() }

func (b *Bridge) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Name implements bridge.Bridge.
func (b *Bridge) Name() string { return "amqp" }

// Capabilities implements bridge.Bridge. Every message is published with
// the mandatory flag and the broker returns one that no queue is bound for,
// so Publish fails with bridge.ErrNoSubscriber at once. Deliveries carry
// bridge.DeliveryKey and a Nack honours bridge.NackDelayKey (see the package
// documentation).
func (b *Bridge) Capabilities() bridge.Capabilities {
	return bridge.Capabilities{Durable: true, GroupOutlivesMembers: true, DetectsMissingHandler: true, CrossProcess: true, CountsDeliveries: true, NackDelay: true}
}

// Health implements bridge.Bridge: both connections are up, and a round
// trip on each (declaring the exchange on the publishing one, opening and
// closing a channel on the consuming one) succeeds within ctx.
func (b *Bridge) Health(ctx context.Context) error {
	if b.isClosed() {
		return bridge.ErrClosed
	}
	b.probeMu.Lock()
	p := b.probe
	if p == nil {
		if b.noProbe { // Close may be waiting for the probes already
			b.probeMu.Unlock()
			return bridge.ErrClosed
		}
		pub, _ := b.pub.current()
		sub, _ := b.sub.current()
		p = &probe{done: make(chan struct{})}
		b.probe = p
		b.probes.Add(1)
		go func() {
			defer b.probes.Done()
			p.err = b.roundTrip(pub, sub)
			b.probeMu.Lock()
			b.probe = nil
			b.probeMu.Unlock()
			close(p.done)
		}()
	}
	b.probeMu.Unlock()
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("%w: amqp %s: no answer from the broker: %w", bridge.ErrUnreachable, b.opts.addr, ctx.Err())
	}
}

// probe is one health round trip. amqp091 calls take no context, so it runs
// in its own goroutine and ctx bounds only the wait; concurrent Health
// calls share it instead of piling up goroutines behind a silent broker.
type probe struct {
	done chan struct{}
	err  error
}

func (b *Bridge) roundTrip(pub, sub *amqp091.Connection) error {
	down := func(role string, err error) error {
		if err == nil {
			return fmt.Errorf("%w: amqp %s: %s connection lost, reconnecting", bridge.ErrUnreachable, b.opts.addr, role)
		}
		return fmt.Errorf("%w: amqp %s: %s connection: %w", bridge.ErrUnreachable, b.opts.addr, role, err)
	}
	if pub == nil || pub.IsClosed() {
		return down("publishing", nil)
	}
	if sub == nil || sub.IsClosed() {
		return down("consuming", nil)
	}
	if err := withChannel(pub, func(ch *amqp091.Channel) error { return declareExchange(ch, b.opts.exchange) }); err != nil {
		return down("publishing", err)
	}
	if err := withChannel(sub, func(*amqp091.Channel) error { return nil }); err != nil {
		return down("consuming", err)
	}
	return nil
}

// Publisher implements bridge.Bridge.
func (b *Bridge) Publisher() message.Publisher { return publisher{b} }

// Close implements bridge.Bridge. Subscribers are closed without waiting
// for their in-flight messages (close them first to drain): the broker puts
// those messages back in their queue. Close is idempotent.
func (b *Bridge) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.kill()
	subs := make([]*subscriber, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()

	for _, s := range subs {
		s.abandon()
	}
	// Close waits for the subscriptions' goroutines: acks already given go
	// out before the connection closes.
	for _, s := range subs {
		_ = s.Close()
	}
	// Closing the publishing connection ends the publishes still waiting
	// for a confirm.
	errs := []error{b.pub.close()}
	b.inflight.Wait()
	b.chans.close()
	errs = append(errs, b.sub.close())
	// A Health probe in flight fails now that both connections are closed.
	b.probeMu.Lock()
	b.noProbe = true
	b.probeMu.Unlock()
	b.probes.Wait()
	return errors.Join(errs...)
}

// Subscriber implements bridge.Bridge. Each Subscribe call consumes the
// group's queue on one channel of the consuming connection (see source),
// driven by the shared consumer runtime.
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
		b: b, spec: spec,
		top: topology{exchange: o.exchange, topic: spec.Topic, kind: spec.Kind, queue: queue, retry: retry, expires: o.queueExpires},
	}
	// close_timeout=0 means "do not wait"; the runtime's CloseWait 0 would
	// mean "no bound".
	s.rt, err = consume.New(consume.Config{
		Spec: spec, Backend: "amqp", Logger: b.log,
		CloseWait: max(o.closeTimeout, time.Nanosecond),
		Prefetch:  o.prefetch, // the runtime takes what the channel's prefetch holds
	}, s.openSource)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bridge.ErrClosed
	}
	b.subs[s] = struct{}{}
	return s, nil
}

// subscriber is one bridge.Spec's subscriber: the runtime, with a source
// per Subscribe call.
type subscriber struct {
	b        *Bridge
	spec     bridge.Spec
	top      topology
	rt       *consume.Subscriber
	keptOnce sync.Once // the warning about a retry queue kept as it is
}

// Subscribe implements message.Subscriber. Each message must be acked or
// nacked; the channel closes when the subscriber closes or ctx ends.
func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.rt.Subscribe(ctx, topic)
}

// Close implements message.Subscriber: it cancels the consumers at once
// (what they prefetched goes back to the queue), waits up to close_timeout
// for the verdicts of the messages handlers hold, then closes the
// channels. It does not close the bridge or its publisher.
func (s *subscriber) Close() error {
	defer s.forget()
	return s.rt.Close()
}

// abandon is the bridge's Close: stop waiting for verdicts (the broker
// requeues what handlers hold when the channels close).
func (s *subscriber) abandon() {
	s.rt.Abandon()
}

func (s *subscriber) forget() {
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
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

// compile-time checks
var (
	_ bridge.Bridge      = (*Bridge)(nil)
	_ message.Publisher  = publisher{}
	_ message.Subscriber = (*subscriber)(nil)
)
