package inproc

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/consume"
	"github.com/switchboard-go/switchboard/bridge/internal/params"
)

func init() {
	bridge.Register("gochannel", func(_ context.Context, u *url.URL, log *slog.Logger) (bridge.Bridge, error) {
		if err := params.New("gochannel", u).Err(); err != nil { // it takes none
			return nil, err
		}
		return shared(u.Host, log), nil
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
// bus if needed (logging to log). The bus closes when its last handle is
// closed.
func shared(name string, log *slog.Logger) bridge.Bridge {
	busesMu.Lock()
	defer busesMu.Unlock()
	sb := buses[name]
	if sb == nil {
		sb = &sharedBus{Bus: New()}
		sb.log = log.With("bridge", "gochannel")
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
	subs   map[*consume.Subscriber]struct{} // abandoned when the bus closes
	log    *slog.Logger
}

// New returns a private bus.
func New() *Bus {
	return &Bus{topics: map[string]map[string]*group{}, done: make(chan struct{}), subs: map[*consume.Subscriber]struct{}{}, log: slog.Default()}
}

// Name implements bridge.Bridge.
func (b *Bus) Name() string { return "gochannel" }

// Capabilities implements bridge.Bridge.
func (b *Bus) Capabilities() bridge.Capabilities {
	return bridge.Capabilities{Durable: false, GroupOutlivesMembers: true, DetectsMissingHandler: true, CrossProcess: false, CountsDeliveries: true, NackDelay: true}
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
		for s := range b.subs {
			s.Abandon()
		}
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
	if b.closed {
		b.mu.Unlock()
		return bridge.ErrClosed
	}
	groups := b.topics[topic]
	if len(groups) == 0 {
		b.mu.Unlock()
		// Not wrapped with the topic: events to topics nobody consumes are
		// common and the engine drops this error; callers add the topic.
		return bridge.ErrNoSubscriber
	}
	// One snapshot per message, shared read-only by every group: each
	// delivery is made from it, with the group's own delivery count
	// beside it.
	var buf [4]queued // most calls publish one message: no allocation for the list
	snaps := buf[:0]
	for _, m := range msgs {
		snaps = append(snaps, queued{msg: m.Copy()})
	}
	for _, g := range groups {
		g.mu.Lock()
		g.queue = append(g.queue, snaps...)
		g.mu.Unlock()
	}
	// Waking a group offers to its served members, which takes their
	// locks: not under b.mu (Member.Stop takes them in the other order).
	var gbuf [4]*group
	woken := gbuf[:0]
	for _, g := range groups {
		woken = append(woken, g)
	}
	b.mu.Unlock()
	for _, g := range woken {
		g.wake()
	}
	return nil
}

func (publisher) Close() error { return nil }

// Subscriber implements bridge.Bridge. Its subscriber runs on the shared
// consumer runtime (bridge/internal/consume) with no bound of its own on
// Close: a handler owns its message until it settles it, and no other
// member of the group gets the message meanwhile (the engine bounds the
// wait with its DrainTimeout; closing the bus ends it at once).
func (b *Bus) Subscriber(_ context.Context, spec bridge.Spec) (message.Subscriber, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	var sub *consume.Subscriber
	sub, err := consume.New(consume.Config{Spec: spec, Backend: "inproc", Logger: b.log}, func(context.Context) (consume.Source, error) {
		g, err := b.join(spec)
		if err != nil {
			return nil, err
		}
		return &source{b: b, spec: spec, g: g}, nil
	})
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bridge.ErrClosed
	}
	b.subs[sub] = struct{}{}
	return &subscriber{Subscriber: sub, b: b}, nil
}

// subscriber forgets itself on the bus when it closes.
type subscriber struct {
	*consume.Subscriber
	b *Bus
}

// Close implements message.Subscriber (see consume.Subscriber.Close).
func (s *subscriber) Close() error {
	err := s.Subscriber.Close()
	s.b.mu.Lock()
	delete(s.b.subs, s.Subscriber)
	s.b.mu.Unlock()
	return err
}

// queued is a message waiting in one group's queue.
type queued struct {
	msg        *message.Message // the published snapshot; never modified while queued
	deliveries int              // to this group so far
	// own: msg is this group's alone and was never delivered (Call's), so
	// Member.Next may hand it over itself instead of a copy.
	own bool
}

// group is one consumer group's queue.
type group struct {
	kind    bridge.Kind
	mu      sync.Mutex
	queue   []queued
	signals chan struct{} // 1-buffered, to subscribers: "the queue may be non-empty"
	members int
	fetched int                       // taken off the queue by subscribers (source.Fetch), not settled yet
	served  atomic.Pointer[[]*Member] // members Call hands messages to (direct.go); replaced, never modified, under Bus.mu
	next    atomic.Uint32             // where Call starts offering
}

func (g *group) push(m queued) {
	g.mu.Lock()
	g.queue = append(g.queue, m)
	g.mu.Unlock()
	g.wake()
}

// servedNow returns the group's served members (see Direct.Serve).
func (g *group) servedNow() []*Member {
	if p := g.served.Load(); p != nil {
		return *p
	}
	return nil
}

// pulled reports whether the group's served members drain its queue
// (Member.Next), not its subscribers: a command or event group with
// served members. A reply group's served members take every message Call
// offers, and its subscribers take the rest.
func (g *group) pulled() bool {
	return g.kind != bridge.Reply && len(g.servedNow()) > 0
}

// wake tells who drains the queue that it may have messages: a pulled
// group's served members (offered a pull, see Direct.Serve), else the
// subscribers.
func (g *group) wake() {
	if g.pulled() {
		g.mu.Lock()
		ready := g.ready()
		g.mu.Unlock()
		if ready {
			g.offer(nil)
		}
		return
	}
	g.signal()
}

// requeue queues m again after delay (at once when delay ≤ 0).
func (g *group) requeue(m queued, delay time.Duration) {
	if delay <= 0 {
		g.push(m)
		return
	}
	time.AfterFunc(delay, func() { g.push(m) })
}

// pushFront puts messages back at the head of the queue, in their order:
// they were taken before everything still queued.
func (g *group) pushFront(ms []queued) {
	g.mu.Lock()
	g.queue = append(ms, g.queue...)
	g.mu.Unlock()
	g.wake()
}

func (g *group) signal() {
	select {
	case g.signals <- struct{}{}:
	default:
	}
}

// fetch takes up to n messages off the queue for a subscriber, which
// settles each one later (settled); none from a pulled group.
func (g *group) fetch(n int) []queued {
	if g.pulled() {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	n = min(n, len(g.queue))
	out := make([]queued, n)
	copy(out, g.queue)
	g.drop(n)
	g.fetched += n
	return out
}

// first takes the message at the head of the queue for a served member
// (Member.Next), if any; in an event group, none while a subscriber holds
// a message it fetched.
func (g *group) first() (queued, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.ready() {
		return queued{}, false
	}
	q := g.queue[0]
	g.drop(1)
	return q, true
}

// ready reports whether first would take a message; g.mu is held.
func (g *group) ready() bool {
	return len(g.queue) > 0 && (g.kind != bridge.Event || g.fetched == 0)
}

// drop removes the first n messages of the queue; g.mu is held.
func (g *group) drop(n int) {
	clear(g.queue[:n])
	g.queue = g.queue[n:]
	if len(g.queue) > 0 && !g.pulled() {
		g.signal() // let another subscriber take the next ones
	}
}

// settled counts n fetched messages settled: acked, or back in the queue.
func (g *group) settled(n int) {
	g.mu.Lock()
	g.fetched -= n
	ready := g.ready()
	g.mu.Unlock()
	if ready { // an event group's members may take the next ones now
		g.wake()
	}
}

// behind reports whether a new message would come after others: some are
// queued, or fetched and not settled.
func (g *group) behind() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue) > 0 || g.fetched > 0
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
		g = &group{kind: spec.Kind, signals: make(chan struct{}, 1)}
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

// compile-time checks
var (
	_ bridge.Bridge     = (*Bus)(nil)
	_ consume.Source    = (*source)(nil)
	_ message.Publisher = publisher{}
)
