package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/sony/gobreaker"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc" // the default backend, and its direct hand-off
	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/engine/internal/dispatch"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/middleware"
	"github.com/switchboard-go/switchboard/router"
)

// Config configures an Engine. The zero value is valid: an in-process
// engine with the defaults below.
type Config struct {
	// Bridge is the backend URL: "" or "gochannel://" (in-process, the
	// default), "nats://…", "amqp://…", "postgres://…". Backends other than
	// the in-process one are linked in by importing their package, or all of
	// them with bridge/all. Examples read it from $SWITCHBOARD_BRIDGE.
	Bridge string
	// SharedBridge, when set, is a bridge the caller opened and owns: the
	// engine uses it instead of opening Bridge, and never closes it. Use it
	// to share one connection between engines or to plug in your own
	// backend. Set Bridge or SharedBridge, not both.
	SharedBridge bridge.Bridge
	// Logger receives the engine's logs. Default: slog.Default().
	Logger *slog.Logger
	// CallTimeout bounds an Invoke without its own CallTimeout option.
	// Default 30 s (DefaultCallTimeout).
	CallTimeout time.Duration
	// DrainTimeout bounds the drain: how long Stop lets in-flight handlers
	// finish and their replies reach waiting callers before it cancels the
	// handlers still running. Shutdown as a whole takes at most twice as
	// long: Run (and httpgateway.Serve) give Stop 2 × DrainTimeout, the
	// drain, then as long again for the handlers cancelled at its deadline
	// to return; past that, Run returns an error while those handlers may
	// still run. Default 10 s.
	DrainTimeout time.Duration
	// ConnectTimeout bounds opening the bridge in New, nothing else (not
	// shutdown). Default 10 s.
	ConnectTimeout time.Duration
	// MaxPayloadBytes is the largest payload sent or accepted. Default 1 MiB.
	// When the bridge carries less (Capabilities.MaxMessageBytes: NATS's
	// max_payload counts headers), the engine's limit is that less room for
	// the most metadata a message may have (16 KiB, see
	// ErrMetadataTooLarge), so that every payload within it can be
	// published; Engine.MaxPayloadBytes returns the limit in force. Input
	// over it is a 413 at the call.
	MaxPayloadBytes int
	// CommandConcurrency is the default number of messages one command
	// handler processes at once per instance. Default 16.
	CommandConcurrency int
	// AllowUnknownFields accepts payload fields the input type lacks, for
	// every handler. Default false: they are a 400.
	AllowUnknownFields bool
	// HandleSignals makes Run stop on SIGINT and SIGTERM as well as on
	// context cancellation. Default false for libraries; the examples set it.
	HandleSignals bool
	// InstanceID names this engine instance (its reply topic). Default: a
	// random id.
	InstanceID string
	// Reliability sets retries, redelivery, dead letters and circuit
	// breakers. The zero value is the documented defaults.
	Reliability Reliability
	// TracerProvider records a span for every handled and every published
	// message. Default: OpenTelemetry's global provider (a no-op until the
	// program sets one); traceparent propagates either way.
	TracerProvider trace.TracerProvider
	// Scheduler keeps the messages scheduled with Command.Schedule,
	// Event.Schedule and Every until they are due; the engine runs it from
	// Start to Stop. Default: on a bridge that does not cross processes
	// (the in-process bus), one in memory, lost with the process, of at
	// most 1,000,000 pending messages (about 1 KiB each, plus its
	// payload); on a broker, none (scheduling fails
	// with ErrNoScheduler). outbox.Scheduler keeps them in PostgreSQL, with
	// any bridge.
	Scheduler Scheduler
}

// The policy types of Reliability and RetryPolicy, named here so that an
// application configures reliability without importing package middleware
// (which a middleware author uses to compose the same pieces on a plain
// Watermill router). They are the same types, not copies.
type (
	// Retry is an in-memory retry policy: attempts and their backoff.
	Retry = middleware.Retry
	// Backoff is a sequence of growing, jittered waits.
	Backoff = middleware.Backoff
	// BreakerPolicy is when a circuit breaker opens and how it probes.
	// Its OnStateChange receives BreakerStates.
	BreakerPolicy = middleware.BreakerPolicy
	// BreakerState is a circuit breaker's state, as BreakerPolicy's
	// OnStateChange receives it: BreakerClosed, BreakerHalfOpen or
	// BreakerOpen. Its String method gives "closed", "half-open", "open".
	BreakerState = gobreaker.State
)

// The states of a circuit breaker (BreakerState), so that an
// OnStateChange callback needs no import of sony/gobreaker:
//
//	OnStateChange: func(name string, from, to engine.BreakerState) {
//		if to == engine.BreakerOpen {
//			alert(name)
//		}
//	},
const (
	// BreakerClosed: calls and messages go through; failures are counted.
	BreakerClosed = gobreaker.StateClosed
	// BreakerHalfOpen: after OpenFor, one probe goes through; its success
	// closes the circuit, its failure opens it again.
	BreakerHalfOpen = gobreaker.StateHalfOpen
	// BreakerOpen: the breaker refuses work (a caller's call fails with
	// ErrCircuitOpen, a consumer holds its message) until OpenFor passes.
	BreakerOpen = gobreaker.StateOpen
)

// Reliability is what happens when handlers fail. See package middleware
// for each piece and the order the engine applies them in. Every field is
// read as documented here; what the engine decides itself (each breaker's
// name, its logger) has no field.
type Reliability struct {
	// Retry is the in-memory retry of every handler (RetryPolicy overrides
	// it per handler). Default: 3 attempts, 100 ms doubling to 2 s, ±50 %,
	// at most 10 s (middleware.DefaultRetryBackoff). It is also the policy
	// of a caller's retries of an Idempotent command, which read its
	// attempts and waits but not its MaxElapsedTime: each attempt is
	// bounded by the call's timeout, and all of them by the caller's
	// context.
	Retry Retry
	// AttemptTimeout bounds each attempt of a handler: its context is
	// cancelled then, and the next attempt starts only once the handler has
	// returned; an attempt that then fails counts as timed out, one that
	// succeeds keeps its result (see middleware.AttemptTimeout). Default 0:
	// only the message's deadline.
	AttemptTimeout time.Duration
	// MaxDeliveries is how many times a failing event (or fire-and-forget
	// command) is delivered before it is dead-lettered. Default 5.
	MaxDeliveries int
	// Redelivery is the wait before each redelivery of a failed message:
	// the engine sets it on every such nack (a message handed back unrun
	// while the engine drains carries none and waits
	// bridge.DefaultNackDelay). Default 1 s doubling to 1 min, ±50 %
	// (middleware.DefaultRedelivery). Its MaxElapsedTime must stay 0:
	// MaxDeliveries bounds redelivery.
	Redelivery Backoff
	// DeadLetters stores messages that cannot be processed. Default: an
	// in-memory store, which a restart empties — with a durable bridge, use
	// deadletter/pgstore.
	DeadLetters deadletter.Store
	// Breaker is the policy of the consumer-side circuit breakers: one per
	// event subscription (a command's caller has its own, CallBreaker),
	// named "<group> <topic>" (the name OnStateChange
	// receives). Default: on, 5 consecutive failures, open 10 s, a message
	// held at most OpenFor; every error that is not permanent counts.
	Breaker BreakerPolicy
	// CallBreaker is the policy of the caller-side circuit breakers: one
	// per called command, named "call <topic>"; an open one fails calls at
	// once with ErrCircuitOpen. IsFailure receives the call's error (an
	// *Error). Default: on, 5 consecutive failures, open 10 s; timeouts and
	// other 5xx answers count. Its MaxPause must stay 0: a caller's breaker
	// fails fast, it never holds a call.
	CallBreaker BreakerPolicy
}

// Validate reports every problem in r, and the settings it cannot honour.
func (r Reliability) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		err  error
	}{
		{"Retry", r.Retry.Validate()},
		{"Redelivery", r.Redelivery.Validate()},
		{"Breaker", r.Breaker.Validate()},
		{"CallBreaker", r.CallBreaker.Validate()},
	} {
		if f.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, f.err))
		}
	}
	if r.Redelivery.MaxElapsedTime != 0 {
		errs = append(errs, fmt.Errorf("%s is not used (MaxDeliveries bounds redelivery); leave it 0", "Redelivery.MaxElapsedTime"))
	}
	if r.CallBreaker.MaxPause != 0 {
		errs = append(errs, fmt.Errorf("%s is not used (a caller's breaker fails fast); leave it 0", "CallBreaker.MaxPause"))
	}
	if r.AttemptTimeout < 0 {
		errs = append(errs, fmt.Errorf("AttemptTimeout is negative (%s)", r.AttemptTimeout))
	}
	if r.MaxDeliveries < 0 {
		errs = append(errs, fmt.Errorf("MaxDeliveries is negative (%d)", r.MaxDeliveries))
	}
	return errors.Join(errs...)
}

// Defaults for Config's zero fields.
const (
	DefaultCallTimeout        = 30 * time.Second
	DefaultDrainTimeout       = 10 * time.Second
	DefaultConnectTimeout     = 10 * time.Second
	DefaultMaxPayloadBytes    = 1 << 20
	DefaultCommandConcurrency = 16
)

// Validate reports every problem in c.
func (c Config) Validate() error {
	var errs []error
	for name, d := range map[string]time.Duration{"CallTimeout": c.CallTimeout, "DrainTimeout": c.DrainTimeout, "ConnectTimeout": c.ConnectTimeout} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s is negative (%s)", name, d))
		}
	}
	if c.MaxPayloadBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxPayloadBytes is negative (%d)", c.MaxPayloadBytes))
	}
	if c.CommandConcurrency < 0 {
		errs = append(errs, fmt.Errorf("CommandConcurrency is negative (%d)", c.CommandConcurrency))
	}
	if c.Bridge != "" && c.SharedBridge != nil {
		errs = append(errs, errors.New("both Bridge and SharedBridge are set; set one"))
	}
	if c.InstanceID != "" {
		if err := router.ValidName("instance", c.InstanceID); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.Reliability.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("reliability: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("switchboard: invalid config: %w", err)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.MaxPayloadBytes == 0 {
		c.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if c.CommandConcurrency == 0 {
		c.CommandConcurrency = DefaultCommandConcurrency
	}
	if c.InstanceID == "" {
		c.InstanceID = "i" + watermill.NewShortUUID()
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	c.Reliability.Retry = c.Reliability.Retry.WithDefaults()
	if c.Reliability.DeadLetters == nil {
		c.Reliability.DeadLetters = deadletter.NewMemory()
	}
}

// State is an engine's lifecycle stage.
type State int32

// Lifecycle stages, in order.
const (
	StateNew State = iota
	StateStarting
	StateRunning
	StateDraining
	StateStopped
)

var stateNames = [...]string{"new", "starting", "running", "draining", "stopped"}

// String returns the state's name.
func (s State) String() string { return stateNames[s] }

// ErrNotReady is returned by Health when the engine is not running; the
// message names the state.
var ErrNotReady = errors.New("switchboard: engine not ready")

// Engine runs services on a bridge and carries their calls.
type Engine struct {
	cfg         Config
	log         *slog.Logger
	codec       payloadCodec
	b           bridge.Bridge
	direct      inproc.Direct // b, when it hands messages over directly
	ownsB       bool
	calls       *dispatch.Calls
	replyTopic  string // router.ReplyTopic(cfg.InstanceID)
	mu          sync.Mutex
	state       State
	services    []*Service
	mws         []message.HandlerMiddleware // Use: around every handler
	rt          *dispatch.Router
	stopRep     func()
	ready       chan struct{}
	stopped     chan struct{}
	stopOnce    sync.Once
	stoppedOnce sync.Once     // markStopped
	cleaned     chan struct{} // closed when Stop's cleanup has ended
	cleanErr    error         // its outcome, set before cleaned is closed
	hardStop    context.CancelFunc
	hardCtx     context.Context
	tracer      trace.Tracer
	tracerKind  tracerKind // see tracingOff
	breakers    sync.Map   // topic → *gobreaker.CircuitBreaker (caller side)
	handlers    gate       // handler calls: closed by Stop
	sched       Scheduler  // nil: none (a broker without Config.Scheduler)
	recurs      []declaredRecurrence
	schedCtx    context.Context // Scheduler.Run's: cancelled when Stop begins
	schedCancel context.CancelFunc
	schedDone   chan struct{} // closed when Run returned; nil until started
	bgDone      chan struct{} // closed when every Service.Background returned; nil until started
}

// New validates cfg and opens the bridge. It fails within
// cfg.ConnectTimeout when the backend is unreachable, with an error that
// matches both ErrUnreachable and bridge.ErrUnreachable under errors.Is.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	b, owns := cfg.SharedBridge, false
	if b == nil {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ConnectTimeout)
		defer cancel()
		var err error
		if b, err = bridge.Open(ctx, cfg.Bridge, bridge.Logger(cfg.Logger)); err != nil {
			if errors.Is(err, bridge.ErrUnreachable) {
				return nil, &openError{sentinel: with(ErrUnreachable, err.Error(), nil), err: err}
			}
			return nil, fmt.Errorf("switchboard: %w", err)
		}
		owns = true
	}
	maxPayload, err := payloadLimit(cfg.MaxPayloadBytes, b.Capabilities().MaxMessageBytes)
	if err != nil {
		if owns {
			_ = b.Close()
		}
		return nil, fmt.Errorf("switchboard: bridge %s: %w", b.Name(), err)
	}
	hardCtx, hardStop := context.WithCancel(context.Background())
	direct, _ := b.(inproc.Direct)
	e := &Engine{
		direct:     direct,
		cfg:        cfg,
		log:        cfg.Logger.With("engine", cfg.InstanceID),
		codec:      payloadCodec{maxBytes: maxPayload, allowUnknownFields: cfg.AllowUnknownFields},
		b:          b,
		ownsB:      owns,
		calls:      dispatch.NewCalls(),
		replyTopic: router.ReplyTopic(cfg.InstanceID),
		ready:      make(chan struct{}),
		stopped:    make(chan struct{}),
		cleaned:    make(chan struct{}),
		hardCtx:    hardCtx,
		hardStop:   hardStop,
		tracer:     cfg.TracerProvider.Tracer(middleware.TracerName),
		tracerKind: kindOfTracer(cfg.TracerProvider),
		sched:      cfg.Scheduler,
	}
	if e.sched == nil && !b.Capabilities().CrossProcess {
		e.sched = newMemScheduler(maxMemScheduled, e.log)
	}
	e.schedCtx, e.schedCancel = context.WithCancel(context.Background())
	return e, nil
}

// openError is New's error when the bridge cannot be reached: it reads as
// the bridge's error and matches both the engine's sentinel (an *Error, so
// errors.As finds a 503) and the bridge's.
type openError struct {
	sentinel *Error
	err      error
}

func (e *openError) Error() string   { return "switchboard: " + e.err.Error() }
func (e *openError) Unwrap() []error { return []error{e.sentinel, e.err} }

// payloadLimit is the engine's payload limit: configured, or less when the
// bridge carries at most bridgeMax bytes of payload plus metadata (0: no
// limit of its own).
func payloadLimit(configured, bridgeMax int) (int, error) {
	if bridgeMax <= 0 {
		return configured, nil
	}
	room := bridgeMax - envelope.MaxMetadataBytes
	if room < 1 {
		return 0, fmt.Errorf("it carries at most %d bytes, not even the %d bytes of metadata a message may have", bridgeMax, envelope.MaxMetadataBytes)
	}
	return min(configured, room), nil
}

// MaxPayloadBytes returns the payload limit in force: Config.MaxPayloadBytes,
// or less when the bridge carries less (see Config.MaxPayloadBytes).
func (e *Engine) MaxPayloadBytes() int { return e.codec.maxBytes }

// DrainTimeout returns Config.DrainTimeout in force (its default when the
// Config left it zero): how long Stop waits for in-flight handlers.
// httpgateway.Serve bounds the HTTP drain with it.
func (e *Engine) DrainTimeout() time.Duration { return e.cfg.DrainTimeout }

// Register adds services. It reports every wiring problem (invalid names,
// duplicate handlers, a service registered twice) and must be called before
// Start or Run.
func (e *Engine) Register(services ...*Service) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.state != StateNew {
		return fmt.Errorf("switchboard: Register after Start (engine is %s)", e.state)
	}
	var errs []error
	have := map[string]bool{}
	for _, s := range e.services {
		have[s.id] = true
	}
	for _, s := range services {
		if s == nil {
			errs = append(errs, errors.New("nil service"))
			continue
		}
		if have[s.id] {
			errs = append(errs, fmt.Errorf("service %s registered twice", s))
			continue
		}
		if err := s.check(); err != nil {
			errs = append(errs, err)
			continue
		}
		recurs, err := e.recurrences(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		have[s.id] = true
		e.services = append(e.services, s)
		e.recurs = append(e.recurs, recurs...)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("switchboard: %w", err)
	}
	return nil
}

// Use adds middleware around every handler of every service, outermost of
// the three scopes: the engine's (Use), then each service's (Service.Use),
// then each handler's (the Use HandlerOption); within a scope the first
// added runs first. Like Register, it must be called before Start or Run. A
// nil middleware is refused, and then none of mw is added.
func (e *Engine) Use(mw ...message.HandlerMiddleware) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.state != StateNew {
		return fmt.Errorf("switchboard: Use after Start (engine is %s)", e.state)
	}
	if err := nilMiddleware(mw); err != nil {
		return fmt.Errorf("switchboard: Use: %w", err)
	}
	e.mws = append(e.mws, mw...)
	return nil
}

// nilMiddleware reports every nil entry of mw.
func nilMiddleware(mw []message.HandlerMiddleware) error {
	var errs []error
	for i, m := range mw {
		if m == nil {
			errs = append(errs, fmt.Errorf("middleware %d of %d is nil", i+1, len(mw)))
		}
	}
	return errors.Join(errs...)
}

// Services returns the registered services as "<name>.v<version>", in
// registration order.
func (e *Engine) Services() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, len(e.services))
	for i, s := range e.services {
		out[i] = s.id
	}
	return out
}

// UnsolicitedReplies returns how many replies reached this engine after
// their caller had stopped waiting (it timed out or went away), or twice.
// They are dropped and logged at debug level only; this count is where a
// burst of them shows.
func (e *Engine) UnsolicitedReplies() uint64 { return e.calls.Unsolicited() }

// Bridge returns the engine's bridge.
func (e *Engine) Bridge() bridge.Bridge { return e.b }

// State returns the engine's lifecycle stage.
func (e *Engine) State() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state
}

// Ready returns a channel closed once the engine is running (every handler
// subscribed, replies listened to).
func (e *Engine) Ready() <-chan struct{} { return e.ready }

// Done returns a channel closed once the engine has stopped.
func (e *Engine) Done() <-chan struct{} { return e.stopped }

// Health reports whether the engine can do its work now: it is running and
// its bridge answers. The error wraps ErrNotReady or the bridge's error.
func (e *Engine) Health(ctx context.Context) error {
	if s := e.State(); s != StateRunning {
		return fmt.Errorf("%w: %s", ErrNotReady, s)
	}
	if err := e.b.Health(ctx); err != nil {
		return fmt.Errorf("switchboard: bridge %s: %w", e.b.Name(), err)
	}
	return nil
}

// Start subscribes every registered handler and the reply topic, and
// returns once the engine is running. Use Run unless you manage the
// lifecycle yourself; every Start needs a Stop.
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	if e.state != StateNew {
		e.mu.Unlock()
		return fmt.Errorf("switchboard: Start on a %s engine", e.state)
	}
	e.state = StateStarting
	services := e.services
	e.mu.Unlock()

	err := e.start(ctx, services)
	e.mu.Lock()
	stopping := e.state != StateStarting // Stop ran meanwhile
	if err == nil && !stopping {
		e.state = StateRunning
	}
	rt, stopRep := e.rt, e.stopRep
	e.mu.Unlock()
	if stopping {
		// Stop may have missed what start set up after it looked: close it
		// here (both closes are idempotent).
		if rt != nil {
			_ = rt.Close()
		}
		if stopRep != nil {
			stopRep()
		}
		<-e.stopped
		return errors.Join(errors.New("switchboard: stopped while starting"), err)
	}
	if err != nil {
		e.log.Error("engine failed to start", "err", err)
		_ = e.Stop(context.Background())
		return err
	}
	close(e.ready)
	e.log.Debug("engine running", "bridge", e.b.Name(), "services", len(services))
	return nil
}

func (e *Engine) start(ctx context.Context, services []*Service) error {
	rt, err := dispatch.New(e.b, e.cfg.DrainTimeout, e.log)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.rt = rt
	e.mu.Unlock()
	stopRep, err := dispatch.Listen(ctx, e.b, e.cfg.InstanceID, e.calls, e.log)
	if err != nil {
		return fmt.Errorf("switchboard: %w", err)
	}
	e.mu.Lock()
	e.stopRep = stopRep
	e.mu.Unlock()
	for _, s := range services {
		for _, r := range s.regs {
			spec := bridge.Spec{Topic: r.topic, Group: s.group(r), Kind: r.kind, Concurrency: r.concurrency}
			if spec.Concurrency == 0 { // a command without Concurrency (which refuses n < 1)
				spec.Concurrency = e.cfg.CommandConcurrency
			}
			name := spec.Group + "/" + r.kind.String() + "/" + r.topic
			if err := rt.Handle(ctx, name, spec, e.handler(s, r)); err != nil {
				return fmt.Errorf("switchboard: %w", err)
			}
		}
	}
	if err := rt.Start(ctx); err != nil {
		return fmt.Errorf("switchboard: %w", err)
	}
	if err := e.startScheduler(ctx); err != nil {
		return err
	}
	e.startBackground(services)
	return nil
}

// startBackground runs every service's Background functions, on the
// scheduler's context (it ends when the stop begins), with the engine on it.
// When Stop began meanwhile (during Start), none is started: the stop,
// which waits for bgDone, has already read it.
func (e *Engine) startBackground(services []*Service) {
	var wg sync.WaitGroup
	ctx := WithEngine(e.schedCtx, e)
	e.mu.Lock()
	if e.state != StateStarting {
		e.mu.Unlock()
		return
	}
	done := make(chan struct{})
	e.bgDone = done
	for _, s := range services {
		for _, fn := range s.background {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := fn(ctx); err != nil && ctx.Err() == nil {
					e.log.Error("a background task of the service ended with an error", "service", s.id, "err", err)
				}
			}()
		}
	}
	e.mu.Unlock()
	go func() {
		wg.Wait()
		close(done)
	}()
}

// Stop drains and stops the engine: no handler starts any more (messages
// that arrive are handed back to the backend), in-flight handlers finish
// and send their replies, and the reply subscription stays open until every
// call waiting on this engine has its reply — both up to
// Config.DrainTimeout. Past it, the contexts of handlers still running are
// cancelled, and Stop waits for them to return: they own their messages
// until then, so a handler that ignores its context keeps Stop waiting (it
// is logged), and the replies of those that complete then still reach the
// callers waiting here (the reply subscription stays open up to a second
// after the last one returned). Then the reply subscription and the bridge
// (if the engine opened it) are closed; calls still waiting fail with
// ErrShuttingDown. When Stop begins, the Scheduler's Run is cancelled:
// nothing scheduled is published any more (a durable store keeps it for
// the next engine; the in-memory scheduler loses it), and the drain waits
// for Run to return. ctx bounds the whole stop: when it ends first, Stop
// returns its error at once and the cleanup goes on in the background. Run
// gives it 2 × Config.DrainTimeout (see there); a program calling Stop
// itself gives it as long for the same bound.
// Stop is idempotent and safe to call concurrently: every call waits,
// bounded by its own ctx only, until that cleanup has ended, and returns
// its outcome (or its own ctx's error).
func (e *Engine) Stop(ctx context.Context) error {
	e.stopOnce.Do(e.beginStop)
	select {
	case <-e.cleaned:
		e.markStopped(e.cleanErr)
		return e.cleanErr
	case <-ctx.Done():
		e.hardStop() // this caller gives up on the drain: cut the handlers short
		err := fmt.Errorf("switchboard: stop: %w", ctx.Err())
		e.markStopped(err)
		return err
	}
}

// markStopped records the first outcome of Stop, once: the engine is
// stopped, calls still waiting on it fail, Done is closed.
func (e *Engine) markStopped(err error) {
	e.stoppedOnce.Do(func() {
		e.mu.Lock()
		e.state = StateStopped
		e.mu.Unlock()
		close(e.stopped)
		if err != nil {
			e.log.Warn("engine stopped with errors", "err", err)
		}
	})
}

// beginStop starts the drain and the cleanup that follows it in the
// background, and returns at once: every Stop call, the first included,
// then waits for the cleanup bounded by its own context (a concurrent call
// is not held by another caller's context).
func (e *Engine) beginStop() {
	e.schedCancel() // nothing more is published from the schedule: it waits for the next engine
	e.mu.Lock()
	e.state = StateDraining
	rt, stopRep, schedDone, bgDone := e.rt, e.stopRep, e.schedDone, e.bgDone
	e.mu.Unlock()
	idle := e.handlers.close()
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), e.cfg.DrainTimeout)
	drainDeadline, _ := drainCtx.Deadline()
	stopDrainTimer := context.AfterFunc(drainCtx, func() {
		if n := e.handlers.inFlight(); n > 0 {
			e.log.Warn("drain timeout: cancelling the handlers still running and waiting for them to return", "handlers", n)
		}
		e.hardStop()
	})
	go func() { // runs to the end, whatever the callers' contexts
		defer close(e.cleaned)
		defer cancelDrain()
		defer stopDrainTimer() // before cancelDrain, which would fire it
		var errs []error
		if rt != nil {
			if err := rt.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		<-idle
		if schedDone != nil {
			select {
			case <-schedDone:
			case <-drainCtx.Done():
				e.log.Warn("drain timeout: the scheduler has not returned")
			}
		}
		if bgDone != nil {
			select {
			case <-bgDone:
			case <-drainCtx.Done():
				e.log.Warn("drain timeout: a service's background task has not returned")
			}
		}
		// Replies of the handlers that finished during the drain may still
		// be on their way to callers waiting here: wait for them until the
		// drain deadline, and at least replyGrace after the last handler
		// returned, which may be past the deadline (Stop waited for it).
		replyCtx, cancelReply := context.WithDeadline(context.Background(), later(drainDeadline, time.Now().Add(min(replyGrace, e.cfg.DrainTimeout))))
		if !e.calls.WaitIdle(replyCtx) {
			e.log.Warn("drain timeout: calls still waiting for their reply fail", "calls", e.calls.Len())
		}
		cancelReply()
		e.hardStop()
		if stopRep != nil {
			stopRep()
		}
		if e.ownsB {
			if err := e.b.Close(); err != nil {
				errs = append(errs, fmt.Errorf("closing bridge: %w", err))
			}
		}
		e.cleanErr = errors.Join(errs...)
	}()
}

// replyGrace is how long Stop keeps the reply subscription open after the
// last handler returned, at least (Config.DrainTimeout if shorter): the
// replies of handlers that completed past the drain deadline are then still
// on their way to callers waiting on this engine.
const replyGrace = time.Second

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Run starts the engine, blocks until ctx is done (or, with
// Config.HandleSignals, SIGINT/SIGTERM arrives), then stops it gracefully
// (Stop). It returns nil after a clean drain. It waits for Stop at most
// 2 × Config.DrainTimeout: the drain, then as long again for the handlers
// cancelled at the drain deadline to return; past that it returns Stop's
// context error (the cleanup, and a handler that ignores its context, may
// still run).
func (e *Engine) Run(ctx context.Context) error {
	if e.cfg.HandleSignals {
		var cancel context.CancelFunc
		ctx, cancel = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer cancel()
	}
	if err := e.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), 2*e.cfg.DrainTimeout)
	defer cancel()
	return e.Stop(stopCtx)
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
