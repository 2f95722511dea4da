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

// pubChannel is one pooled channel in confirm mode.
type pubChannel struct {
	ch      *amqp091.Channel
	conn    *amqp091.Connection // the connection it was opened on
	returns chan amqp091.Return // mandatory messages no queue took
}

// channels is the publisher's channel pool: at most cap(slots) publishes run
// at once, each on its own channel; idle channels are reused, closed ones
// are replaced on demand.
type channels struct {
	slots chan struct{}
	mu    sync.Mutex
	idle  []*pubChannel
}

func newChannels(n int) *channels { return &channels{slots: make(chan struct{}, n)} }

// get returns a usable channel on the current connection.
func (p *channels) get(conn *amqp091.Connection) (*pubChannel, error) {
	p.mu.Lock()
	for len(p.idle) > 0 {
		pc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if pc.conn == conn && !pc.ch.IsClosed() {
			p.mu.Unlock()
			return pc, nil
		}
		_ = pc.ch.Close()
	}
	p.mu.Unlock()
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, err
	}
	// One publish at a time per channel, each waiting for its confirm, so
	// at most one return is pending; amqp091 gives up on a full listener
	// after 5 s, it never blocks the connection for good.
	returns := ch.NotifyReturn(make(chan amqp091.Return, 1))
	return &pubChannel{ch: ch, conn: conn, returns: returns}, nil
}

// put gives a channel back, or closes it when it may be in a bad state.
func (p *channels) put(pc *pubChannel, ok bool) {
	if !ok || pc.ch.IsClosed() {
		_ = pc.ch.Close()
		return
	}
	p.mu.Lock()
	p.idle = append(p.idle, pc)
	p.mu.Unlock()
}

// closeIdle closes the idle channels (Bridge.Close).
func (p *channels) closeIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pc := range p.idle {
		_ = pc.ch.Close()
	}
	p.idle = nil
}

// Publish sends msgs, in order, to every queue bound to topic with the
// mandatory flag, and returns once the broker confirmed each of them
// (publisher confirms; persistent delivery). A message no queue is bound
// for fails with bridge.ErrNoSubscriber (the broker returned it). While the
// connection is down it fails at once, wrapping bridge.ErrUnreachable;
// nothing is buffered. Each message's context bounds the wait for a free
// channel and for its confirm. Publishing stops at the first failure.
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
	return b.withChannel(msgs[0].Context(), func(pc *pubChannel) (bool, error) {
		for _, m := range msgs {
			pub, err := marshaler{}.Marshal(m)
			if err != nil {
				return true, fmt.Errorf("amqp: publish to %q: marshal message %s: %w", topic, m.UUID, err)
			}
			if err := b.confirm(m.Context(), pc, b.opts.exchange, topic, pub); err != nil {
				if errors.Is(err, errReturned) {
					return true, fmt.Errorf("%w %q (no queue is bound to it on exchange %q)", bridge.ErrNoSubscriber, topic, b.opts.exchange)
				}
				return false, fmt.Errorf("amqp: publish to %q: message %s: %w", topic, m.UUID, err)
			}
		}
		return true, nil
	})
}

// withChannel runs f on a pooled channel of the publishing connection; f
// reports whether the channel can be reused. ctx bounds the wait for a
// channel.
func (b *Bridge) withChannel(ctx context.Context, f func(*pubChannel) (reuse bool, err error)) error {
	if !b.enter() {
		return bridge.ErrClosed
	}
	defer b.leave()
	select {
	case b.chans.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("amqp: waiting for a publishing channel: %w", ctx.Err())
	case <-b.closing:
		return bridge.ErrClosed
	}
	defer func() { <-b.chans.slots }()
	conn, _ := b.pub.current()
	if conn == nil {
		return fmt.Errorf("%w: amqp %s: connection lost, reconnecting", bridge.ErrUnreachable, b.opts.addr)
	}
	pc, err := b.chans.get(conn)
	if err != nil {
		return fmt.Errorf("%w: amqp %s: open channel: %w", bridge.ErrUnreachable, b.opts.addr, err)
	}
	reuse, err := f(pc)
	b.chans.put(pc, reuse)
	return err
}

// errReturned: the broker returned a mandatory message no queue took.
var errReturned = errors.New("returned by the broker: no queue is bound for it")

// confirm publishes pub with the mandatory flag on pc and waits for the
// broker's confirm. It wraps bridge.ErrUnreachable when the connection is
// lost, and is errReturned when no queue took the message.
func (b *Bridge) confirm(ctx context.Context, pc *pubChannel, exchange, key string, pub amqp091.Publishing) error {
	dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, pub)
	if err != nil {
		return b.lost(err)
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		// The confirm may still come: the message may have been published.
		return fmt.Errorf("not confirmed: %w", err)
	}
	if !acked {
		if pc.ch.IsClosed() {
			return b.lost(amqp091.ErrClosed)
		}
		return errors.New("the broker refused it (nack)")
	}
	// The broker sends basic.return before the confirm of an unroutable
	// mandatory message, and amqp091 hands both over in that order.
	for {
		select {
		case r, open := <-pc.returns:
			if !open {
				return nil // the channel closed after the confirm; nothing was returned
			}
			if r.MessageId == pub.MessageId {
				return errReturned
			}
			// A stale return: not possible with one publish at a time
			// per channel, ignored if it ever happens.
		default:
			return nil
		}
	}
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
	return b.withChannel(ctx, func(pc *pubChannel) (bool, error) {
		q, err := t.declareDelay(pc.ch, roundDelay(wait))
		if err != nil {
			return false, err
		}
		if err := b.confirm(ctx, pc, "", q, delayedCopy(d, deliveries, t.kind != bridge.Reply)); err != nil {
			return errors.Is(err, errReturned), fmt.Errorf("to %s: %w", q, err)
		}
		return true, nil
	})
}

// Close is a no-op: the bridge owns the publisher and closes it in Close.
func (publisher) Close() error { return nil }
