package middleware

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/sony/gobreaker"

	"github.com/switchboard-go/switchboard/internal/envelope"
)

// ErrCircuitOpen is returned while a circuit breaker refuses work: an
// *engine.Error (an error that crosses the wire as data) with Code 503
// and Reason "circuit_open". It is the very value the engine exposes as
// engine.ErrCircuitOpen, and it matches engine.ErrUnavailable too.
var ErrCircuitOpen = &envelope.Error{Code: 503, Reason: "circuit_open", Message: "circuit open"}

// BreakerPolicy is how a circuit breaker behaves, without what names one
// breaker: the engine's Reliability.Breaker and Reliability.CallBreaker are
// policies, from which the engine makes one Breaker per subscription and
// per called command, naming each and logging to Config.Logger. Zero
// fields take the defaults below.
type BreakerPolicy struct {
	// ConsecutiveFailures opens the circuit. Default 5.
	ConsecutiveFailures uint32
	// OpenFor is how long the circuit stays open before a probe. Default 10 s.
	OpenFor time.Duration
	// MaxPause bounds how long the consumer middleware holds a message while
	// the circuit is open; then the message is handed back to the backend
	// for a later redelivery (not dead-lettered). Default: OpenFor. It
	// belongs to a consumer's breaker (Middleware); a caller's breaker
	// fails fast and has no use for it.
	MaxPause time.Duration
	// IsFailure decides which errors count against the circuit; it is
	// called with every error (a success always counts as one). Default:
	// every error that is not permanent (IsPermanent): a bad request says
	// nothing about the downstream's health. (The engine's caller-side
	// breakers default to timeouts and 5xx answers instead.)
	IsFailure func(error) bool
	// OnStateChange, when set, is called on every transition with the
	// breaker's name. An application names its states without importing
	// sony/gobreaker: engine.BreakerState, engine.BreakerOpen, ….
	OnStateChange func(name string, from, to gobreaker.State)
	// Disabled turns the breaker off: Middleware passes messages through.
	Disabled bool
}

// Defaults of BreakerPolicy.
const (
	DefaultConsecutiveFailures = 5
	DefaultOpenFor             = 10 * time.Second
)

// Validate reports every problem in p.
func (p BreakerPolicy) Validate() error {
	var errs []error
	if p.OpenFor < 0 {
		errs = append(errs, fmt.Errorf("breaker: OpenFor is negative (%s)", p.OpenFor))
	}
	if p.MaxPause < 0 {
		errs = append(errs, fmt.Errorf("breaker: MaxPause is negative (%s)", p.MaxPause))
	}
	return errors.Join(errs...)
}

// Breaker is a circuit breaker on sony/gobreaker: a policy, and what names
// this breaker.
type Breaker struct {
	BreakerPolicy
	// Name appears in logs and in state-change callbacks.
	Name string
	// Logger logs transitions. Default slog.Default().
	Logger *slog.Logger
}

// New returns the underlying breaker, whatever Disabled says (honouring it
// is the caller's: Middleware does).
func (b Breaker) New() *gobreaker.CircuitBreaker {
	b = b.withDefaults()
	return gobreaker.NewCircuitBreaker(gobreaker.Settings{
		Name:        b.Name,
		MaxRequests: 1,
		Timeout:     b.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= b.ConsecutiveFailures },
		OnStateChange: func(name string, from, to gobreaker.State) {
			b.Logger.Warn("circuit breaker changed state", "breaker", name, "from", from.String(), "to", to.String())
			if b.OnStateChange != nil {
				b.OnStateChange(name, from, to)
			}
		},
		IsSuccessful: func(err error) bool { return err == nil || !b.IsFailure(err) },
	})
}

func (b Breaker) withDefaults() Breaker {
	if b.ConsecutiveFailures == 0 {
		b.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if b.OpenFor == 0 {
		b.OpenFor = DefaultOpenFor
	}
	if b.MaxPause == 0 {
		b.MaxPause = b.OpenFor
	}
	if b.Logger == nil {
		b.Logger = slog.Default()
	}
	if b.IsFailure == nil {
		b.IsFailure = func(err error) bool { return err != nil && !IsPermanent(err) }
	}
	return b
}

// Middleware returns the consumer-side breaker: after ConsecutiveFailures
// failed messages in a row the circuit opens and the handler stops
// consuming — every message that arrives (up to the handler's concurrency)
// waits instead of failing — until OpenFor has passed; then one message
// probes. Success closes the circuit and consumption resumes; failure opens
// it again. A message that waited MaxPause without getting through fails
// with ErrCircuitOpen, which DeadLetter redelivers without counting it.
// Each call of Middleware makes one breaker: give every handler its own.
func (b Breaker) Middleware() message.HandlerMiddleware {
	if b.Disabled {
		return func(h message.HandlerFunc) message.HandlerFunc { return h }
	}
	b = b.withDefaults()
	cb := b.New()
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx := msg.Context()
			deadline := time.Now().Add(b.MaxPause)
			for {
				var out []*message.Message
				_, err := cb.Execute(func() (any, error) {
					o, err := h(msg)
					out = o
					return nil, err
				})
				if !errors.Is(err, gobreaker.ErrOpenState) && !errors.Is(err, gobreaker.ErrTooManyRequests) {
					return out, err
				}
				if time.Now().After(deadline) {
					return nil, fmt.Errorf("%w: %s: paused for %s", ErrCircuitOpen, b.Name, b.MaxPause)
				}
				wait := 50*time.Millisecond + rand.N(50*time.Millisecond)
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return nil, fmt.Errorf("%w: %s: %w", ErrCircuitOpen, b.Name, ctx.Err())
				}
			}
		}
	}
}
