package middleware

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cenkalti/backoff/v4"
)

// AttemptKey is the metadata key Retry sets on the message before each
// attempt: "1" for the first.
const AttemptKey = "attempt"

// Retry retries a failing handler in memory with exponential backoff and
// jitter. Zero fields take the defaults below.
type Retry struct {
	// MaxAttempts is the total number of attempts, the first included.
	// Default 3; 1 disables retrying.
	MaxAttempts int
	// InitialInterval is the wait before the second attempt. Default 100 ms.
	InitialInterval time.Duration
	// MaxInterval caps one wait. Default 2 s.
	MaxInterval time.Duration
	// Multiplier grows the wait after each attempt. Default 2.
	Multiplier float64
	// RandomizationFactor spreads each wait by ± that fraction. Default 0.5;
	// negative means none.
	RandomizationFactor float64
	// MaxElapsedTime stops retrying once this much time has passed since the
	// first failure. Default 10 s; negative means no limit.
	MaxElapsedTime time.Duration
}

// Defaults of Retry.
const (
	DefaultMaxAttempts     = 3
	DefaultInitialInterval = 100 * time.Millisecond
	DefaultMaxInterval     = 2 * time.Second
	DefaultMultiplier      = 2.0
	DefaultRandomization   = 0.5
	DefaultMaxElapsedTime  = 10 * time.Second
)

// Validate reports every problem in r.
func (r Retry) Validate() error {
	var errs []error
	if r.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("MaxAttempts is negative (%d)", r.MaxAttempts))
	}
	for name, d := range map[string]time.Duration{"InitialInterval": r.InitialInterval, "MaxInterval": r.MaxInterval} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s is negative (%s)", name, d))
		}
	}
	if r.Multiplier != 0 && r.Multiplier < 1 {
		errs = append(errs, fmt.Errorf("multiplier %g is below 1", r.Multiplier))
	}
	if r.RandomizationFactor > 1 {
		errs = append(errs, fmt.Errorf("randomization factor %g is above 1", r.RandomizationFactor))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("retry policy: %w", err)
	}
	return nil
}

// WithDefaults returns r with every zero field set to its default.
func (r Retry) WithDefaults() Retry {
	if r.MaxAttempts == 0 {
		r.MaxAttempts = DefaultMaxAttempts
	}
	if r.InitialInterval == 0 {
		r.InitialInterval = DefaultInitialInterval
	}
	if r.MaxInterval == 0 {
		r.MaxInterval = DefaultMaxInterval
	}
	if r.Multiplier == 0 {
		r.Multiplier = DefaultMultiplier
	}
	if r.RandomizationFactor == 0 {
		r.RandomizationFactor = DefaultRandomization
	} else if r.RandomizationFactor < 0 {
		r.RandomizationFactor = 0
	}
	if r.MaxElapsedTime == 0 {
		r.MaxElapsedTime = DefaultMaxElapsedTime
	}
	return r
}

// NewBackOff returns the policy's backoff sequence, started now. It is what
// Retry waits between attempts, and what callers can use for their own
// retries with the same policy.
func (r Retry) NewBackOff() backoff.BackOff {
	r = r.WithDefaults()
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(r.InitialInterval),
		backoff.WithMaxInterval(r.MaxInterval),
		backoff.WithMultiplier(r.Multiplier),
		backoff.WithRandomizationFactor(r.RandomizationFactor),
		backoff.WithMaxElapsedTime(max(r.MaxElapsedTime, 0)), // 0: no limit
	)
	return backoff.WithMaxRetries(b, uint64(r.MaxAttempts-1))
}

// Middleware returns the retrying middleware. Every attempt starts from the
// message's original context (so a Timeout inside gets a fresh deadline),
// and AttemptKey counts the attempts. Retrying stops at the first success,
// a permanent error (IsPermanent), the attempt or time budget, or when the
// message's context ends.
func (r Retry) Middleware() message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx := msg.Context()
			var b backoff.BackOff // made at the first failure: most messages never need it
			for attempt := 1; ; attempt++ {
				msg.SetContext(ctx)
				msg.Metadata.Set(AttemptKey, strconv.Itoa(attempt))
				out, err := h(msg)
				if err == nil || IsPermanent(err) {
					msg.SetContext(ctx)
					return out, err
				}
				if b == nil {
					b = r.NewBackOff()
				}
				wait := b.NextBackOff()
				if wait == backoff.Stop {
					msg.SetContext(ctx)
					return nil, err
				}
				if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
					msg.SetContext(ctx)
					return nil, err // no time left for another attempt
				}
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					msg.SetContext(ctx)
					return nil, err
				}
			}
		}
	}
}
