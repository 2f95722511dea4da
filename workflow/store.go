package workflow

import (
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/outbox"
)

// Store is where runs are kept, and how this instance runs them: the
// PostgreSQL database holding the tables of migration 8, and the settings
// of the runner that Register starts on the service's engine.
type Store struct {
	// DB holds the workflow tables. Required. Allow at least
	// Concurrency+2 idle connections (db.SetMaxIdleConns): each run being
	// executed checkpoints on its own, the runner claims and listens on
	// two more.
	DB *sql.DB
	// Schema of the workflow tables. Default outbox.DefaultSchema.
	Schema string
	// Concurrency is how many runs this instance executes at once.
	// Default 16.
	Concurrency int
	// LeaseTTL is how long a claimed run stays this instance's without a
	// renewal; the runner renews it every LeaseTTL/3. A run whose runner
	// died is resumed elsewhere once its lease ended. Default 30 s.
	LeaseTTL time.Duration
	// PollInterval bounds how long the runner sleeps without a
	// notification: it also wakes at the next run's wake time. Default 1 s.
	PollInterval time.Duration
	// StepRetry is the in-run retry of a step that failed transiently
	// (a timeout, an unreachable or unavailable service, a 5xx, a local
	// step's error not marked Permanent), with the same message id each
	// time. Default: 100 attempts, 100 ms doubling to 10 s, ±50 % (about a
	// quarter of an hour): a durable process outlives an outage.
	StepRetry engine.Retry
	// SignalRetention is how long a correlated event is kept for an Await
	// that has not reached it yet. Default 7 days.
	SignalRetention time.Duration
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Store's zero fields.
const (
	DefaultConcurrency     = 16
	DefaultLeaseTTL        = 30 * time.Second
	DefaultPollInterval    = time.Second
	DefaultStepAttempts    = 100
	DefaultSignalRetention = 7 * 24 * time.Hour
)

// DefaultStepBackoff is StepRetry's default backoff.
var DefaultStepBackoff = engine.Backoff{
	InitialInterval:     100 * time.Millisecond,
	MaxInterval:         10 * time.Second,
	Multiplier:          2,
	RandomizationFactor: 0.5,
	MaxElapsedTime:      -1, // attempts bound the retries
}

// Validate reports every problem in s.
func (s *Store) Validate() error {
	if s == nil {
		return errors.New("workflow: no store (nil *Store)")
	}
	var errs []error
	if s.DB == nil {
		errs = append(errs, errors.New("DB is nil"))
	}
	if err := (migrations.Config{Schema: s.Schema}).Validate(); err != nil {
		errs = append(errs, err)
	}
	for name, d := range map[string]time.Duration{"LeaseTTL": s.LeaseTTL, "PollInterval": s.PollInterval, "SignalRetention": s.SignalRetention} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s is negative (%s)", name, d))
		}
	}
	if s.LeaseTTL > 0 && s.LeaseTTL < 300*time.Millisecond {
		errs = append(errs, fmt.Errorf("a LeaseTTL of %s is under 300 ms: its renewals could not keep up", s.LeaseTTL))
	}
	if s.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("%s is negative (%d)", "Concurrency", s.Concurrency))
	}
	if err := s.StepRetry.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", "StepRetry", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("workflow: invalid store: %w", err)
	}
	return nil
}

// settings is a validated Store with its defaults.
type settings struct {
	db           *sql.DB
	schema       string // quoted
	raw          string // unquoted, for the notification channel
	concurrency  int
	leaseTTL     time.Duration
	pollInterval time.Duration
	retry        engine.Retry
	retention    time.Duration
	log          *slog.Logger
	q            queries
}

func (s *Store) settings() settings {
	st := settings{
		db: s.DB, raw: s.Schema, concurrency: s.Concurrency, leaseTTL: s.LeaseTTL,
		pollInterval: s.PollInterval, retry: s.StepRetry, retention: s.SignalRetention, log: s.Logger,
	}
	if st.raw == "" {
		st.raw = outbox.DefaultSchema
	}
	st.schema, _ = migrations.Config{Schema: st.raw}.Quoted() // Validate checked it
	if st.concurrency == 0 {
		st.concurrency = DefaultConcurrency
	}
	if st.leaseTTL == 0 {
		st.leaseTTL = DefaultLeaseTTL
	}
	if st.pollInterval == 0 {
		st.pollInterval = DefaultPollInterval
	}
	if st.retry.MaxAttempts == 0 {
		st.retry.MaxAttempts = DefaultStepAttempts
	}
	st.retry.Backoff = st.retry.Backoff.WithDefaults(DefaultStepBackoff)
	if st.retention == 0 {
		st.retention = DefaultSignalRetention
	}
	if st.log == nil {
		st.log = slog.Default()
	}
	st.q = newQueries(st.schema)
	return st
}
