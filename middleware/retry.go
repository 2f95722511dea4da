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
// jitter. Zero fields take the defaults: 3 attempts, and
// DefaultRetryBackoff (100 ms doubling to 2 s, ±50 %, at most 10 s).
type Retry struct {
	// MaxAttempts is the total number of attempts, the first included.
	// Default 3 (DefaultMaxAttempts); 1 disables retrying.
	MaxAttempts int
	// Backoff is the wait between attempts; MaxElapsedTime stops retrying
	// once that much time has passed since the first failure. Zero fields
	// take DefaultRetryBackoff's.
	Backoff Backoff
}

// DefaultMaxAttempts is Retry's default number of attempts.
const DefaultMaxAttempts = 3

// Validate reports every problem in r.
func (r Retry) Validate() error {
	var errs []error
	if r.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("MaxAttempts is negative (%d)", r.MaxAttempts))
	}
	if err := r.Backoff.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("backoff: %w", err))
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
	r.Backoff = r.Backoff.WithDefaults(DefaultRetryBackoff)
	return r
}

// NewBackOff returns the policy's backoff sequence, started now: at most
// MaxAttempts-1 waits. It is what Retry waits between attempts, and what
// callers can use for their own retries with the same policy.
func (r Retry) NewBackOff() backoff.BackOff {
	r = r.WithDefaults()
	return backoff.WithMaxRetries(r.Backoff.NewBackOff(DefaultRetryBackoff), uint64(r.MaxAttempts-1))
}

// Middleware returns the retrying middleware. Every attempt starts from the
// message's original context (so an AttemptTimeout inside gets a fresh
// deadline), and AttemptKey counts the attempts. Retrying stops at the
// first success, a permanent error (IsPermanent), the attempt or time
// budget, or when the message's context ends.
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
