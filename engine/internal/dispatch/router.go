package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/router"
)

// Router runs handlers on one bridge.
type Router struct {
	b       bridge.Bridge
	log     *slog.Logger
	wm      *message.Router
	subs    []handled
	direct  []direct         // command handlers served by Call, from Start on
	members []*inproc.Member // what Start served
	mu      sync.Mutex
	started bool
	closed  bool
	drain   time.Duration
	runErr  chan error
	runDone chan struct{}      // closed when Run has returned
	stopRun context.CancelFunc // cancels Run's context (see Close)
	quit    chan struct{}      // closed by Close once no member is served: direct workers end
}

// New returns a router on b. drain bounds how long Close waits for in-flight
// handlers.
func New(b bridge.Bridge, drain time.Duration, log *slog.Logger) (*Router, error) {
	// Watermill logs every handler start at Info; that is our Debug.
	wlog := gated{watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug}), log}
	wm, err := message.NewRouter(message.RouterConfig{CloseTimeout: drain}, wlog)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	return &Router{b: b, log: log, wm: wm, drain: drain, runErr: make(chan error, 1), runDone: make(chan struct{}), quit: make(chan struct{})}, nil
}

// Handle adds a handler for spec. It must be called before Start.
//
// On a bridge that hands messages over directly (inproc.Direct), a command
// or event handler is also served there from Start on: a command or event
// then runs in a worker goroutine, handed over by the caller's Call,
// instead of crossing the queue, the consumer runtime and Watermill's
// router (an event only when nothing of its group is ahead of it, see
// inproc.Direct.Call). The
// handler's Concurrency bounds both ways together: each message holds one
// of spec.Concurrency slots while h runs, a direct one taking a free slot
// or going to the queue, a queued one waiting for a slot.
func (r *Router) Handle(ctx context.Context, name string, spec bridge.Spec, h message.NoPublishHandlerFunc) error {
	sub, err := r.b.Subscriber(ctx, spec)
	if err != nil {
		return fmt.Errorf("router: subscriber for %s %q: %w", spec.Kind, spec.Topic, err)
	}
	if _, ok := r.b.(inproc.Direct); ok && spec.Kind != bridge.Reply {
		slots := make(chan struct{}, spec.Concurrency)
		// The member hands every message over with this context: made once
		// here rather than once per message in run.
		values := &routerValues{Context: context.WithoutCancel(ctx), handler: name, topic: spec.Topic}
		r.direct = append(r.direct, direct{spec: spec, h: h, slots: slots, ctx: values,
			idle: make(chan *message.Message), quit: r.quit})
		inner := h
		h = func(msg *message.Message) error {
			slots <- struct{}{}
			defer func() { <-slots }()
			return inner(msg)
		}
	}
	r.wm.AddConsumerHandler(name, spec.Topic, uncancelled{sub}, h)
	r.subs = append(r.subs, handled{name, sub})
	return nil
}

// direct is a command or event handler served by the bridge's Call.
type direct struct {
	spec  bridge.Spec
	h     message.NoPublishHandlerFunc
	slots chan struct{}         // shared with the queued path (see Handle)
	ctx   context.Context       // the member's: Watermill's router values (routerValues)
	idle  chan *message.Message // to a worker waiting for its next message
	quit  chan struct{}         // the router's: closed once nothing is served
}

// workerIdle is how long a direct worker waits for its next message
// before it ends.
const workerIdle = 10 * time.Second

// take is the member's take (inproc.Direct.Serve): when a slot is free it
// runs msg in a worker goroutine, not the caller's, so that the caller
// keeps its deadline and its context (it waits for the reply, not for the
// handler). Workers wait for more work after a message: a goroutine
// started per message grew its stack through the middleware chain every
// time (runtime.newstack was 14 % of the CPU at 64 callers). At most one
// worker per slot runs a message; the rest wait, and end after workerIdle
// or when the router closes. A worker that finished a message first takes
// what waits in the group's queue (next): with more callers than slots,
// most calls find no free slot and wait there, and the subscriber's road
// (the consumer runtime, Watermill's router) cost twice the CPU.
//
// A nil msg is a pull (see inproc.Direct.Serve): the worker takes the
// message at the head of the group's queue with its slot.
func (d direct) take(m *inproc.Member, msg *message.Message) bool {
	select {
	case d.slots <- struct{}{}:
	default:
		return false
	}
	select {
	case d.idle <- msg:
	default:
		go d.worker(m, msg)
	}
	return true
}

func (d direct) worker(m *inproc.Member, msg *message.Message) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		if msg == nil { // a pull: the slot is held
			msg = m.Next()
		}
		if msg != nil {
			d.run(m, msg)
		} else {
			<-d.slots
		}
		if msg = d.next(m); msg != nil {
			continue
		}
		t.Reset(workerIdle)
		select {
		case msg = <-d.idle:
		case <-t.C:
			return
		case <-d.quit:
			return
		}
	}
}

// next takes a free slot and the message waiting longest in the group's
// queue (where Call leaves what finds no free slot), or neither. The slot
// the worker held is free before it asks again, so a message the
// subscriber fetched and that waits for a slot gets it first.
//
// A message queued while the worker held the slot and found nothing may
// have been offered as a pull that found no free slot: with the slot
// given back, the worker asks again (inproc.Member.Pending), a bounded
// number of times (each round lost to another taker).
func (d direct) next(m *inproc.Member) *message.Message {
	for range nextRounds {
		select {
		case d.slots <- struct{}{}:
		default:
			return nil // whoever holds the slot asks after its message
		}
		if msg := m.Next(); msg != nil {
			return msg
		}
		<-d.slots
		if !m.Pending() {
			return nil
		}
	}
	return nil
}

// nextRounds bounds next's rounds.
const nextRounds = 64

// run runs msg, holding its slot, and settles it as Watermill's router
// does: acked when h returns nil, nacked (handed back for redelivery)
// otherwise.
func (d direct) run(m *inproc.Member, msg *message.Message) {
	defer func() { <-d.slots }()
	if err := d.h(msg); err != nil {
		msg.Nack()
	} else {
		msg.Ack()
	}
	select {
	case <-msg.Nacked():
		m.Requeue(msg)
	default:
	}
}

// handled is the subscriber of one handler.
type handled struct {
	name string
	sub  message.Subscriber
}

// Start subscribes every handler and returns once they are all running.
// It fails on a router already closed.
func (r *Router) Start(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errors.New("router: closed before it started")
	}
	r.started = true
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	r.stopRun = stopRun
	r.mu.Unlock()
	go func() {
		defer close(r.runDone)
		defer stopRun()
		r.runErr <- r.wm.Run(runCtx)
	}()
	select {
	case <-r.wm.Running():
		return r.serve()
	case err := <-r.runErr:
		if err == nil {
			err = errors.New("router stopped while starting")
		}
		return fmt.Errorf("router: %w", err)
	case <-ctx.Done():
		_ = r.Close()
		return ctx.Err()
	}
}

// serve serves the direct handlers (see Handle), once the router runs.
func (r *Router) serve() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	d, _ := r.b.(inproc.Direct)
	for _, h := range r.direct {
		m, err := d.Serve(h.ctx, h.spec, h.take)
		if err != nil {
			return fmt.Errorf("router: serving %s %q: %w", h.spec.Kind, h.spec.Topic, err)
		}
		r.members = append(r.members, m)
	}
	return nil
}

// Close stops taking messages, waits up to the drain timeout for in-flight
// handlers, and returns an error if some were still running, joined with
// the errors of the subscribers' Close. It returns once every subscriber's
// Close has returned and Watermill's Run with them, so that nothing of the
// router runs on: a subscriber's Close waits for its messages in flight to
// be settled, so past the drain timeout the caller must make the handlers
// still running return (the engine cancels their contexts). The brokers
// bound that wait (nats by ack_wait, amqp by close_timeout, postgres by the
// ack deadline), and so Close's; bridge/inproc does not (a handler owns its
// message until it settles it): there the caller's own bound (Stop's
// context) is the only one. Only the first call closes; a later or
// concurrent call returns nil at once (the engine calls Close once).
func (r *Router) Close() error {
	r.mu.Lock()
	started, closed, stopRun := r.started, r.closed, r.stopRun
	r.closed = true
	members := r.members
	r.mu.Unlock()
	if closed {
		return nil
	}
	for _, m := range members { // no direct hand-off any more; the queues take the rest
		m.Stop()
	}
	close(r.quit)
	if !started { // the subscribers Handle made are all there is to close
		return r.closeSubscribers()
	}
	// Watermill subscribes the handlers inside Run. Closed before that is
	// done (a Start whose context ends, a Stop during Start), it would wait
	// its whole CloseTimeout for handlers that never start, and leave
	// goroutines waiting for them for ever; our subscribers, closed below,
	// would refuse the subscriptions still to come. So let Run finish
	// subscribing (or fail) first, within the drain timeout.
	wait := time.NewTimer(r.drain)
	select {
	case <-r.wm.Running():
	case <-r.runDone:
	case <-wait.C:
	}
	wait.Stop()
	// Watermill closes a handler's subscriber only if its close watcher sees
	// the router closing before Run cancels the handler's context; when both
	// are ready it may pick the context and close nothing, and our
	// subscriptions (never cancelled, see uncancelled) would then never end.
	// Close them ourselves; subscriber Close is idempotent, and a second
	// call returns when the first has.
	//
	// Watermill logs "All handlers stopped, closing router" at error level
	// when its handlers all end before its Close has begun, unless Run's
	// context has ended: the subscribers closed here may end them first,
	// so end Run's context before. (Our subscriptions ignore it, see
	// uncancelled; Watermill's handlers then leave the subscribers to us.)
	stopRun()
	closing := make(chan error, 1)
	go func() { closing <- r.closeSubscribers() }()
	var errs []error
	if err := r.wm.Close(); err != nil {
		errs = append(errs, fmt.Errorf("router: drain: %w", err))
	}
	errs = append(errs, <-closing)
	// Run returns as soon as wm.Close has, unless it is still subscribing
	// a handler (a backend's Subscribe that does not return): then the
	// drain timeout bounds the wait.
	wait = time.NewTimer(r.drain)
	defer wait.Stop()
	select {
	case <-r.runDone:
	case <-wait.C:
		errs = append(errs, errors.New("router: still subscribing its handlers a drain timeout after Close"))
	}
	return errors.Join(errs...)
}

// closeSubscribers closes every handler's subscriber at once, waits for
// them all and returns their errors.
func (r *Router) closeSubscribers() error {
	errs := make([]error, len(r.subs))
	var wg sync.WaitGroup
	for i, h := range r.subs {
		wg.Go(func() {
			if err := h.sub.Close(); err != nil {
				errs[i] = fmt.Errorf("router: closing the subscriber of %s: %w", h.name, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// uncancelled hides the router's subscription context from the subscriber:
// see the package documentation.
type uncancelled struct{ message.Subscriber }

func (u uncancelled) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return u.Subscriber.Subscribe(context.WithoutCancel(ctx), topic)
}

// replyConcurrency is how many replies the reply subscription may have in
// flight. Handling one is a map lookup and a channel send, but a backend
// moves a subscription's messages at most Concurrency at a time: with one,
// every reply to this instance waited for the previous one's fetch and ack
// round trips (on NATS, 1.7k calls/s at 64 callers against 3.2k with 64).
const replyConcurrency = 16

// Listen consumes the instance's reply topic until ctx is done, handing each
// reply to calls. Replies nobody waits for are acked, logged at debug level
// only (a caller that gave up can leave thousands) and counted:
// Calls.Unsolicited. It returns once the subscription is open; stop closes
// it and waits.
func Listen(ctx context.Context, b bridge.Bridge, instance string, calls *Calls, log *slog.Logger) (stop func(), err error) {
	spec := bridge.Spec{Topic: router.ReplyTopic(instance), Group: instance, Kind: bridge.Reply, Concurrency: replyConcurrency}
	sub, err := b.Subscriber(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("router: reply subscriber: %w", err)
	}
	ch, err := sub.Subscribe(context.WithoutCancel(ctx), spec.Topic)
	if err != nil {
		_ = sub.Close()
		return nil, fmt.Errorf("router: subscribe %q: %w", spec.Topic, err)
	}
	deliver := func(m *message.Message) {
		if !calls.Deliver(m) {
			log.Debug("reply arrived after its caller stopped waiting; dropped",
				"reply_id", m.UUID, "request_id", m.Metadata.Get("causation_id"))
		}
		m.Ack()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ch {
			deliver(m)
		}
	}()
	// On a bridge that hands messages over directly, a reply reaches its
	// caller in the replying handler's goroutine: Deliver never blocks.
	var member *inproc.Member
	if d, ok := b.(inproc.Direct); ok {
		member, err = d.Serve(context.WithoutCancel(ctx), spec, func(_ *inproc.Member, m *message.Message) bool {
			deliver(m)
			return true
		})
		if err != nil {
			_ = sub.Close()
			<-done
			return nil, fmt.Errorf("router: serving %q: %w", spec.Topic, err)
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			if member != nil {
				member.Stop()
			}
			_ = sub.Close()
			<-done
		})
	}, nil
}

// gated skips Watermill's Info, Debug and Trace calls when the logger would
// drop them anyway: Watermill's slog adapter converts every call's fields
// to attributes first, which costs allocations on every message.
type gated struct {
	watermill.LoggerAdapter
	log *slog.Logger
}

func (g gated) enabled(l slog.Level) bool { return g.log.Enabled(context.Background(), l) }

func (g gated) Info(msg string, f watermill.LogFields) {
	if g.enabled(slog.LevelDebug) {
		g.LoggerAdapter.Info(msg, f)
	}
}

func (g gated) Debug(msg string, f watermill.LogFields) {
	if g.enabled(slog.LevelDebug) {
		g.LoggerAdapter.Debug(msg, f)
	}
}

func (g gated) Trace(msg string, f watermill.LogFields) {
	if g.enabled(watermill.LevelTrace) {
		g.LoggerAdapter.Trace(msg, f)
	}
}

func (g gated) With(f watermill.LogFields) watermill.LoggerAdapter {
	return gated{g.LoggerAdapter.With(f), g.log}
}

// routerValues gives a message on the direct road the context values
// Watermill's router gives the ones it hands to a handler
// (message.HandlerNameFromCtx, SubscriberNameFromCtx,
// SubscribeTopicFromCtx), so a user's middleware sees the same in process
// as on a broker. Watermill's keys are of an unexported type: spyKey reads
// each one off its getter.
type routerValues struct {
	context.Context
	handler, topic string
}

var (
	handlerNameKey    = spyKey(message.HandlerNameFromCtx)
	subscriberNameKey = spyKey(message.SubscriberNameFromCtx)
	subscribeTopicKey = spyKey(message.SubscribeTopicFromCtx)
	// subscriberName is what Watermill's router names the subscribers
	// Handle gives it (its internal.StructName: the type, no pointer mark).
	subscriberName = strings.TrimLeft(fmt.Sprintf("%T", uncancelled{}), "*")
)

// Value implements context.Context.
func (c *routerValues) Value(key any) any {
	switch key {
	case handlerNameKey:
		return c.handler
	case subscriberNameKey:
		return subscriberName
	case subscribeTopicKey:
		return c.topic
	}
	return c.Context.Value(key)
}

// keySpy records the key its Value is asked for.
type keySpy struct {
	context.Context
	key any
}

func (k *keySpy) Value(key any) any {
	k.key = key
	return nil
}

// spyKey returns the context key get reads.
func spyKey(get func(context.Context) string) any {
	spy := &keySpy{Context: context.Background()}
	get(spy)
	return spy.key
}
