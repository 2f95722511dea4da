package inproc

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
)

func init() {
	bridge.Register("gochannel", func(_ context.Context, u *url.URL, _ *slog.Logger) (bridge.Bridge, error) {
		if q := u.Query(); len(q) > 0 {
			return nil, fmt.Errorf("%w: unknown parameter %q (gochannel:// takes none)", bridge.ErrBadURL, slices.Sorted(maps.Keys(q))[0])
		}
		return shared(u.Host), nil
	})
}

var (
	busesMu sync.Mutex
	buses   = map[string]*sharedBus{}
)

type sharedBus struct {
	*Bus
	refs int
}

// shared returns a handle on the process-wide bus named name, creating the
// bus if needed. The bus closes when its last handle is closed.
func shared(name string) bridge.Bridge {
	busesMu.Lock()
	defer busesMu.Unlock()
	sb := buses[name]
	if sb == nil {
		sb = &sharedBus{Bus: New()}
		buses[name] = sb
	}
	sb.refs++
	return &handle{Bus: sb.Bus, release: func() {
		busesMu.Lock()
		defer busesMu.Unlock()
		if sb.refs--; sb.refs == 0 {
			delete(buses, name)
			_ = sb.Bus.Close()
		}
	}}
}

// handle is one Open of a shared bus; closing it releases that reference.
type handle struct {
	*Bus
	once    sync.Once
	release func()
}

func (h *handle) Close() error {
	h.once.Do(h.release)
	return nil
}

// Bus is an in-process pub/sub with consumer groups. It implements
// bridge.Bridge; use New for a private bus (tests), or bridge.Open with a
// "gochannel://name" URL for a process-wide one.
type Bus struct {
	mu     sync.Mutex
	topics map[string]map[string]*group // topic → group name → group
	closed bool
	done   chan struct{}
}

// New returns a private bus.
func New() *Bus {
	return &Bus{topics: map[string]map[string]*group{}, done: make(chan struct{})}
}

// Name implements bridge.Bridge.
func (b *Bus) Name() string { return "gochannel" }

// Capabilities implements bridge.Bridge.
func (b *Bus) Capabilities() bridge.Capabilities {
	return bridge.Capabilities{Durable: false, DetectsMissingHandler: true, CrossProcess: false, CountsDeliveries: true, NackDelay: true}
}

// Health implements bridge.Bridge: the bus is healthy until closed.
func (b *Bus) Health(context.Context) error {
	if b.isClosed() {
		return bridge.ErrClosed
	}
	return nil
}

// Close implements bridge.Bridge. Subscriptions end at once, without
// waiting for the messages their handlers hold (close subscribers first to
// drain); queued messages are dropped.
func (b *Bus) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		close(b.done)
	}
	return nil
}

func (b *Bus) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Publisher implements bridge.Bridge.
func (b *Bus) Publisher() message.Publisher { return publisher{b} }

type publisher struct{ b *Bus }

// Publish enqueues a copy of each message for every group of topic. It fails
// with bridge.ErrNoSubscriber when the topic has no group at all.
func (p publisher) Publish(topic string, msgs ...*message.Message) error {
	b := p.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return bridge.ErrClosed
	}
	groups := b.topics[topic]
	if len(groups) == 0 {
		// Not wrapped with the topic: events to topics nobody consumes are
		// common and the engine drops this error; callers add the topic.
		return bridge.ErrNoSubscriber
	}
	for _, m := range msgs {
		// One snapshot, shared read-only by every group: each delivery is
		// made from it, with the group's own delivery count beside it.
		snap := m.Copy()
		for _, g := range groups {
			g.push(queued{msg: snap})
		}
	}
	return nil
}

func (publisher) Close() error { return nil }

// Subscriber implements bridge.Bridge.
func (b *Bus) Subscriber(_ context.Context, spec bridge.Spec) (message.Subscriber, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return &subscriber{b: b, spec: spec, closing: make(chan struct{})}, nil
}

// queued is a message waiting in one group's queue.
type queued struct {
	msg        *message.Message // the published snapshot; never modified
	deliveries int              // to this group so far
}

// group is one consumer group's queue.
type group struct {
	kind    bridge.Kind
	mu      sync.Mutex
	queue   []queued
	wake    chan struct{} // 1-buffered: "the queue may be non-empty"
	members int
}

func (g *group) push(m queued) {
	g.mu.Lock()
	g.queue = append(g.queue, m)
	g.mu.Unlock()
	g.signal()
}

func (g *group) signal() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

func (g *group) pop() (queued, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queue) == 0 {
		return queued{}, false
	}
	m := g.queue[0]
	g.queue[0] = queued{}
	g.queue = g.queue[1:]
	if len(g.queue) > 0 {
		g.signal() // let another worker take the next one
	}
	return m, true
}

func (b *Bus) join(spec bridge.Spec) (*group, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bridge.ErrClosed
	}
	groups := b.topics[spec.Topic]
	if groups == nil {
		groups = map[string]*group{}
		b.topics[spec.Topic] = groups
	}
	g := groups[spec.Group]
	if g == nil {
		g = &group{kind: spec.Kind, wake: make(chan struct{}, 1)}
		groups[spec.Group] = g
	} else if g.kind != spec.Kind {
		return nil, fmt.Errorf("inproc: group %q on topic %q is a %s group, cannot join as %s", spec.Group, spec.Topic, g.kind, spec.Kind)
	}
	g.members++
	return g, nil
}

func (b *Bus) leave(spec bridge.Spec, g *group) {
	b.mu.Lock()
	defer b.mu.Unlock()
	g.members--
	if g.members == 0 && g.kind == bridge.Reply {
		delete(b.topics[spec.Topic], spec.Group)
		if len(b.topics[spec.Topic]) == 0 {
			delete(b.topics, spec.Topic)
		}
	}
}

type subscriber struct {
	b         *Bus
	spec      bridge.Spec
	closeOnce sync.Once
	closing   chan struct{} // closed when Close begins
	wg        sync.WaitGroup

	mu     sync.Mutex
	closed bool
}

// Subscribe starts spec.Concurrency workers that each hold at most one message
// in flight. The channel closes when the subscriber is closed, ctx is done or
// the bus closes, once every in-flight message has been acked or nacked (or
// dropped with the bus: see Bus.Close).
func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic != s.spec.Topic {
		return nil, fmt.Errorf("inproc: subscriber for topic %q asked to subscribe to %q", s.spec.Topic, topic)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("inproc: subscriber for %q: %w", topic, bridge.ErrClosed)
	}
	g, err := s.b.join(s.spec)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	stop := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.closing:
		case <-s.b.done:
		}
		close(stop)
	}()
	var workers sync.WaitGroup
	for range s.spec.Concurrency {
		workers.Add(1)
		go func() {
			defer workers.Done()
			s.work(ctx, g, out, stop)
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		workers.Wait()
		s.b.leave(s.spec, g)
		close(out)
	}()
	return out, nil
}

func (s *subscriber) work(ctx context.Context, g *group, out chan<- *message.Message, stop <-chan struct{}) {
	for {
		// Stopping wins over a message waiting: the select below would
		// pick between them at random, so a drain would keep taking work.
		select {
		case <-stop:
			return
		default:
		}
		m, ok := g.pop()
		if !ok {
			select {
			case <-g.wake:
				continue
			case <-stop:
				return
			}
		}
		delivery := m.msg.Copy()
		delivery.SetContext(ctx)
		delivery.Metadata.Set(bridge.DeliveryKey, strconv.Itoa(m.deliveries+1))
		select {
		case out <- delivery:
			m.deliveries++
		case <-stop:
			g.push(m) // not delivered: leave it for another member
			return
		}
		// Wait for the verdict even when stopping: the handler owns the
		// message until it settles it, however long that takes; only the
		// bus closing ends the wait.
		select {
		case <-delivery.Acked():
		case <-delivery.Nacked():
			s.redeliver(g, m, bridge.NackDelay(delivery.Metadata))
		case <-s.b.done: // its queue is dropped too
			return
		}
	}
}

func (s *subscriber) redeliver(g *group, m queued, d time.Duration) {
	if d <= 0 {
		g.push(m)
		return
	}
	time.AfterFunc(d, func() { g.push(m) })
}

// Close stops delivering new messages and waits until every message this
// subscriber handed out has been acked or nacked, with no time limit of its
// own: a handler owns its message until it settles it, and no other member
// of the group gets the message meanwhile. The caller bounds the wait (the
// engine cancels its handlers past its DrainTimeout, and its Stop gives up
// when its context ends); closing the bus ends it at once. Every goroutine
// of the subscriber has ended when Close returns. Close is idempotent (a
// second call returns when the first has) and returns nil; a later
// Subscribe fails with bridge.ErrClosed.
func (s *subscriber) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.closing)
		s.wg.Wait()
	})
	return nil
}

// compile-time checks
var (
	_ bridge.Bridge      = (*Bus)(nil)
	_ message.Subscriber = (*subscriber)(nil)
	_ message.Publisher  = publisher{}
)
