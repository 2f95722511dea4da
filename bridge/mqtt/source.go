package mqtt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/consume"
	"github.com/switchboard-go/switchboard/bridge/internal/naming"
)

const (
	fetchWait  = time.Second // the longest Fetch waits for a first message
	retryEvery = time.Second // between attempts to hand a message back
)

// claims are the member identities (client IDs) open in this process: a
// new member takes the lowest free index, so that it resumes the session
// of a member closed before it (see "Sessions").
var (
	claimsMu sync.Mutex
	claims   = map[string]bool{}
)

func claim(prefix string) string {
	claimsMu.Lock()
	defer claimsMu.Unlock()
	for n := 0; ; n++ {
		if id := fmt.Sprintf("%s-%d", prefix, n); !claims[id] {
			claims[id] = true
			return id
		}
	}
}

func unclaim(id string) {
	claimsMu.Lock()
	delete(claims, id)
	claimsMu.Unlock()
}

// subscriber is the runtime's Subscriber, forgotten by the bridge when it
// closes.
type subscriber struct {
	*consume.Subscriber
	b *mqttBridge
}

// Close implements message.Subscriber.
func (s subscriber) Close() error {
	s.b.mu.Lock()
	delete(s.b.subs, s.Subscriber)
	s.b.mu.Unlock()
	return s.Subscriber.Close()
}

// Subscriber implements bridge.Bridge. Each Subscribe call is one member:
// one MQTT connection with its own session (see "Sessions").
func (b *mqttBridge) Subscriber(_ context.Context, spec bridge.Spec) (message.Subscriber, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	mt, err := mqttTopic(spec.Topic)
	if err != nil {
		return nil, fmt.Errorf("mqtt: subscriber: %w", err)
	}
	if !validLevel(spec.Group) {
		return nil, fmt.Errorf("mqtt: subscriber: group %q contains '/', '+', '#' or a control character", spec.Group)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bridge.ErrClosed
	}
	cs, err := consume.New(consume.Config{Spec: spec, Backend: "mqtt", Logger: b.log}, func(ctx context.Context) (consume.Source, error) {
		return b.openSource(ctx, spec, mt)
	})
	if err != nil {
		return nil, err
	}
	b.subs[cs] = struct{}{}
	return subscriber{cs, b}, nil
}

// source is one member's connection: the consume.Source of one Subscribe.
type source struct {
	b       *mqttBridge
	spec    bridge.Spec
	id      string // client ID
	keep    bool   // the session outlives Close (a durable member)
	filters []string
	retry   string // the group's redelivery topic
	cm      *autopaho.ConnectionManager
	sess    *ackSession
	in      chan *received
	ctx     context.Context // ends when Close begins
	stop    context.CancelFunc
	flush   chan struct{}  // closed by Close once nacks may be handed back
	leaving sync.Once      // an ephemeral member unsubscribes once
	nacks   sync.WaitGroup // hand-backs
	resubs  sync.WaitGroup // subscriptions after a reconnect

	mu          sync.Mutex
	up          bool                   // a connection is up
	subscribed  bool                   // and its subscriptions are made
	held        map[*received]struct{} // received on it, not yet PUBACKed
	conn        int                    // connections so far
	staleBefore int                    // what came on an earlier connection is sent again
}

func (s *source) isReady() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up && s.subscribed
}

// received is one PUBLISH the broker sent.
type received struct {
	pb   *paho.Publish
	conn int // the connection it came on
}

// ackSession is paho's session state with acknowledgements under the
// source's control. paho acks a PUBLISH as soon as its callbacks return,
// unless EnableManualAcknowledgment is set; then it queues the acks and
// sends them in order from a ticker (50 ms by default: a delay on every
// message when a subscription's receive maximum is its concurrency). So
// paho's own ack is dropped here, and the source sends each PUBACK itself
// the moment its message is settled. Not in receive order, which MQTT v5
// 4.6 asks of a client: a nacked message stays unacknowledged for its
// delay (see "Redelivery"), and in order it would hold back the PUBACK of
// every message received after it, all delivered again when the
// connection drops (the chaos run saw 88 to 217 such duplicates after a
// broker restart, poison messages dead-lettered twice). Mosquitto matches
// a PUBACK to its message by packet id, in any order.
type ackSession struct {
	*state.State
	src *source
}

// Ack drops paho's automatic acknowledgement (see ackSession).
func (a *ackSession) Ack(*packets.Publish) error { return nil }

// ConAckReceived starts a connection: what is received from now on is
// acknowledged on it.
// When the broker kept the session, it sends again every message it sent
// before and did not get a PUBACK for: those still waiting in the source
// are dropped rather than handled twice.
func (a *ackSession) ConAckReceived(w io.Writer, cp *packets.Connect, ca *packets.Connack) error {
	err := a.State.ConAckReceived(w, cp, ca)
	s := a.src
	s.mu.Lock()
	s.up, s.subscribed = err == nil, false
	clear(s.held)
	s.conn++
	if ca.SessionPresent {
		s.staleBefore = s.conn
	}
	s.mu.Unlock()
	return err
}

// ConnectionLost ends a connection: no PUBACK of its messages may go on the
// next one (packet ids are reused; the broker sends them again, flagged DUP).
func (a *ackSession) ConnectionLost(dp *packets.Disconnect) error {
	a.src.mu.Lock()
	a.src.up, a.src.subscribed = false, false
	clear(a.src.held)
	a.src.mu.Unlock()
	return a.State.ConnectionLost(dp)
}

// openSource connects one member and subscribes it before returning, so
// that the group exists on the broker from Subscribe on. It subscribes
// again on every later connection, session present or not: Mosquitto does
// not keep shared subscriptions across its restart (see "Broker restarts").
func (b *mqttBridge) openSource(ctx context.Context, spec bridge.Spec, mt string) (*source, error) {
	s := &source{b: b, spec: spec, flush: make(chan struct{}), retry: retryTopic(spec.Group, mt), held: map[*received]struct{}{}}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.sess = &ackSession{State: state.NewInMemory(), src: s}
	s.keep = b.opts.stableID && spec.Kind != bridge.Reply
	if s.keep {
		s.id = claim(b.opts.clientID + "-" + naming.ShortHash(spec.Kind.String(), spec.Topic, spec.Group))
	} else {
		s.id = b.opts.clientID + "-" + watermill.NewShortUUID()
	}
	if spec.Kind == bridge.Reply {
		s.filters = []string{mt, s.retry}
	} else {
		s.filters = []string{"$share/" + spec.Group + "/" + mt, "$share/" + spec.Group + "/" + s.retry}
	}
	rm := uint16(min(spec.Concurrency, 0xFFFF))
	s.in = make(chan *received, 2*int(rm)+16) // a reconnect may resend what is still queued here
	first := true                             // the first connection subscribes below
	cfg := autopaho.ClientConfig{
		CleanStartOnInitialConnection: !s.keep,
		SessionExpiryInterval:         uint32(b.opts.sessionExpiry / time.Second),
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			if first {
				first = false
				return
			}
			s.resubs.Go(func() { // OnConnectionUp must not block
				if err := s.subscribe(s.ctx, cm); err != nil && s.ctx.Err() == nil {
					b.log.Error("mqtt: subscribing again after a reconnect failed", "topic", spec.Topic, "group", spec.Group, "err", err)
				}
			})
		},
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.ReceiveMaximum = &rm
			return cp, nil
		},
		DisconnectPacketBuilder: func() *paho.Disconnect {
			d := &paho.Disconnect{}
			if !s.keep { // an ephemeral member's session ends with it
				zero := uint32(0)
				d.Properties = &paho.DisconnectProperties{SessionExpiryInterval: &zero}
			}
			return d
		},
		ClientConfig: paho.ClientConfig{ClientID: s.id, Session: s.sess, OnPublishReceived: []func(paho.PublishReceived) (bool, error){s.received}},
	}
	cm, err := b.connect(ctx, cfg)
	if err != nil {
		s.release()
		return nil, err
	}
	s.cm = cm
	if err := s.subscribe(ctx, cm); err != nil {
		_ = s.Close()
		return nil, err
	}
	b.mu.Lock()
	b.sources[s] = struct{}{}
	b.mu.Unlock()
	return s, nil
}

func (s *source) subscribe(ctx context.Context, cm *autopaho.ConnectionManager) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, PublishTimeout)
		defer cancel()
	}
	sub := &paho.Subscribe{}
	for _, f := range s.filters {
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	sa, err := cm.Subscribe(ctx, sub)
	if err != nil {
		return fmt.Errorf("%w: mqtt at %s: subscribe to %v: %w", bridge.ErrUnreachable, s.b.shown, s.filters, err)
	}
	for i, rc := range sa.Reasons {
		if rc != 1 {
			return fmt.Errorf("mqtt: subscribe to %s: the broker answered reason code %#x, want QoS 1 granted", s.filters[min(i, len(s.filters)-1)], rc)
		}
	}
	s.mu.Lock()
	s.subscribed = s.up
	s.mu.Unlock()
	return nil
}

// received is paho's callback, in the order the PUBLISHes arrive.
func (s *source) received(p paho.PublishReceived) (bool, error) {
	s.mu.Lock()
	r := &received{pb: p.Packet, conn: s.conn}
	if p.Packet.QoS > 0 && s.up {
		s.held[r] = struct{}{}
	}
	s.mu.Unlock()
	select {
	case s.in <- r:
	case <-s.flush: // closed: what still comes stays unacknowledged in the session
	}
	return true, nil
}

// Fetch implements consume.Source: messages the broker pushed (at most
// Spec.Concurrency unacknowledged: the connection's receive maximum).
func (s *source) Fetch(ctx context.Context, n int, deliver func(consume.Delivery)) error {
	t := time.NewTimer(fetchWait)
	defer t.Stop()
	for got := 0; got < n; {
		var r *received
		if got == 0 {
			select {
			case r = <-s.in:
			case <-ctx.Done():
				return nil
			case <-t.C:
				return nil
			}
		} else {
			select {
			case r = <-s.in:
			default:
				return nil
			}
		}
		if !s.stale(r) {
			deliver(s.delivery(r))
			got++
		}
	}
	return nil
}

func (s *source) stale(r *received) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return r.conn < s.staleBefore
}

func (s *source) delivery(r *received) consume.Delivery {
	m, n := decode(r.pb, r.pb.Topic == s.retry)
	return consume.Delivery{Msg: m, Count: n, Ref: r}
}

// Ack implements consume.Source: each PUBACK goes out as soon as its
// message is settled (see ackSession for why not in receive order).
func (s *source) Ack(_ context.Context, ds []consume.Delivery) error {
	rs := make([]*received, len(ds))
	for i, d := range ds {
		rs[i] = d.Ref.(*received)
	}
	s.settle(rs...)
	return nil
}

func (s *source) settle(rs ...*received) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rs {
		// Only a message of the current connection, not yet acknowledged:
		// one of a lost connection comes again (its packet id may be
		// another message's now).
		if _, ok := s.held[r]; !ok {
			continue
		}
		if err := s.sess.State.Ack(r.pb.Packet()); err != nil {
			return // the connection is going: the broker sends the rest again
		}
		delete(s.held, r)
	}
}

// Nack implements consume.Source. MQTT has no negative acknowledgement:
// after delay, a copy goes to the group's redelivery topic, then the
// original is acknowledged (see "Redelivery"). It returns at once.
func (s *source) Nack(_ context.Context, d consume.Delivery, delay time.Duration) error {
	s.nacks.Go(func() {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.flush: // closing: hand it back now
		}
		s.handBack(d, d.Count)
	})
	return nil
}

// Release implements consume.Source: a copy of each message goes back to
// the group at once, not counted as a delivery. The runtime releases only
// while stopping: an ephemeral member leaves its group first, so that the
// copies go to the other members.
func (s *source) Release(_ context.Context, ds []consume.Delivery) error {
	s.leave()
	for _, d := range ds {
		s.handBack(d, d.Count-1)
	}
	return nil
}

// handBack publishes a copy of d's message to the group's redelivery topic
// with the deliveries it had, then acknowledges the original. Until the
// copy is acknowledged by the broker, the original stays unacknowledged:
// a copy that cannot be published is tried again every second, and left
// to the session's redelivery once the source closes.
func (s *source) handBack(d consume.Delivery, delivered int) {
	r := d.Ref.(*received)
	for {
		s.mu.Lock()
		_, live := s.held[r]
		s.mu.Unlock()
		if !live {
			// The connection it came on is gone: the broker sends the
			// original again (DUP), so a copy would be a duplicate.
			return
		}
		pb, err := encode(s.retry, d.Msg, delivered)
		if err == nil {
			err = s.b.publish(s.spec.Topic, pb)
		}
		if err == nil {
			s.settle(r)
			return
		}
		if errors.Is(err, bridge.ErrNoSubscriber) { // an ephemeral member that was its group's last
			s.b.log.Warn("mqtt: no other member of the group is subscribed; a message handed back when closing is dropped", "uuid", d.Msg.UUID, "topic", s.spec.Topic, "group", s.spec.Group)
			return
		}
		if errors.Is(err, bridge.ErrRefused) || errors.Is(err, bridge.ErrTooLarge) {
			s.b.log.Error("mqtt: a message cannot be handed back; it stays unacknowledged", "uuid", d.Msg.UUID, "err", err)
			return
		}
		select {
		case <-s.ctx.Done():
			s.b.log.Warn("mqtt: handing a message back failed while closing; the broker delivers it again when the session resumes", "uuid", d.Msg.UUID, "err", err)
			return
		case <-time.After(retryEvery):
		}
	}
}

// Close implements consume.Source. A durable member hands back its
// pending nacks and disconnects: its session keeps what it was sent and
// did not acknowledge. An ephemeral one leaves its group first, hands back
// its pending nacks and whatever it was sent and never fetched, then ends
// its session.
func (s *source) Close() error {
	s.b.mu.Lock()
	delete(s.b.sources, s)
	s.b.mu.Unlock()
	s.stop()
	if !s.keep && s.cm != nil {
		s.leave()
		s.handBackUnfetched()
	}
	close(s.flush)
	s.nacks.Wait()
	var err error
	if s.cm != nil {
		ctx, cancel := context.WithTimeout(context.Background(), DialTimeout)
		defer cancel()
		err = s.cm.Disconnect(ctx) // no OnConnectionUp runs after it returns
	}
	s.resubs.Wait()
	s.release()
	return err
}

// leave unsubscribes an ephemeral member, once: the broker sends it
// nothing more, and what it hands back goes to the group's other members.
func (s *source) leave() {
	if s.keep {
		return
	}
	s.leaving.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), PublishTimeout)
		defer cancel()
		if _, err := s.cm.Unsubscribe(ctx, &paho.Unsubscribe{Topics: s.filters}); err != nil {
			s.b.log.Debug("mqtt: unsubscribing a closing member", "topic", s.spec.Topic, "group", s.spec.Group, "err", err)
		}
	})
}

// unfetchedQuiet is how long handBackUnfetched waits for one more message:
// paho hands over the PUBLISHes that came before the UNSUBACK from another
// goroutine, possibly after Unsubscribe has returned.
const unfetchedQuiet = 50 * time.Millisecond

// handBackUnfetched hands back what the broker sent and no Fetch took.
func (s *source) handBackUnfetched() {
	for {
		select {
		case r := <-s.in:
			if !s.stale(r) {
				d := s.delivery(r)
				s.handBack(d, d.Count-1)
			}
		case <-time.After(unfetchedQuiet):
			return
		}
	}
}

func (s *source) release() {
	if s.keep {
		unclaim(s.id)
	}
}
