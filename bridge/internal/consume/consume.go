package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
)

// Delivery is one message a Source fetched.
type Delivery struct {
	// Msg is the decoded message. The runtime sets its context and, when
	// Count > 0, bridge.DeliveryKey.
	Msg *message.Message
	// Count is how many times the message has been delivered to the group,
	// this delivery included; 0 when the backend cannot tell.
	Count int
	// Ref is the source's own handle on the message, for settling it.
	Ref any
	// Deadline, when set, is when the broker gives the message to another
	// member unless it is settled (a lease). Past it the runtime frees the
	// slot without settling the message, and a late verdict changes
	// nothing; a message no handler took by then is not handed out.
	Deadline time.Time
}

// Source is a backend's half of one Subscribe call. The runtime calls
// Fetch from one goroutine, Ack from another, Nack and Release from any;
// Close once, after every other call has returned.
type Source interface {
	// Fetch asks the broker for up to n messages (n ≥ 1) and calls deliver
	// for each one as it arrives, from Fetch's goroutine, at most n times;
	// it returns when the request is over: n messages came, or the
	// source's own wait passed (a long poll of about a second at most, so
	// that a stop is noticed), or ctx ended. A message that arrives after
	// ctx ended is still passed to deliver, which releases it. An error is
	// logged and Fetch is called again after a backoff (100 ms doubling to
	// 2 s); reconnecting and declaring again are the source's business,
	// inside Fetch.
	Fetch(ctx context.Context, n int, deliver func(Delivery)) error
	// Ack acknowledges messages whose handlers acked them, in one request
	// where the backend allows. Ack, Nack and Release get a context that
	// does not end when the subscription stops or is abandoned (verdicts
	// given before still go out): the source bounds each request itself. An error is logged: an unacknowledged
	// message is delivered again, never lost.
	Ack(ctx context.Context, ds []Delivery) error
	// Nack hands one message back to the group, to be delivered again
	// after delay.
	Nack(ctx context.Context, d Delivery, delay time.Duration) error
	// Release hands back at once messages no handler received (fetched
	// while stopping); it should not count as a delivery where the
	// backend can tell.
	Release(ctx context.Context, ds []Delivery) error
	// Close ends the subscription on the broker's side.
	Close() error
}

// Heartbeater is implemented by a source whose broker delivers a message
// again when it is held longer than a deadline (NATS's ack_wait, a
// PostgreSQL lease): the runtime calls Heartbeat every
// Config.HeartbeatEvery while messages wait for a handler (all of them in
// one call) or a handler holds one. Heartbeat returns each message's new
// Deadline, in the order of ds, or the zero time to keep the one it had (a
// source that sets none, or a heartbeat that failed).
type Heartbeater interface {
	Heartbeat(ds []Delivery) (deadlines []time.Time)
}

// Config configures a Subscriber.
type Config struct {
	// Spec is the subscription; Concurrency bounds the messages in flight
	// per Subscribe call.
	Spec bridge.Spec
	// Backend names the backend in logs and errors ("nats").
	Backend string
	// Logger receives the runtime's logs. Default slog.Default().
	Logger *slog.Logger
	// CloseWait bounds how long Close waits for the verdicts of messages
	// handlers hold; 0 waits as long as they take (the caller bounds it).
	// Messages still held then are neither acked nor nacked: the broker
	// delivers them again after its own deadline.
	CloseWait time.Duration
	// HeartbeatEvery is how often a held message's Heartbeat is called
	// (only for sources that implement Heartbeater). Default: never.
	HeartbeatEvery time.Duration
	// MaxAckBatch bounds the deliveries of one Ack call. Default 256.
	MaxAckBatch int
	// Prefetch is how many messages beyond Spec.Concurrency a
	// subscription fetches ahead, so that the next one is ready when a
	// handler finishes instead of a round trip later; they wait in order
	// and are handed out as slots free up. The broker counts them as
	// delivered: they get heartbeats while they wait, one whose Deadline
	// passes first is dropped (not handed out, not settled), and a member
	// that dies holds them until the broker's deadline. Default 0.
	Prefetch int
}

// DefaultMaxAckBatch is Config.MaxAckBatch's default.
const DefaultMaxAckBatch = 256

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	errs := []error{c.Spec.Validate()}
	if c.Backend == "" {
		errs = append(errs, errors.New("consume: empty Backend"))
	}
	if c.CloseWait < 0 {
		errs = append(errs, fmt.Errorf("consume: CloseWait %s is negative", c.CloseWait))
	}
	if c.HeartbeatEvery < 0 {
		errs = append(errs, fmt.Errorf("consume: HeartbeatEvery %s is negative", c.HeartbeatEvery))
	}
	if c.MaxAckBatch < 0 {
		errs = append(errs, fmt.Errorf("consume: MaxAckBatch %d is negative", c.MaxAckBatch))
	}
	if c.Prefetch < 0 {
		errs = append(errs, fmt.Errorf("consume: Prefetch %d is negative", c.Prefetch))
	}
	return errors.Join(errs...)
}

// Subscriber is a message.Subscriber for one bridge.Spec, running a
// Source per Subscribe call. Closing it does not close the bridge.
type Subscriber struct {
	cfg  Config
	log  *slog.Logger
	open func(ctx context.Context) (Source, error)

	mu          sync.Mutex
	closed      bool
	stopping    chan struct{} // closed by Close or Abandon: fetch nothing more
	abandon     chan struct{} // closed: stop waiting for verdicts
	abandonOnce sync.Once
	closeOnce   sync.Once
	closeErr    error
	wg          sync.WaitGroup // every goroutine of every Subscribe call
}

// New returns a Subscriber for cfg. open is called by each Subscribe: it
// declares what the subscription needs on the broker (a refusal fails
// Subscribe) and returns the Source. Its context ends when that
// subscription stops (Close, Abandon, or Subscribe's context ending): a
// source that prefetches can watch it to give back at once what it holds
// for no handler, even while every slot is busy and Fetch is not running.
func New(cfg Config, open func(ctx context.Context) (Source, error)) (*Subscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxAckBatch == 0 {
		cfg.MaxAckBatch = DefaultMaxAckBatch
	}
	return &Subscriber{
		cfg: cfg, open: open,
		log:      cfg.Logger.With("topic", cfg.Spec.Topic, "group", cfg.Spec.Group),
		stopping: make(chan struct{}), abandon: make(chan struct{}),
	}, nil
}

// Subscribe opens a Source and delivers its messages on the returned
// channel, which closes when the subscriber closes or ctx ends, once every
// message handed out has been settled (or abandoned, see Close).
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic != s.cfg.Spec.Topic {
		return nil, fmt.Errorf("%s: subscriber for topic %q asked to subscribe to %q", s.cfg.Backend, s.cfg.Spec.Topic, topic)
	}
	// The lock is not held while open runs (it may wait for a broker):
	// Close and Abandon end that wait through the stop signal below.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("%s: subscriber for %q: %w", s.cfg.Backend, topic, bridge.ErrClosed)
	}
	s.wg.Add(1) // Close waits for this run, from its open on
	s.mu.Unlock()
	capacity := s.cfg.Spec.Concurrency + s.cfg.Prefetch
	r := &run{
		s: s, ctx: ctx,
		out:     make(chan *message.Message),
		idle:    make(chan struct{}, capacity),
		running: make(chan struct{}, s.cfg.Spec.Concurrency),
		ready:   make(chan Delivery, capacity),
		acks:    make(chan Delivery, capacity),
	}
	r.stopCtx, r.stop = context.WithCancel(context.Background())
	go func() { // the stop signal
		select {
		case <-ctx.Done():
		case <-s.stopping:
		case <-r.stopCtx.Done():
		}
		r.stop()
	}()
	src, err := s.open(r.stopCtx)
	if err != nil {
		r.stop()
		s.wg.Done()
		return nil, err
	}
	r.src = src
	if hb, ok := src.(Heartbeater); ok && s.cfg.HeartbeatEvery > 0 {
		r.hb = hb
	}
	// The settling context ends when the run has ended, not at a stop or
	// an abandon: the verdicts given before them still go out (each
	// source bounds its own requests).
	r.settleCtx, r.endSettle = context.WithCancel(context.Background())
	for range capacity {
		r.idle <- struct{}{}
	}
	for range s.cfg.Spec.Concurrency {
		r.running <- struct{}{}
	}
	go func() { // a run stopped while opening ends at once: nothing is fetched
		defer s.wg.Done()
		r.main()
	}()
	return r.out, nil
}

// Close stops fetching, releases what no handler received, waits for the
// verdicts of the messages handlers hold (at most Config.CloseWait when
// set), acknowledges the acked ones and closes the sources. Messages still
// held after CloseWait are left to the broker's own redelivery, and Close
// returns an error saying so. Close is idempotent; a later Subscribe fails
// with bridge.ErrClosed.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() {
		s.markClosed()
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		var timeout <-chan time.Time
		if s.cfg.CloseWait > 0 {
			t := time.NewTimer(s.cfg.CloseWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-done:
		case <-timeout:
			s.Abandon()
			<-done
			s.closeErr = fmt.Errorf("%s: subscriber %s/%s closed with messages still held by handlers after %s; the broker delivers them again",
				s.cfg.Backend, s.cfg.Spec.Topic, s.cfg.Spec.Group, s.cfg.CloseWait)
			s.log.Warn(s.cfg.Backend + ": subscriber closed with messages still held by handlers; the broker delivers them again")
		}
	})
	return s.closeErr
}

// Abandon stops fetching and stops waiting for verdicts at once, for a
// bridge that is closing: messages handlers still hold are left to the
// broker's redelivery. It returns at once; Close waits for the goroutines.
func (s *Subscriber) Abandon() {
	s.markClosed()
	s.abandonOnce.Do(func() { close(s.abandon) })
}

// markClosed refuses later Subscribe calls and stops fetching.
func (s *Subscriber) markClosed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.stopping)
	}
}

// run is one Subscribe call.
type run struct {
	s   *Subscriber
	src Source
	hb  Heartbeater     // src, when it implements Heartbeater and HeartbeatEvery is set
	ctx context.Context // Subscribe's, set on every message

	out       chan *message.Message
	idle      chan struct{} // one token per message the run may fetch: Concurrency + Prefetch
	running   chan struct{} // one token per message the handlers may hold: Concurrency
	ready     chan Delivery // fetched, in order, waiting for a running token
	acks      chan Delivery // acked by a handler, not yet acknowledged
	stopCtx   context.Context
	stop      context.CancelFunc
	settleCtx context.Context
	endSettle context.CancelFunc
	handlers  sync.WaitGroup
}

func (r *run) main() {
	s := r.s
	ackerDone := make(chan struct{})
	go func() {
		defer close(ackerDone)
		r.acker()
	}()
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		r.dispatch()
	}()
	r.fetchLoop()
	close(r.ready)
	<-dispatched
	r.handlers.Wait()
	close(r.acks)
	<-ackerDone
	if err := r.src.Close(); err != nil {
		s.log.Debug(s.cfg.Backend+": closing the subscription", "err", err)
	}
	r.stop()
	r.endSettle()
	close(r.out)
}

// fetchLoop fetches as many messages as there are free slots and queues
// them, in order, for dispatch, until the run stops.
func (r *run) fetchLoop() {
	s := r.s
	backoff, failing := time.Duration(0), false
	for {
		select {
		case <-r.idle:
		case <-r.stopCtx.Done():
			return
		}
		n := 1
	take:
		for n < cap(r.idle) {
			select {
			case <-r.idle:
				n++
			default:
				break take
			}
		}
		got := 0
		err := r.src.Fetch(r.stopCtx, n, func(d Delivery) {
			if got == n || r.stopCtx.Err() != nil { // more than asked for, or stopping
				r.release([]Delivery{d})
				return
			}
			got++
			r.handlers.Add(1)
			r.ready <- d // room for every slot: never blocks
		})
		for range n - got {
			r.idle <- struct{}{}
		}
		if r.stopCtx.Err() != nil {
			return
		}
		if err == nil {
			if failing {
				s.log.Info(s.cfg.Backend + ": fetching messages works again")
			}
			backoff, failing = 0, false
			continue
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 2*time.Second)
		if !failing {
			s.log.Warn(s.cfg.Backend+": fetching messages failed; retrying", "err", err, "in", backoff)
			failing = true
		} else {
			s.log.Debug(s.cfg.Backend+": fetching messages failed again", "err", err, "in", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-r.stopCtx.Done():
			t.Stop()
			return
		}
	}
}

// dispatch starts one handler goroutine per queued message, in order, as
// running tokens free up, and heartbeats the messages that wait (for
// sources that implement Heartbeater); once the run stops it releases the
// rest.
func (r *run) dispatch() {
	var beat <-chan time.Time
	if r.hb != nil {
		t := time.NewTicker(r.s.cfg.HeartbeatEvery)
		defer t.Stop()
		beat = t.C
	}
	var pending []Delivery // fetched ahead, in order
	ready := r.ready
	for ready != nil || len(pending) > 0 {
		if r.stopCtx.Err() != nil { // a stop wins over a free token
			for d := range r.ready { // until fetchLoop returns
				pending = append(pending, d)
			}
			r.drop(pending) // one Release, in order: a backend puts them back in their place
			return
		}
		pending = r.dropExpired(pending)
		var running chan struct{}
		if len(pending) > 0 {
			running = r.running
		}
		select {
		case d, ok := <-ready:
			if !ok {
				ready = nil
				continue
			}
			pending = append(pending, d)
		case <-running:
			d := pending[0]
			pending[0] = Delivery{}
			pending = pending[1:]
			go r.handle(d)
		case <-beat:
			if len(pending) == 0 {
				break
			}
			// One call for all that wait: a backend renews them in one
			// request, not one round trip each while nothing is handed out.
			for i, dl := range r.hb.Heartbeat(pending) {
				if i < len(pending) && !dl.IsZero() {
					pending[i].Deadline = dl
				}
			}
		case <-r.stopCtx.Done():
		}
	}
}

// dropExpired removes from pending the messages whose Deadline has
// passed: the broker gives them to another member, so they are neither
// handed out nor settled, and their slots free up.
func (r *run) dropExpired(pending []Delivery) []Delivery {
	now := time.Now()
	kept := pending[:0]
	for _, d := range pending {
		if !d.Deadline.IsZero() && !now.Before(d.Deadline) {
			r.s.log.Warn(r.s.cfg.Backend+": message fetched ahead not handed out before its deadline; the broker delivers it again", "uuid", d.Msg.UUID)
			r.idle <- struct{}{}
			r.handlers.Done()
			continue
		}
		kept = append(kept, d)
	}
	clear(pending[len(kept):])
	return kept
}

// drop releases messages no handler received.
func (r *run) drop(ds []Delivery) {
	if len(ds) == 0 {
		return
	}
	r.release(ds)
	for range ds {
		r.handlers.Done()
	}
}

func (r *run) release(ds []Delivery) {
	if len(ds) == 0 {
		return
	}
	if err := r.src.Release(r.settleCtx, ds); err != nil {
		r.s.log.Debug(r.s.cfg.Backend+": releasing messages failed; the broker delivers them again", "n", len(ds), "err", err)
	}
}

// handle hands d to the handlers and settles it with their verdict. The
// slot is free again once the verdict is in.
func (r *run) handle(d Delivery) {
	s := r.s
	defer r.handlers.Done()
	m := d.Msg
	m.SetContext(r.ctx)
	if d.Count > 0 {
		m.Metadata.Set(bridge.DeliveryKey, strconv.Itoa(d.Count))
	} else { // unknown: never a count a publisher wrote into the message
		delete(m.Metadata, bridge.DeliveryKey)
	}
	// The nack delay is the consumer's to set: one a publisher wrote ("0s")
	// would make every nack of a plain handler redeliver at once.
	delete(m.Metadata, bridge.NackDelayKey)
	if r.stopCtx.Err() != nil { // stopping wins over a handler waiting
		r.release([]Delivery{d})
		return
	}
	var expired <-chan time.Time
	var lease *time.Timer
	if !d.Deadline.IsZero() {
		if !time.Now().Before(d.Deadline) { // already visible again: not handed out
			r.free()
			return
		}
		lease = time.NewTimer(time.Until(d.Deadline))
		defer lease.Stop()
		expired = lease.C
	}
	select {
	case r.out <- m:
	case <-r.stopCtx.Done():
		r.release([]Delivery{d}) // never handed out: back now
		return
	case <-expired: // already visible again, maybe with another member
		r.free()
		return
	}
	var beat <-chan time.Time
	if r.hb != nil {
		t := time.NewTicker(s.cfg.HeartbeatEvery)
		defer t.Stop()
		beat = t.C
	}
	for {
		select {
		case <-m.Acked():
			r.acked(d)
			return
		case <-m.Nacked():
			r.nacked(d)
			return
		case <-beat:
			if dls := r.hb.Heartbeat([]Delivery{d}); len(dls) == 1 && !dls[0].IsZero() && lease != nil {
				d.Deadline = dls[0]
				lease.Reset(time.Until(dls[0]))
			}
		case <-expired:
			s.log.Warn(s.cfg.Backend+": message not settled by its deadline; the broker delivers it again", "uuid", m.UUID)
			r.free()
			return
		case <-s.abandon:
			select { // a verdict that raced with abandon still counts
			case <-m.Acked():
				r.acked(d)
			case <-m.Nacked():
				r.nacked(d)
			default:
			}
			return
		}
	}
}

// free gives back a finished message's tokens.
func (r *run) free() {
	r.running <- struct{}{}
	r.idle <- struct{}{}
}

func (r *run) acked(d Delivery) {
	r.acks <- d // room for every slot: never blocks for long
	r.free()
}

func (r *run) nacked(d Delivery) {
	if err := r.src.Nack(r.settleCtx, d, bridge.NackDelay(d.Msg.Metadata)); err != nil {
		r.s.log.Warn(r.s.cfg.Backend+": nack failed; the broker delivers the message again after its own deadline", "uuid", d.Msg.UUID, "err", err)
	}
	r.free()
}

// acker acknowledges acked deliveries in batches: every ack that arrived
// while the previous batch was being acknowledged goes in the next one.
func (r *run) acker() {
	s := r.s
	batch := make([]Delivery, 0, min(s.cfg.Spec.Concurrency, s.cfg.MaxAckBatch))
	for d := range r.acks {
		batch = append(batch[:0], d)
	more:
		for len(batch) < s.cfg.MaxAckBatch {
			select {
			case d, ok := <-r.acks:
				if !ok {
					break more
				}
				batch = append(batch, d)
			default:
				break more
			}
		}
		if err := r.src.Ack(r.settleCtx, batch); err != nil {
			s.log.Warn(s.cfg.Backend+": ack failed; the broker delivers the messages again", "n", len(batch), "err", err)
		}
		clear(batch) // drop the references to the messages
	}
}

var _ message.Subscriber = (*Subscriber)(nil)
