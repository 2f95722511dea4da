package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-go/switchboard/bridge"
)

// Worker back-off after a failed pull (server down, consumer missing).
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// verifyEvery is how often an idle subscriber checks that its consumer
// still exists.
const verifyEvery = 30 * time.Second

// subscriber consumes one group's durable pull consumer. Each Subscribe
// call runs one puller and spec.Concurrency workers: the puller asks the
// server for as many messages as there are idle workers, in one pull request,
// and hands each message to an idle worker as it arrives, so at most
// Concurrency messages per Subscribe are in flight and none waits in a client
// buffer while its ack-wait clock runs.
type subscriber struct {
	b      *natsBridge
	spec   bridge.Spec
	stream string

	consMu      sync.Mutex
	cons        jetstream.Consumer
	provisioned time.Time // last (re)provisioning, to rate-limit it
	verified    time.Time // last check that the consumer exists

	mu          sync.Mutex // guards closed and wg.Add
	closed      bool
	closing     chan struct{} // closed: stop pulling
	abandon     chan struct{} // closed: stop waiting for handlers' verdicts
	abandonOnce sync.Once
	releaseOnce sync.Once
	wg          sync.WaitGroup // every goroutine of every Subscribe
	checks      sync.WaitGroup // reconnected runs; added to under b.mu
}

// errTooSoon: another re-creation just ran; check again later.
var errTooSoon = errors.New("nats: consumer re-created less than a second ago")

func newSubscriber(b *natsBridge, spec bridge.Spec, cons jetstream.Consumer, stream string) *subscriber {
	return &subscriber{
		b: b, spec: spec, stream: stream, cons: cons, verified: time.Now(),
		closing: make(chan struct{}), abandon: make(chan struct{}),
	}
}

// Subscribe starts one puller and spec.Concurrency workers. The channel
// closes when the subscriber or the bridge is closed or ctx is done, once
// every worker has settled its message.
func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic != s.spec.Topic {
		return nil, fmt.Errorf("nats: subscriber for topic %q asked to subscribe to %q", s.spec.Topic, topic)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("nats: subscriber for %q: %w", topic, bridge.ErrClosed)
	}
	out := make(chan *message.Message)
	stopCtx, stop := context.WithCancel(context.Background())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.closing:
		case <-s.b.done:
		case <-stopCtx.Done(): // every worker has ended
		}
		stop()
	}()
	// idle holds one token per worker waiting for a message: the puller
	// takes tokens before it pulls and sends one message on jobs per token
	// it used, so a send on jobs always finds a worker that is waiting.
	idle := make(chan struct{}, s.spec.Concurrency)
	jobs := make(chan jetstream.Msg)
	var workers sync.WaitGroup
	for range s.spec.Concurrency {
		idle <- struct{}{}
		workers.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer workers.Done()
			for jm := range jobs {
				if !s.handle(ctx, stopCtx, out, jm) {
					return // abandoned: the bridge is closing
				}
				idle <- struct{}{}
			}
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(jobs)
		s.pull(stopCtx, idle, jobs)
	}()
	s.wg.Add(1) // Close returns once the channel is closed
	go func() {
		defer s.wg.Done()
		workers.Wait()
		stop()
		close(out)
	}()
	return out, nil
}

func (s *subscriber) consumer() jetstream.Consumer {
	s.consMu.Lock()
	defer s.consMu.Unlock()
	return s.cons
}

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
		s.verified = time.Now() // claimed: the other idle workers skip
	}
	s.consMu.Unlock()
	if due {
		if err := s.verify(ctx); err != nil {
			s.b.log.Debug("nats: verifying consumer", "topic", s.spec.Topic, "group", s.spec.Group, "err", err)
		}
	}
}

// reconnected verifies the consumer after the connection came back,
// retrying while JetStream is still starting.
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
	wait := minBackoff
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
		wait = min(2*wait, maxBackoff)
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
// moving a consumer: the next pull after a pause deals with it.
func transient(err error) bool {
	return errors.Is(err, jetstream.ErrServerShutdown) ||
		errors.Is(err, jetstream.ErrConsumerLeadershipChanged) ||
		errors.Is(err, natsgo.ErrConnectionClosed) ||
		errors.Is(err, natsgo.ErrConnectionReconnecting) ||
		errors.Is(err, natsgo.ErrReconnectBufExceeded)
}

// pull fetches batches until stopCtx ends: it waits for at least one idle
// worker, takes every idle worker's token, asks for that many messages in
// one pull request and sends each message that arrives to a worker on jobs.
// The tokens the batch did not use go back to idle when the request ends
// (it has its messages, or it expired after fetchWait).
func (s *subscriber) pull(stopCtx context.Context, idle chan struct{}, jobs chan<- jetstream.Msg) {
	backoff := minBackoff
	pause := func() bool {
		t := time.NewTimer(backoff)
		defer t.Stop()
		backoff = min(2*backoff, maxBackoff)
		select {
		case <-t.C:
			return true
		case <-stopCtx.Done():
			return false
		}
	}
	for {
		select {
		case <-idle:
		case <-stopCtx.Done():
			return
		}
		n := 1
	take:
		for n < s.spec.Concurrency {
			select {
			case <-idle:
				n++
			default:
				break take
			}
		}
		got, err := s.fetch(stopCtx, n, jobs)
		for range n - got {
			idle <- struct{}{}
		}
		if stopCtx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			backoff = minBackoff
			if got == 0 {
				s.verifyIfDue(stopCtx) // idle: is the consumer still there?
			}
			continue
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, natsgo.ErrTimeout), errors.Is(err, jetstream.ErrNoMessages):
			backoff = minBackoff
			continue
		case missing(err) && s.b.conn.IsConnected():
			_ = s.reprovision(stopCtx)
		case transient(err):
			s.b.log.Debug("nats: pull interrupted", "topic", s.spec.Topic, "err", err)
		case s.b.conn.IsConnected():
			s.b.log.Warn("nats: pull failed", "topic", s.spec.Topic, "group", s.spec.Group, "err", err)
		default:
			s.b.log.Debug("nats: pull failed while disconnected", "topic", s.spec.Topic, "err", err)
		}
		if !pause() {
			return
		}
	}
}

// fetch sends one pull request for n messages and sends each message it
// brings on jobs; it returns how many it sent. A pull is never cut short by
// a stop: the server may already have assigned it a message, which would
// then be stranded with a subscriber that stopped listening until ack_wait
// (30 s by default) — a caller waiting that long, and a command run twice
// when it times out. The request ends by itself within fetchWait, so that
// bounds how long a stop waits for it; a message it brings after the stop
// is given back at once.
func (s *subscriber) fetch(stopCtx context.Context, n int, jobs chan<- jetstream.Msg) (int, error) {
	batch, err := s.consumer().Fetch(n, jetstream.FetchMaxWait(fetchWait))
	if err != nil {
		return 0, err
	}
	sent := 0
	for jm := range batch.Messages() {
		if stopCtx.Err() != nil || sent == n { // stopping, or more than asked for
			s.settle(jm, false, 0)
			continue
		}
		jobs <- jm // a worker whose token this message uses is waiting
		sent++
	}
	return sent, batch.Error()
}

// handle hands jm to the consumer of out and settles it with the handler's
// verdict: Ack → acknowledged; Nack → redelivered after bridge.NackDelay. A
// message that arrives while stopping goes back at once. It returns false
// when the subscriber abandoned the message (see await).
func (s *subscriber) handle(ctx, stopCtx context.Context, out chan<- *message.Message, jm jetstream.Msg) bool {
	if stopCtx.Err() != nil {
		s.settle(jm, false, 0)
		return true
	}
	wm := decode(jm)
	wm.SetContext(ctx)
	if md, err := jm.Metadata(); err == nil {
		wm.Metadata.Set(bridge.DeliveryKey, strconv.FormatUint(md.NumDelivered, 10))
	}
	select {
	case out <- wm:
	case <-stopCtx.Done():
		s.settle(jm, false, 0) // never handed out: give it back now
		return true
	}
	return s.await(jm, wm)
}

// await waits for the handler's verdict on wm, even when stopping (the
// handler is running), and settles jm with it. While the handler runs, it
// tells JetStream every ack_wait/2 that the message is in progress, so a
// slow handler is not raced by a redelivery: ack_wait bounds how long a
// message stays with a dead process, not how long a handler may take. It
// returns false when the subscriber abandoned the message (the bridge is
// closing, or Close waited ack_wait): JetStream then delivers it again
// after ack_wait.
func (s *subscriber) await(jm jetstream.Msg, wm *message.Message) bool {
	progress := time.NewTicker(s.b.opts.ackWait / 2)
	defer progress.Stop()
	for {
		select {
		case <-wm.Acked():
			s.settle(jm, true, 0)
			return true
		case <-wm.Nacked():
			s.settle(jm, false, bridge.NackDelay(wm.Metadata))
			return true
		case <-progress.C:
			if err := jm.InProgress(); err != nil {
				s.b.log.Debug("nats: progress report failed", "topic", s.spec.Topic, "err", err)
			}
		case <-s.abandon:
			select { // a verdict that raced with abandon still counts
			case <-wm.Acked():
				s.settle(jm, true, 0)
			case <-wm.Nacked():
				s.settle(jm, false, 0)
			default:
			}
			return false
		}
	}
}

// settle acks or naks jm. An ack is not confirmed by the server (see the
// package documentation, "Acks"): it is sent on the connection, ahead of
// the puller's next request, and Close flushes the connection before it
// returns. A failure is logged only: a lost ack or nak both end in a
// redelivery after ack_wait, never in a loss.
func (s *subscriber) settle(jm jetstream.Msg, ack bool, delay time.Duration) {
	var err error
	switch {
	case ack:
		err = jm.Ack()
	case delay > 0:
		err = jm.NakWithDelay(delay)
	default:
		err = jm.Nak()
	}
	if err != nil {
		s.b.log.Warn("nats: settling message failed; it will be redelivered after ack_wait",
			"topic", s.spec.Topic, "group", s.spec.Group, "ack", ack, "err", err)
	}
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

// Close stops pulling and waits until every message this subscriber handed
// out has been acked or nacked, for at most ack_wait, so a stuck handler
// cannot hang it: it then stops reporting progress on the unsettled ones
// (JetStream delivers them again after ack_wait) and returns an error.
// Close does not touch the bridge's connection.
func (s *subscriber) Close() error {
	return s.stop(false)
}

// stop ends the subscriber; now skips waiting for handlers (bridge Close).
func (s *subscriber) stop(now bool) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	if now {
		s.abandonOnce.Do(func() { close(s.abandon) })
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-time.After(s.b.opts.ackWait):
		s.abandonOnce.Do(func() { close(s.abandon) })
		<-done
		err = fmt.Errorf("nats: subscriber %s/%s closed with messages still unsettled after ack_wait (%s); JetStream redelivers them",
			s.spec.Topic, s.spec.Group, s.b.opts.ackWait)
	}
	// The acks and naks are on their way: make sure the server has them
	// before Close returns, so a member that goes on is not handed them again.
	if ferr := s.b.conn.FlushTimeout(time.Second); ferr != nil && !errors.Is(ferr, natsgo.ErrConnectionClosed) {
		s.b.log.Debug("nats: flushing acks on close", "topic", s.spec.Topic, "err", ferr)
	}
	s.releaseOnce.Do(func() { s.b.release(s) })
	s.checks.Wait() // no check starts once released; closing ends the running ones
	return err
}

var _ message.Subscriber = (*subscriber)(nil)
