package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/envelope"
)

// Relay forwards outbox rows to a bridge. See the package documentation.
type Relay struct {
	// DB is the PostgreSQL URL of the database holding the outbox. Required.
	DB string
	// Schema of the outbox table. Default DefaultSchema.
	Schema string
	// Target receives the messages. Required.
	Target bridge.Bridge
	// BatchSize is how many rows one round forwards. Default 100.
	BatchSize int
	// PollInterval is the sweep for a missed notification. Default 1 s.
	PollInterval time.Duration
	// LeaderPoll is how often a standby relay tries to take over, and the
	// wait before reconnecting after a lost connection. Default 1 s.
	LeaderPoll time.Duration
	// Retention keeps forwarded rows this long before deleting them.
	// Default 1 h; negative deletes a row as soon as it is forwarded.
	Retention time.Duration
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Relay.
const (
	DefaultBatchSize    = 100
	DefaultPollInterval = time.Second
	DefaultLeaderPoll   = time.Second
	DefaultRetention    = time.Hour
)

// lockNamespace is the first key of the relay's advisory lock (the second
// is the schema's hash): one leader per outbox.
const lockNamespace = 1937337955

// Validate reports every problem in r.
func (r Relay) Validate() error {
	var errs []error
	if r.DB == "" {
		errs = append(errs, errors.New("DB is empty"))
	} else if _, err := pgx.ParseConfig(r.DB); err != nil {
		errs = append(errs, fmt.Errorf("DB: %w", err))
	}
	if _, err := quote(r.Schema); err != nil {
		errs = append(errs, err)
	}
	if r.Target == nil {
		errs = append(errs, errors.New("target bridge is nil"))
	}
	if r.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("BatchSize is negative (%d)", r.BatchSize))
	}
	for name, d := range map[string]time.Duration{"PollInterval": r.PollInterval, "LeaderPoll": r.LeaderPoll} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s is negative (%s)", name, d))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("outbox relay: %w", err)
	}
	return nil
}

func (r *Relay) setDefaults() {
	if r.Schema == "" {
		r.Schema = DefaultSchema
	}
	if r.BatchSize == 0 {
		r.BatchSize = DefaultBatchSize
	}
	if r.PollInterval == 0 {
		r.PollInterval = DefaultPollInterval
	}
	if r.LeaderPoll == 0 {
		r.LeaderPoll = DefaultLeaderPoll
	}
	if r.Retention == 0 {
		r.Retention = DefaultRetention
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
}

// Run forwards until ctx is done, reconnecting after any database failure.
// It returns nil when ctx ends and an error only for an invalid Relay.
func (r Relay) Run(ctx context.Context) error {
	if err := r.Validate(); err != nil {
		return err
	}
	r.setDefaults()
	qs, _ := quote(r.Schema)
	for ctx.Err() == nil {
		err := r.session(ctx, qs)
		if ctx.Err() != nil {
			return nil
		}
		r.Logger.Warn("outbox relay: session ended; reconnecting", "err", err, "in", r.LeaderPoll)
		sleep(ctx, r.LeaderPoll)
	}
	return nil
}

// session connects, waits to become the leader, then forwards until the
// connection fails or ctx ends. Everything runs on this one connection: if
// it dies, the lock is gone and so is this relay's right to forward.
func (r Relay) session(ctx context.Context, qs string) error {
	conn, err := pgx.Connect(ctx, r.DB)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	for {
		var leader bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, lockNamespace, r.Schema).Scan(&leader); err != nil {
			return fmt.Errorf("taking the leader lock: %w", err)
		}
		if leader {
			break
		}
		if !sleep(ctx, r.LeaderPoll) {
			return ctx.Err()
		}
	}
	r.Logger.Info("outbox relay: leading", "schema", r.Schema, "target", r.Target.Name())
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{r.Schema + ".outbox"}.Sanitize()); err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	q := queries(qs, r.Retention < 0)
	lastClean := time.Time{}
	for {
		n, err := r.forward(ctx, conn, q)
		if err != nil {
			return err
		}
		if r.Retention > 0 && time.Since(lastClean) > time.Minute {
			lastClean = time.Now()
			if tag, err := conn.Exec(ctx, q.clean, r.Retention.Microseconds()); err != nil {
				return fmt.Errorf("deleting forwarded rows: %w", err)
			} else if tag.RowsAffected() > 0 {
				r.Logger.Debug("outbox relay: deleted forwarded rows", "rows", tag.RowsAffected())
			}
		}
		if n == r.BatchSize {
			continue // more waiting
		}
		wctx, cancel := context.WithTimeout(ctx, r.PollInterval)
		_, err = conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("waiting for a notification: %w", err)
		}
	}
}

type relayQueries struct{ pending, done, clean string }

func queries(qs string, deleteAtOnce bool) relayQueries {
	q := relayQueries{
		pending: `SELECT id, topic, uuid, payload, metadata FROM ` + qs + `.outbox WHERE forwarded_at IS NULL ORDER BY id LIMIT $1`,
		done:    `UPDATE ` + qs + `.outbox SET forwarded_at = now() WHERE id = ANY($1)`,
		clean: `DELETE FROM ` + qs + `.outbox WHERE id IN (SELECT id FROM ` + qs + `.outbox
			WHERE forwarded_at < now() - make_interval(secs => $1::bigint / 1e6) LIMIT 10000)`,
	}
	if deleteAtOnce {
		q.done = `DELETE FROM ` + qs + `.outbox WHERE id = ANY($1)`
	}
	return q
}

type row struct {
	id  int64
	top string
	msg *message.Message
}

// forward publishes one batch in id order and marks what it published. A
// publish failure stops the batch there, so nothing overtakes a message
// that could not be sent.
func (r Relay) forward(ctx context.Context, conn *pgx.Conn, q relayQueries) (int, error) {
	rows, err := conn.Query(ctx, q.pending, r.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("reading the outbox: %w", err)
	}
	var batch []row
	for rows.Next() {
		var (
			x    row
			uuid string
			body []byte
			md   []byte
		)
		if err := rows.Scan(&x.id, &x.top, &uuid, &body, &md); err != nil {
			rows.Close()
			return 0, fmt.Errorf("reading the outbox: %w", err)
		}
		x.msg = message.NewMessage(uuid, body)
		if err := json.Unmarshal(md, &x.msg.Metadata); err != nil {
			r.Logger.Error("outbox relay: unreadable metadata; forwarding without it", "id", x.id, "err", err)
		}
		batch = append(batch, x)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("reading the outbox: %w", err)
	}
	var sent []int64
	var pubErr error
	for start := 0; start < len(batch) && pubErr == nil; {
		end := start + 1 // one Publish per run of the same topic
		for end < len(batch) && batch[end].top == batch[start].top {
			end++
		}
		msgs := make([]*message.Message, 0, end-start)
		for _, x := range batch[start:end] {
			x.msg.SetContext(ctx)
			msgs = append(msgs, x.msg)
		}
		err := r.Target.Publisher().Publish(batch[start].top, msgs...)
		switch {
		case errors.Is(err, bridge.ErrNoSubscriber) && msgs[0].Metadata.Get(envelope.KeyKind) == envelope.KindEvent:
			// An event nobody subscribes to has nobody to reach: done.
			r.Logger.Debug("outbox relay: no subscriber for the event; nothing to deliver", "topic", batch[start].top, "messages", len(msgs))
		case errors.Is(err, bridge.ErrNoSubscriber):
			// A command whose service has never subscribed must wait for it:
			// dropping it would lose a committed message.
			pubErr = fmt.Errorf("no consumer for command topic %s yet (start the service): %w", batch[start].top, err)
			continue
		case err != nil:
			pubErr = fmt.Errorf("publishing to %s: %w", batch[start].top, err)
			continue
		}
		for _, x := range batch[start:end] {
			sent = append(sent, x.id)
		}
		start = end
	}
	if len(sent) > 0 {
		if _, err := conn.Exec(ctx, q.done, sent); err != nil {
			// Published but not marked: they will be forwarded again.
			return 0, fmt.Errorf("marking %d forwarded rows: %w", len(sent), err)
		}
	}
	if pubErr != nil {
		r.Logger.Warn("outbox relay: publish failed; retrying", "err", pubErr)
		if !sleep(ctx, r.LeaderPoll) {
			return 0, ctx.Err()
		}
	}
	return len(sent), nil
}

// Stats describes the outbox's backlog.
type Stats struct {
	// Backlog is the number of rows not yet forwarded.
	Backlog int64
	// OldestAge is the age of the oldest row not yet forwarded (zero when
	// the backlog is empty).
	OldestAge time.Duration
}

// ReadStats reads the backlog of schema's outbox.
func ReadStats(ctx context.Context, db *sql.DB, schema string) (Stats, error) {
	qs, err := quote(schema)
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	var age sql.NullFloat64
	err = db.QueryRowContext(ctx, `SELECT count(*), extract(epoch FROM now() - min(created_at)) FROM `+qs+`.outbox WHERE forwarded_at IS NULL`).Scan(&s.Backlog, &age)
	if err != nil {
		return Stats{}, fmt.Errorf("outbox: reading stats: %w", err)
	}
	if age.Valid {
		s.OldestAge = time.Duration(age.Float64 * float64(time.Second))
	}
	return s, nil
}

// RegisterMetrics publishes the backlog of schema's outbox as two
// OpenTelemetry gauges, read from db at each collection:
// switchboard.outbox.backlog (rows) and switchboard.outbox.oldest_age (s).
// A nil mp means the global provider.
func RegisterMetrics(mp metric.MeterProvider, db *sql.DB, schema string) error {
	if _, err := quote(schema); err != nil {
		return err
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter("github.com/switchboard-go/switchboard/outbox")
	backlog, err := m.Int64ObservableGauge("switchboard.outbox.backlog", metric.WithUnit("{message}"),
		metric.WithDescription("Outbox rows not yet forwarded"))
	if err != nil {
		return err
	}
	age, err := m.Float64ObservableGauge("switchboard.outbox.oldest_age", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest outbox row not yet forwarded"))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		s, err := ReadStats(ctx, db, schema)
		if err != nil {
			return err
		}
		o.ObserveInt64(backlog, s.Backlog)
		o.ObserveFloat64(age, s.OldestAge.Seconds())
		return nil
	}, backlog, age)
	return err
}

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
