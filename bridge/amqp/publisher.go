package amqp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-go/switchboard/bridge"
)

// publisher is the bridge's shared publisher; Close is a no-op.
//
// It is the bridge's own rather than watermill-amqp's Publisher (see the
// package documentation) but speaks the same wire format: Watermill's
// DefaultMarshaler, persistent delivery, the message UUID in a header.
type publisher struct{ b *Bridge }

// pubChannel is one channel of the publisher's pool, in confirm mode and
// shared by every publish that picks it: up to window messages await their
// confirm on it at once (pipelined), instead of one at a time.
//
// A message's delivery tag is known before it is sent (publishes on the
// channel are serialised by send), so it is registered first and a
// dispatcher goroutine settles it when its confirm arrives. The same
// goroutine reads the channel's basic.return notifications: the broker sends
// the return of an unroutable mandatory message before its confirm, amqp091
// hands the return over (unbuffered) before it processes the confirm, and
// the dispatcher handles both in that order, so a returned message is
// flagged before its confirm settles it. Returns carry no delivery tag, only
// the message: they are matched by message id, and two messages with the
// same id never await their confirm on one channel at once.
type pubChannel struct {
	ch     *amqp091.Channel
	conn   *amqp091.Connection // the connection it was opened on
	window chan struct{}       // one token per message awaiting its confirm
	done   chan struct{}       // closed when the dispatcher has exited

	send sync.Mutex // serialises publishes: tags are assigned in send order

	mu      sync.Mutex
	closed  bool                // the channel closed: nothing more is confirmed
	pending map[uint64]*pending // awaiting their confirm, by delivery tag
	byID    map[string]*pending // the same, by message id
}

// pending is one message awaiting its confirm. Its fields are set before
// done is closed.
type pending struct {
	id       string
	done     chan struct{}
	acked    bool // basic.ack (false: basic.nack, or lost)
	returned bool // basic.return came first: no queue took it
	lost     bool // the channel closed before the confirm
}

func openPubChannel(conn *amqp091.Connection, window int, wg *sync.WaitGroup) (*pubChannel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, err
	}
	pc := &pubChannel{
		ch: ch, conn: conn,
		window:  make(chan struct{}, window),
		done:    make(chan struct{}),
		pending: map[uint64]*pending{},
		byID:    map[string]*pending{},
	}
	// Returns unbuffered: amqp091 hands a return over only once the
	// dispatcher took it, before it goes on to the next frame (the confirm).
	returns := ch.NotifyReturn(make(chan amqp091.Return))
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, window))
	wg.Add(1)
	go func() {
		defer wg.Done()
		pc.dispatch(confirms, returns)
	}()
	return pc, nil
}

// dispatch settles the messages awaiting their confirm until the channel
// closes, then settles what is left as lost.
func (pc *pubChannel) dispatch(confirms <-chan amqp091.Confirmation, returns <-chan amqp091.Return) {
	defer close(pc.done)
	for confirms != nil || returns != nil {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			pc.mu.Lock()
			if p := pc.byID[r.MessageId]; p != nil {
				p.returned = true
			}
			pc.mu.Unlock()
		case c, ok := <-confirms:
			if !ok {
				confirms = nil
				continue
			}
			pc.settle(c.DeliveryTag, c.Ack)
		}
	}
	pc.mu.Lock()
	pc.closed = true
	left := pc.pending
	pc.pending, pc.byID = map[uint64]*pending{}, map[string]*pending{}
	pc.mu.Unlock()
	for _, p := range left {
		p.lost = true
		close(p.done)
		<-pc.window
	}
}

func (pc *pubChannel) settle(tag uint64, ack bool) {
	pc.mu.Lock()
	p := pc.pending[tag]
	if p == nil {
		pc.mu.Unlock()
		return
	}
	delete(pc.pending, tag)
	if pc.byID[p.id] == p {
		delete(pc.byID, p.id)
	}
	pc.mu.Unlock()
	p.acked = ack
	close(p.done)
	<-pc.window
}

// load is the number of messages awaiting their confirm.
func (pc *pubChannel) load() int { return len(pc.window) }

// publish sends pub with the mandatory flag and returns at once, with the
// message awaiting its confirm (see await). ctx bounds the wait for room in
// the window.
func (pc *pubChannel) publish(ctx context.Context, exchange, key string, pub amqp091.Publishing) (*pending, error) {
	select {
	case pc.window <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for room among the messages awaiting their confirm: %w", ctx.Err())
	case <-pc.done:
		return nil, amqp091.ErrClosed
	}
	p := &pending{id: pub.MessageId, done: make(chan struct{})}
	pc.send.Lock()
	for {
		pc.mu.Lock()
		if pc.closed {
			pc.mu.Unlock()
			pc.send.Unlock()
			<-pc.window
			return nil, amqp091.ErrClosed
		}
		prev := pc.byID[p.id]
		if prev == nil {
			break // pc.mu stays locked
		}
		// A message with the same id awaits its confirm here: a return
		// could not tell them apart. Rare (the same message published twice
		// at once); wait for it.
		pc.mu.Unlock()
		pc.send.Unlock()
		select {
		case <-prev.done:
		case <-ctx.Done():
			<-pc.window
			return nil, fmt.Errorf("waiting for the confirm of a message with the same id: %w", ctx.Err())
		}
		pc.send.Lock()
	}
	tag := pc.ch.GetNextPublishSeqNo()
	pc.pending[tag] = p
	pc.byID[p.id] = p
	pc.mu.Unlock()
	err := pc.ch.PublishWithContext(ctx, exchange, key, true, false, pub)
	pc.send.Unlock()
	if err != nil {
		pc.mu.Lock()
		mine := pc.pending[tag] == p // not yet settled as lost by dispatch
		if mine {
			delete(pc.pending, tag)
			delete(pc.byID, p.id)
		}
		pc.mu.Unlock()
		if mine {
			<-pc.window
		}
		return nil, err
	}
	return p, nil
}

// channels is the publisher's channel pool: up to n channels on the current
// publishing connection, opened on demand, each with up to window messages
// awaiting their confirm. A publish takes the least loaded channel, and a
// new one while every open channel has messages in flight and the pool is
// not full.
type channels struct {
	window int
	mu     sync.Mutex
	slots  []*pubChannel
	wg     sync.WaitGroup // dispatchers
}

func newChannels(n, window int) *channels {
	return &channels{window: window, slots: make([]*pubChannel, n)}
}

// get returns a usable channel on conn.
func (p *channels) get(conn *amqp091.Connection) (*pubChannel, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var best *pubChannel
	free := -1
	for i, pc := range p.slots {
		if pc == nil || pc.conn != conn || pc.ch.IsClosed() {
			if pc != nil {
				_ = pc.ch.Close()
				p.slots[i] = nil
			}
			if free < 0 {
				free = i
			}
			continue
		}
		if best == nil || pc.load() < best.load() {
			best = pc
		}
	}
	if best != nil && (best.load() == 0 || free < 0) {
		return best, nil
	}
	pc, err := openPubChannel(conn, p.window, &p.wg)
	if err != nil {
		if best != nil {
			return best, nil
		}
		return nil, err
	}
	p.slots[free] = pc
	return pc, nil
}

// close closes the channels and waits for their dispatchers (Bridge.Close,
// after the publishing connection closed).
func (p *channels) close() {
	p.mu.Lock()
	for i, pc := range p.slots {
		if pc != nil {
			_ = pc.ch.Close()
			p.slots[i] = nil
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// Publish sends msgs, in order, to every queue bound to topic with the
// mandatory flag, and returns once the broker confirmed each of them
// (publisher confirms; persistent delivery). The messages go out on one
// channel of the pool, one after the other without waiting, and their
// confirms are awaited together; concurrent publishes share the channels
// and their confirm streams. A message no queue is bound for fails with
// bridge.ErrNoSubscriber (the broker returned it). While the connection is
// down it fails at once, wrapping bridge.ErrUnreachable; nothing is
// buffered. Each message's context bounds the wait for room on the channel
// and for its confirm. Publishing stops sending at the first message that
// cannot be sent; the error returned is the first message's that failed,
// and messages after it may have been delivered (at-least-once: the caller
// publishes them again).
func (p publisher) Publish(topic string, msgs ...*message.Message) error {
	b := p.b
	if topic == "" {
		return fmt.Errorf("%w: amqp: publish: empty topic", bridge.ErrRefused)
	}
	if len(topic) > maxNameLen {
		// amqp091 would fail writing the frame and tear the whole publishing
		// connection down (a 501 frame error), failing every publish in flight.
		return fmt.Errorf("%w: amqp: publish: topic of %d bytes: routing keys are at most %d", bridge.ErrRefused, len(topic), maxNameLen)
	}
	if len(msgs) == 0 {
		return nil
	}
	pubs := make([]amqp091.Publishing, len(msgs))
	for i, m := range msgs {
		pub, err := marshaler{}.Marshal(m)
		if err != nil {
			return fmt.Errorf("amqp: publish to %q: marshal message %s: %w", topic, m.UUID, err)
		}
		pubs[i] = pub
	}
	return b.withChannel(msgs[0].Context(), func(pc *pubChannel) error {
		sent := make([]*pending, 0, len(msgs))
		var first error
		for i, m := range msgs {
			pd, err := pc.publish(m.Context(), b.opts.exchange, topic, pubs[i])
			if err != nil {
				first = fmt.Errorf("amqp: publish to %q: message %s: %w", topic, m.UUID, b.lost(err))
				break
			}
			sent = append(sent, pd)
		}
		for i, pd := range sent {
			err := b.await(msgs[i].Context(), pc, pd)
			if err == nil || first != nil {
				continue
			}
			if errors.Is(err, errReturned) {
				first = fmt.Errorf("%w %q (no queue is bound to it on exchange %q)", bridge.ErrNoSubscriber, topic, b.opts.exchange)
			} else {
				first = fmt.Errorf("amqp: publish to %q: message %s: %w", topic, msgs[i].UUID, err)
			}
		}
		return first
	})
}

// withChannel runs f on a channel of the pool on the publishing connection.
func (b *Bridge) withChannel(ctx context.Context, f func(*pubChannel) error) error {
	if !b.enter() {
		return bridge.ErrClosed
	}
	defer b.leave()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("amqp: publish: %w", err)
	}
	conn, _ := b.pub.current()
	if conn == nil {
		return fmt.Errorf("%w: amqp %s: connection lost, reconnecting", bridge.ErrUnreachable, b.opts.addr)
	}
	pc, err := b.chans.get(conn)
	if err != nil {
		return fmt.Errorf("%w: amqp %s: open channel: %w", bridge.ErrUnreachable, b.opts.addr, err)
	}
	return f(pc)
}

// errReturned: the broker returned a mandatory message no queue took.
var errReturned = errors.New("returned by the broker: no queue is bound for it")

// await waits for the confirm of p, sent on pc. It wraps
// bridge.ErrUnreachable when the connection is lost, and is errReturned
// when no queue took the message.
func (b *Bridge) await(ctx context.Context, pc *pubChannel, p *pending) error {
	select {
	case <-p.done:
	case <-ctx.Done():
		// The confirm may still come: the message may have been published.
		return fmt.Errorf("not confirmed: %w", ctx.Err())
	}
	switch {
	case p.lost:
		return b.lost(amqp091.ErrClosed)
	case !p.acked:
		if pc.ch.IsClosed() {
			return b.lost(amqp091.ErrClosed)
		}
		return errors.New("the broker refused it (nack)")
	case p.returned:
		return errReturned
	}
	return nil
}

// lost wraps err with bridge.ErrUnreachable when the publishing connection
// is down.
func (b *Bridge) lost(err error) error {
	err = undoubled(err)
	if conn, _ := b.pub.current(); conn == nil || conn.IsClosed() || errors.Is(err, amqp091.ErrClosed) {
		return fmt.Errorf("%w: amqp %s: connection lost: %w", bridge.ErrUnreachable, b.opts.addr, err)
	}
	return err
}

// undoubled returns err with the text of an *amqp091.Error said once:
// amqp091 builds the reason of a connection it shuts down from the error
// that caused it, which often is itself an *amqp091.Error, so the text read
// `Exception (501) Reason: "Exception (501) Reason: \"…\""`. Other errors
// are returned unchanged.
func undoubled(err error) error {
	var e *amqp091.Error
	if !errors.As(err, &e) || e == nil {
		return err
	}
	const prefix = "Exception ("
	reason := e.Reason
	for range 8 { // nesting is one or two levels deep; bound it anyway
		if !strings.HasPrefix(reason, prefix) {
			break
		}
		_, quoted, ok := strings.Cut(reason, ") Reason: ")
		if !ok {
			break
		}
		unq, uerr := strconv.Unquote(quoted)
		if uerr != nil {
			break
		}
		reason = unq
	}
	if reason == e.Reason {
		return err
	}
	return &amqp091.Error{Code: e.Code, Reason: reason, Server: e.Server, Recover: e.Recover}
}

// delay moves a delivery nacked with its own delay to the group's delay
// queue for that delay (rounded up), with the deliveries so far, and waits
// for the broker's confirm. The caller acks the delivery afterwards; if
// delay fails, it rejects it instead (default retry queue).
func (b *Bridge) delay(t topology, d amqp091.Delivery, wait time.Duration, deliveries int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	// Declared on a channel of its own: a refused declaration closes its
	// channel, which must not fail the publishes sharing a pooled one.
	conn, _ := b.pub.current()
	if conn == nil {
		return fmt.Errorf("%w: amqp %s: connection lost, reconnecting", bridge.ErrUnreachable, b.opts.addr)
	}
	var q string
	if err := withChannel(conn, func(ch *amqp091.Channel) error {
		var err error
		q, err = t.declareDelay(ch, roundDelay(wait))
		return err
	}); err != nil {
		return err
	}
	return b.withChannel(ctx, func(pc *pubChannel) error {
		pd, err := pc.publish(ctx, "", q, delayedCopy(d, deliveries, t.kind != bridge.Reply))
		if err == nil {
			err = b.await(ctx, pc, pd)
		} else {
			err = b.lost(err)
		}
		if err != nil {
			return fmt.Errorf("to %s: %w", q, err)
		}
		return nil
	})
}

// Close is a no-op: the bridge owns the publisher and closes it in Close.
func (publisher) Close() error { return nil }
