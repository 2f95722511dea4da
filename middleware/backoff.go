package middleware

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Backoff is an exponential backoff with jitter: the wait after the n-th
// failure is InitialInterval × Multiplier^(n-1), at most MaxInterval,
// spread by ± RandomizationFactor. It is the shape of both of
// Switchboard's retry tiers: Retry's waits between in-memory attempts and
// DeadLetter's between deliveries (the engine's Reliability.Redelivery).
// A zero field takes the default of the policy that holds the Backoff
// (DefaultRetryBackoff or DefaultRedelivery); each owner says which fields
// it reads.
type Backoff struct {
	// InitialInterval is the wait after the first failure.
	InitialInterval time.Duration
	// MaxInterval caps one wait.
	MaxInterval time.Duration
	// Multiplier grows the wait after each failure; at least 1.
	Multiplier float64
	// RandomizationFactor spreads each wait by ± that fraction, at most 1;
	// negative means none.
	RandomizationFactor float64
	// MaxElapsedTime stops the sequence once this much time has passed
	// since its first wait was asked for; negative means no limit. Only
	// Retry reads it (DeadLetter refuses it: MaxDeliveries bounds
	// redelivery).
	MaxElapsedTime time.Duration
}

// The defaults of the two backoffs, for their zero fields.
var (
	// DefaultRetryBackoff is Retry's: 100 ms doubling to 2 s, ±50 %, at
	// most 10 s.
	DefaultRetryBackoff = Backoff{
		InitialInterval:     100 * time.Millisecond,
		MaxInterval:         2 * time.Second,
		Multiplier:          2,
		RandomizationFactor: 0.5,
		MaxElapsedTime:      10 * time.Second,
	}
	// DefaultRedelivery is DeadLetter's (and the engine's
	// Reliability.Redelivery): 1 s doubling to 1 min, ±50 %.
	DefaultRedelivery = Backoff{
		InitialInterval:     time.Second,
		MaxInterval:         time.Minute,
		Multiplier:          2,
		RandomizationFactor: 0.5,
	}
)

// Validate reports every problem in b.
func (b Backoff) Validate() error {
	var errs []error
	if b.InitialInterval < 0 {
		errs = append(errs, fmt.Errorf("InitialInterval is negative (%s)", b.InitialInterval))
	}
	if b.MaxInterval < 0 {
		errs = append(errs, fmt.Errorf("MaxInterval is negative (%s)", b.MaxInterval))
	}
	if b.Multiplier != 0 && b.Multiplier < 1 {
		errs = append(errs, fmt.Errorf("multiplier %g is below 1", b.Multiplier))
	}
	if b.RandomizationFactor > 1 {
		errs = append(errs, fmt.Errorf("randomization factor %g is above 1", b.RandomizationFactor))
	}
	return errors.Join(errs...)
}

// WithDefaults returns b with every zero field taken from defaults. A
// negative RandomizationFactor or MaxElapsedTime stays as it is (none, no
// limit), so applying defaults twice changes nothing.
func (b Backoff) WithDefaults(defaults Backoff) Backoff {
	if b.InitialInterval == 0 {
		b.InitialInterval = defaults.InitialInterval
	}
	if b.MaxInterval == 0 {
		b.MaxInterval = defaults.MaxInterval
	}
	if b.Multiplier == 0 {
		b.Multiplier = defaults.Multiplier
	}
	if b.RandomizationFactor == 0 {
		b.RandomizationFactor = defaults.RandomizationFactor
	}
	if b.MaxElapsedTime == 0 {
		b.MaxElapsedTime = defaults.MaxElapsedTime
	}
	return b
}

// NewBackOff returns the sequence of waits b describes, started now, with
// b's zero fields taken from defaults (DefaultRetryBackoff,
// DefaultRedelivery, or the caller's own). The sequence stops after
// MaxElapsedTime when that is positive.
func (b Backoff) NewBackOff(defaults Backoff) backoff.BackOff {
	b = b.WithDefaults(defaults)
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(b.InitialInterval),
		backoff.WithMaxInterval(b.MaxInterval),
		backoff.WithMultiplier(b.Multiplier),
		backoff.WithRandomizationFactor(max(b.RandomizationFactor, 0)),
		backoff.WithMaxElapsedTime(max(b.MaxElapsedTime, 0)), // 0: no limit
	)
}

// wait returns the wait after the n-th failure (n ≥ 1) of b, whose
// defaults are already applied, with its jitter.
func (b Backoff) wait(n int) time.Duration {
	w := float64(b.InitialInterval)
	for i := 1; i < n && w < float64(b.MaxInterval); i++ {
		w *= b.Multiplier
	}
	w = min(w, float64(b.MaxInterval))
	return jitter(time.Duration(w), b.RandomizationFactor)
}

// jitter spreads d by ± factor.
func jitter(d time.Duration, factor float64) time.Duration {
	if factor <= 0 || d <= 0 {
		return d
	}
	delta := factor * float64(d)
	return time.Duration(float64(d) - delta + rand.Float64()*2*delta)
}
