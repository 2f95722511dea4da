package inproc

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
)

// Direct is the in-process bus's hand-off, which the engine uses for the
// messages it builds and gives up: none is copied for its last group, and
// a command (awaited or sent), a reply and an event skip the queue when a
// member of their group has room (an event when nothing of its group is
// ahead of it). A Bus (from New, or bridge.Open with a gochannel:// URL)
// implements it; a bridge that wraps one does not, and then every message
// is published and goes through the queues.
//
// On a broker, a call crosses four queues' worth of goroutines (the
// command's subscription, the router, the reply subscription, the reply
// listener); in one process the handler can take the message from the
// caller directly, and the reply can reach the waiting caller the same way.
// What stays the same: a message handed over is a delivery to the group (it
// carries bridge.DeliveryKey "1", and a nack puts it in the group's queue
// for redelivery), one member of the group gets it, and a member bounds
// what it holds (its take refuses when it has no free slot, and the message
// then waits in the queue like a published one).
type Direct interface {
	// Call publishes msg to topic like Publish, but hands msg itself over
	// instead of a copy: the caller must not use it once Call returned nil.
	// Each group of topic gets the message (msg itself or a copy): a group
	// with served members offers it to them in turn (starting with the
	// next one after the last member offered a message) until one takes
	// it; if none does, or the group has none, it waits in the group's
	// queue, as a published message does. An event group offers a message
	// only when nothing is ahead of it (nothing queued, nothing fetched by
	// a subscriber and not settled), so that a subscription taking one
	// message at a time gets them in order.
	Call(topic string, msg *message.Message) error
	// Serve adds a member to spec's group that Call offers messages to.
	// take is called in Call's goroutine with the member and the message,
	// whose context is ctx; it must not block: it returns false when the
	// member cannot take the message now, or true once it took it, and
	// then owns it until it acks it or hands it back with Member.Requeue.
	// In a command or event group, take is also called with a nil message
	// (a pull) when messages wait in the group's queue: a member with room
	// takes it (true) and then calls Member.Next for the message, and asks
	// again with Member.Pending after giving its room back when Next found
	// none. While a command or event group has served members, they drain
	// its queue and its subscribers fetch nothing. A served member counts
	// as a member of the group (the group exists while it is served).
	Serve(ctx context.Context, spec bridge.Spec, take func(*Member, *message.Message) bool) (*Member, error)
}

// Member is a member of a group served by Call (see Direct.Serve).
type Member struct {
	b    *Bus
	spec bridge.Spec
	g    *group
	ctx  context.Context
	take func(*Member, *message.Message) bool

	mu      sync.RWMutex // held for reading while take runs
	stopped bool
	once    sync.Once
}

// Serve implements Direct.
func (b *Bus) Serve(ctx context.Context, spec bridge.Spec, take func(*Member, *message.Message) bool) (*Member, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if take == nil {
		return nil, fmt.Errorf("inproc: serving %s/%s: nil take", spec.Topic, spec.Group)
	}
	g, err := b.join(spec)
	if err != nil {
		return nil, err
	}
	m := &Member{b: b, spec: spec, g: g, ctx: ctx, take: take}
	b.mu.Lock()
	// Copy on write: Call reads the slice without the lock.
	served := append(g.servedNow()[:len(g.servedNow()):len(g.servedNow())], m)
	g.served.Store(&served)
	b.mu.Unlock()
	g.wake() // what waits in the queue is the member's to pull now
	return m, nil
}

// Stop removes the member from its group. Once Stop has returned, Call
// offers it nothing more; messages it took are still its own to settle.
// Stop is idempotent.
func (m *Member) Stop() {
	m.once.Do(func() {
		m.mu.Lock()
		m.stopped = true
		m.mu.Unlock()
		b := m.b
		b.mu.Lock()
		served := make([]*Member, 0, len(m.g.servedNow()))
		for _, o := range m.g.servedNow() {
			if o != m {
				served = append(served, o)
			}
		}
		m.g.served.Store(&served)
		b.mu.Unlock()
		b.leave(m.spec, m.g)
		m.g.wake() // the subscribers' now, when no member is served`
	})
}

// Next takes the message waiting longest in the group's queue, if any,
// for a member that has room for one more: a delivery like a subscriber's
// (with its bridge.DeliveryKey count and the member's context), which the
// member then owns as one it took. A message Call queued is handed over
// itself (it is this group's alone and was never delivered); any other is
// copied: Publish queues one snapshot for every group, a subscriber's nack
// or release queues the snapshot its delivery was copied from, and a
// member's Requeue the message it nacked, whose ack is spent. It returns nil when the queue
// is empty or the member stopped, and, in an event group, while a message
// a subscriber fetched is not settled (it may wait for the member's slot:
// the next one must not overtake it).
func (m *Member) Next() *message.Message {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.stopped {
		return nil
	}
	q, ok := m.g.first()
	if !ok {
		return nil
	}
	msg := q.msg
	if !q.own {
		msg = q.msg.Copy()
	}
	msg.Metadata.Set(bridge.DeliveryKey, strconv.Itoa(q.deliveries+1))
	msg.SetContext(m.ctx)
	return msg
}

// Requeue hands back a message the member took and nacked: it waits in the
// group's queue for bridge.NackDelay of its metadata, and its next delivery
// counts one more. It goes back as the member left it, less the bus's own
// keys (bridge.DeliveryKey, bridge.NackDelayKey): the one message the bus
// had was the one it handed over.
func (m *Member) Requeue(msg *message.Message) {
	delay := bridge.NackDelay(msg.Metadata)
	deliveries, err := strconv.Atoi(msg.Metadata[bridge.DeliveryKey])
	if err != nil || deliveries < 1 {
		deliveries = 1
	}
	delete(msg.Metadata, bridge.NackDelayKey)
	delete(msg.Metadata, bridge.DeliveryKey)
	m.g.requeue(queued{msg: msg, deliveries: deliveries}, delay)
}

// offer offers msg (nil: a pull) to m; false when m is stopped or refuses
// it.
func (m *Member) offer(msg *message.Message) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.stopped {
		return false
	}
	if msg != nil {
		msg.SetContext(m.ctx)
	}
	return m.take(m, msg)
}

// Pending reports whether Next would take a message now; false once the
// member stopped. A member that found nothing with Next and gave up its
// room asks again: a message queued meanwhile may have been offered as a
// pull while it had none.
func (m *Member) Pending() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.stopped {
		return false
	}
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	return m.g.ready()
}

// Call implements Direct.
func (b *Bus) Call(topic string, msg *message.Message) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return bridge.ErrClosed
	}
	groups := b.topics[topic]
	if len(groups) == 0 {
		b.mu.Unlock()
		return bridge.ErrNoSubscriber
	}
	var buf [4]*group // an event's subscribing services, usually few: no allocation
	targets := buf[:0]
	for _, g := range groups {
		targets = append(targets, g)
	}
	b.mu.Unlock()
	// Each group gets a message of its own, handed over or queued (as the
	// snapshot its deliveries are copied from); the last gets msg itself.
	for i, g := range targets {
		m := msg
		if i < len(targets)-1 {
			m = msg.Copy()
		}
		if !g.hand(m) {
			g.push(queued{msg: m, own: true})
		}
	}
	return nil
}

// hand offers msg to the group's served members; false when none takes
// it, or when msg must wait behind what the group already has: an event
// group's members take messages one at a time in order (Concurrency 1),
// so a message is handed over only when nothing waits in the group's
// queue or was fetched from it and is not settled.
func (g *group) hand(msg *message.Message) bool {
	if len(g.servedNow()) == 0 || (g.kind == bridge.Event && g.behind()) {
		return false
	}
	msg.Metadata.Set(bridge.DeliveryKey, "1")
	if g.offer(msg) {
		return true
	}
	delete(msg.Metadata, bridge.DeliveryKey)
	return false
}

// offer offers msg (nil: a pull) to the served members in turn, starting
// with the next one after the last member offered a message, until one
// takes it; false when none does.
func (g *group) offer(msg *message.Message) bool {
	served := g.servedNow()
	if len(served) == 0 {
		return false
	}
	start := g.next.Add(1) % uint32(len(served)) // unsigned: no overflow to a negative index
	for i := range uint32(len(served)) {
		if served[(start+i)%uint32(len(served))].offer(msg) {
			return true
		}
	}
	return false
}

var _ Direct = (*Bus)(nil)
