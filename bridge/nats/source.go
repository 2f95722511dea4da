package nats

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/consume"
)

// verifyEvery is how often an idle subscription checks that its consumer
// still exists.
const verifyEvery = 30 * time.Second

// subscriber is one group's subscriber: the shared consumer runtime, with
// a source per Subscribe call, plus what belongs to the group's durable
// consumer rather than to one call: its handle, re-created when the server
// lost it, and the checks that notice that.
type subscriber struct {
	*consume.Subscriber
	b      *natsBridge
	spec   bridge.Spec
	stream string

	consMu      sync.Mutex
	cons        jetstream.Consumer
	provisioned time.Time // last (re)provisioning, to rate-limit it
	verified    time.Time // last check that the consumer exists

	closing     chan struct{} // closed when Close starts: running checks end
	closingOnce sync.Once
	checks      sync.WaitGroup // reconnected runs; added to under b.mu
}

// Close stops the subscription (see consume.Subscriber.Close: it waits for
// the handlers' verdicts at most ack_wait, after which JetStream delivers
// the unsettled messages again) and forgets it on the bridge. It does not
// touch the bridge's connection.
func (s *subscriber) Close() error { return s.stop(false) }

// stop ends the subscriber; abandon skips waiting for the handlers (the
// bridge is closing).
func (s *subscriber) stop(abandon bool) error {
	s.closingOnce.Do(func() { close(s.closing) })
	if abandon {
		s.Abandon()
	}
	err := s.Subscriber.Close()
	s.b.forget(s)
	s.checks.Wait() // none starts once forgotten; closing ends the running ones
	return err
}

func (s *subscriber) consumer() jetstream.Consumer {
	s.consMu.Lock()
	defer s.consMu.Unlock()
	return s.cons
}

// errTooSoon: another re-creation just ran; check again later.
var errTooSoon = errors.New("nats: consumer re-created less than a second ago")

// reprovision re-creates the stream and consumer after the server said they
// do not exist (deleted by an operator, or a memory stream lost in a server
// restart). It runs at most once per second per subscriber; a skipped call
// returns errTooSoon.
func (s *subscriber) reprovision(ctx context.Context) error {
	s.consMu.Lock()
	defer s.consMu.Unlock()
	if time.Since(s.provisioned) < time.Second {
		return errTooSoon
	}
	s.provisioned = time.Now()
	cons, stream, err := s.b.provision(ctx, s.spec)
	if err != nil {
		s.b.log.Debug("nats: re-creating consumer", "topic", s.spec.Topic, "group", s.spec.Group, "err", err)
		return err
	}
	if stream != s.stream {
		s.b.log.Warn("nats: topic moved to another stream", "topic", s.spec.Topic, "from", s.stream, "to", stream)
	}
	s.cons = cons
	s.b.log.Info("nats: consumer re-created", "topic", s.spec.Topic, "group", s.spec.Group, "stream", stream)
	return nil
}

// verify asks the server for the consumer and re-creates it, with its
// stream, when it is gone. A pull on a missing consumer does not fail (the
// request just expires), so this is how a subscriber notices a deleted
// consumer or a reply stream lost in a server restart.
func (s *subscriber) verify(ctx context.Context) error {
	ictx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	_, err := s.consumer().Info(ictx)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return s.reprovision(ctx)
	}
	return err
}

// verifyIfDue runs verify when verifyEvery has passed since the last one.
func (s *subscriber) verifyIfDue(ctx context.Context) {
	s.consMu.Lock()
	due := time.Since(s.verified) >= verifyEvery
	if due {
		s.verified = time.Now() // claimed: the subscriber's other sources skip
	}
	s.consMu.Unlock()
	if due {
		if err := s.verify(ctx); err != nil {
			s.b.log.Debug("nats: verifying consumer", "topic", s.spec.Topic, "group", s.spec.Group, "err", err)
		}
	}
}

// reconnected verifies the consumer after the connection came back,
// retrying (30 times, 100 ms doubling to 2 s apart) while JetStream is
// still starting.
func (s *subscriber) reconnected() {
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-s.closing:
		case <-s.b.done:
		case <-ctx.Done():
		}
		cancel()
	}()
	defer func() { cancel(); <-watched }()
	wait := 100 * time.Millisecond
	for range 30 {
		err := s.verify(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		s.b.log.Debug("nats: verifying consumer after reconnect", "topic", s.spec.Topic, "group", s.spec.Group, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// missing reports whether err means the consumer or its stream is gone.
func missing(err error) bool {
	return errors.Is(err, natsgo.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, jetstream.ErrConsumerDeleted)
}

// transient reports whether err is the server going away or a cluster
// moving a consumer: a later pull deals with it.
func transient(err error) bool {
	return errors.Is(err, jetstream.ErrServerShutdown) ||
		errors.Is(err, jetstream.ErrConsumerLeadershipChanged) ||
		errors.Is(err, natsgo.ErrConnectionClosed) ||
		errors.Is(err, natsgo.ErrConnectionReconnecting) ||
		errors.Is(err, natsgo.ErrReconnectBufExceeded)
}

// source is one Subscribe call's pulls on the group's consumer; the
// runtime (bridge/internal/consume) does the rest.
type source struct{ s *subscriber }

// Fetch sends one pull request for n messages and delivers each as it
// arrives. A pull is never cut short by a stop (ctx is not given to the
// request): the server may already have assigned it a message, which would
// then be stranded with a subscriber that stopped listening until ack_wait
// (30 s by default) — a caller waiting that long, and a command run twice
// when it times out. The request ends by itself within fetchWait, which
// bounds how long a stop waits for it; deliver gives back at once a
// message it brings after the stop.
func (src source) Fetch(ctx context.Context, n int, deliver func(consume.Delivery)) error {
	s := src.s
	batch, err := s.consumer().Fetch(n, jetstream.FetchMaxWait(fetchWait))
	if err == nil {
		got := 0
		for jm := range batch.Messages() {
			got++
			deliver(delivery(jm))
		}
		// An expired request is not an error: the client drops the
		// server's timeout and no-messages statuses itself.
		if err = batch.Error(); err == nil {
			if got == 0 && ctx.Err() == nil {
				s.verifyIfDue(ctx) // idle: is the consumer still there?
			}
			return nil
		}
	}
	switch {
	case missing(err) && s.b.conn.IsConnected():
		if s.reprovision(ctx) == nil {
			return nil
		}
		return fmt.Errorf("nats: consumer %s is gone: %w", consumerName(s.spec.Topic, s.spec.Group), err)
	case transient(err):
		return err // the server going away: the runtime logs it once and pulls again after its backoff
	default:
		return fmt.Errorf("nats: pull: %w", err)
	}
}

// delivery wraps jm for the runtime, with JetStream's delivery count.
func delivery(jm jetstream.Msg) consume.Delivery {
	d := consume.Delivery{Msg: decode(jm), Ref: jm}
	if md, err := jm.Metadata(); err == nil {
		d.Count = int(min(md.NumDelivered, math.MaxInt32))
	}
	return d
}

// Ack sends a plain JetStream ack per message: not confirmed (no AckSync),
// and not one AckAll, since handlers finish out of order. See the package
// documentation, "Acks": a lost ack ends in a redelivery after ack_wait,
// never in a loss, and Close flushes the connection.
func (source) Ack(_ context.Context, ds []consume.Delivery) error {
	return settleEach(ds, jetstream.Msg.Ack)
}

// Nack asks JetStream to deliver the message again after delay.
func (source) Nack(_ context.Context, d consume.Delivery, delay time.Duration) error {
	jm := d.Ref.(jetstream.Msg)
	if delay > 0 {
		return jm.NakWithDelay(delay)
	}
	return jm.Nak()
}

// Release naks the messages for an immediate redelivery (JetStream counts
// it as a delivery: it cannot be told otherwise).
func (source) Release(_ context.Context, ds []consume.Delivery) error {
	return settleEach(ds, jetstream.Msg.Nak)
}

// settleEach applies settle to every message and reports the first failure
// with how many failed.
func settleEach(ds []consume.Delivery, settle func(jetstream.Msg) error) error {
	var first error
	failed := 0
	for _, d := range ds {
		if err := settle(d.Ref.(jetstream.Msg)); err != nil {
			failed++
			first = cmp.Or(first, err)
		}
	}
	if first != nil {
		return fmt.Errorf("nats: %d of %d messages not settled: %w", failed, len(ds), first)
	}
	return nil
}

// Heartbeat tells JetStream the message is in progress, so a handler slower
// than ack_wait is not raced by a redelivery: ack_wait bounds how long a
// message stays with a dead process, not how long a handler may take.
// Deliveries have no Deadline (the heartbeats keep them with this member).
// A report is a publish on the connection, not a round trip.
func (src source) Heartbeat(ds []consume.Delivery) []time.Time {
	for _, d := range ds {
		if err := d.Ref.(jetstream.Msg).InProgress(); err != nil {
			src.s.b.log.Debug("nats: progress report failed", "topic", src.s.spec.Topic, "err", err)
		}
	}
	return make([]time.Time, len(ds))
}

// Close flushes the connection: the acks and naks of this call are on
// their way, and the server must have them before the subscription is
// over, so a member that goes on is not handed them again. The durable
// consumer stays.
func (src source) Close() error {
	if err := src.s.b.conn.FlushTimeout(time.Second); err != nil && !errors.Is(err, natsgo.ErrConnectionClosed) {
		return fmt.Errorf("nats: flushing acks: %w", err)
	}
	return nil
}

var marshaler = &wmnats.NATSMarshaler{}

// decode turns a JetStream message into a Watermill message with
// watermill-nats' header format (UUID in _watermill_message_uuid, metadata
// in headers). A header with several values, which that format rejects, is
// reduced to its last value instead of dropping the message.
func decode(jm jetstream.Msg) *message.Message {
	nm := &natsgo.Msg{Subject: jm.Subject(), Data: jm.Data(), Header: jm.Headers()}
	wm, err := marshaler.Unmarshal(nm)
	if err == nil {
		return wm
	}
	h := natsgo.Header{}
	for k, v := range nm.Header {
		if len(v) > 0 {
			h[k] = v[len(v)-1:]
		}
	}
	nm.Header = h
	if wm, err = marshaler.Unmarshal(nm); err == nil {
		return wm
	}
	return message.NewMessage(h.Get(wmnats.WatermillUUIDHdr), nm.Data)
}

var (
	_ consume.Source      = source{}
	_ consume.Heartbeater = source{}
)
