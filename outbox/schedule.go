package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/cronspec"
	"github.com/switchboard-go/switchboard/internal/envelope"
)

// Scheduler keeps scheduled messages and recurring schedules in the outbox
// of a PostgreSQL schema, and its Run forwards them once due (with the
// outbox's relay, under its lease: one forwarder however many engines run
// it). It implements engine.Scheduler; set it as Config.Scheduler, by
// pointer. See the package documentation, "Scheduled messages".
//
// It opens its connection pool on first use; Close closes it.
type Scheduler struct {
	// DatabaseURL is the PostgreSQL URL of the database holding the
	// outbox. Required.
	DatabaseURL string
	// Schema of the outbox tables (migrated, up to 0007). Default
	// DefaultSchema.
	Schema string
	// Logger. Default slog.Default().
	Logger *slog.Logger
	// BatchSize, PollInterval, LeaderPoll, LeaseTTL and Retention are
	// those of the Relay that Run runs (same defaults).
	BatchSize    int
	PollInterval time.Duration
	LeaderPoll   time.Duration
	LeaseTTL     time.Duration
	Retention    time.Duration

	mu     sync.Mutex
	db     *sql.DB
	closed bool
}

var _ engine.Scheduler = (*Scheduler)(nil)

// ErrSchedulerClosed is returned by the methods of a closed Scheduler.
var ErrSchedulerClosed = errors.New("outbox: scheduler closed")

// relay is the Relay that Run runs on target.
func (s *Scheduler) relay(target bridge.Bridge) Relay {
	return Relay{DatabaseURL: s.DatabaseURL, Schema: s.Schema, Target: target, Logger: s.Logger,
		BatchSize: s.BatchSize, PollInterval: s.PollInterval, LeaderPoll: s.LeaderPoll,
		LeaseTTL: s.LeaseTTL, Retention: s.Retention}
}

// Validate reports every problem in s.
func (s *Scheduler) Validate() error {
	if err := errors.Join(s.relay(nil).problems()...); err != nil {
		return fmt.Errorf("outbox scheduler: %w", err)
	}
	return nil
}

// open returns the pool, opened on first use, and the quoted schema.
func (s *Scheduler) open() (*sql.DB, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, "", ErrSchedulerClosed
	}
	if s.db == nil {
		if err := s.Validate(); err != nil {
			return nil, "", err
		}
		db, err := sql.Open("pgx", s.relay(nil).driverURL())
		if err != nil {
			return nil, "", fmt.Errorf("outbox scheduler: %w", err)
		}
		s.db = db
	}
	qs, _ := quote(s.Schema)
	return s.db, qs, nil
}

// Close closes the pool. Run is not affected (it has its own connection,
// and ends with its ctx).
func (s *Scheduler) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.db == nil {
		return nil
	}
	return s.db.Close()
}

// Durable reports true: what is scheduled is in PostgreSQL.
func (s *Scheduler) Durable() bool { return true }

// Run forwards the outbox's due rows (scheduled and immediate) and writes
// the recurring schedules' ticks to b until ctx ends, when it returns nil.
// Several Schedulers may run on one schema: one leads, the others stand by.
func (s *Scheduler) Run(ctx context.Context, b bridge.Bridge) error {
	return s.relay(b).Run(ctx)
}

// Schedule writes msg to the outbox, due at at (msg's "scheduled_for" is
// set to it). An id that is already scheduled and waits is refused with
// ErrAlreadyScheduled.
func (s *Scheduler) Schedule(ctx context.Context, topic string, msg *message.Message, at time.Time) error {
	db, _, err := s.open()
	if err != nil {
		return err
	}
	p, err := NewPublisher(wmsql.BeginnerFromStdSQL(db), s.Schema)
	if err != nil {
		return err
	}
	m := msg.Copy()
	m.Metadata.Set(envelope.KeyScheduledFor, envelope.FormatTime(at))
	m.SetContext(ctx)
	return p.Publish(topic, m)
}

// Cancel deletes the scheduled message id if it still waits; otherwise it
// returns an error matching engine.ErrScheduleNotFound. A message the
// relay is publishing at that moment is locked: Cancel waits for the
// publish, then finds it forwarded (ErrScheduleNotFound).
func (s *Scheduler) Cancel(ctx context.Context, id string) error {
	db, _, err := s.open()
	if err != nil {
		return err
	}
	n, err := CancelScheduled(ctx, db, s.Schema, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("outbox: cancelling scheduled message %q: %w", id, engine.ErrScheduleNotFound)
	}
	return nil
}

// Reschedule moves the scheduled message id to at if it still waits, and
// wakes the relay; otherwise it returns an error matching
// engine.ErrScheduleNotFound.
func (s *Scheduler) Reschedule(ctx context.Context, id string, at time.Time) error {
	db, qs, err := s.open()
	if err != nil {
		return err
	}
	schema := s.Schema
	if schema == "" {
		schema = DefaultSchema
	}
	var n int64
	err = db.QueryRowContext(ctx, `WITH u AS (UPDATE `+qs+`.outbox
			SET deliver_at = $2, metadata = jsonb_set(metadata, '{`+envelope.KeyScheduledFor+`}', to_jsonb($3::text))
			WHERE uuid = $1 AND forwarded_at IS NULL AND deliver_at IS NOT NULL RETURNING 1)
		SELECT (SELECT count(*) FROM u), pg_notify($4, '')`,
		id, at, envelope.FormatTime(at), notifyChannel(schema)).Scan(&n, new(any))
	if err != nil {
		return fmt.Errorf("outbox: rescheduling message %q: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("outbox: rescheduling message %q: %w", id, engine.ErrScheduleNotFound)
	}
	return nil
}

// Recur declares the recurring schedule r.Name. Declaring again the same
// definition changes nothing (every engine declares its schedules at
// start); a new spec, topic or message replaces the old one and restarts
// from the next tick after now; a new catch-up policy or metadata applies
// from the next tick written.
func (s *Scheduler) Recur(ctx context.Context, r engine.Recurrence) error {
	db, qs, err := s.open()
	if err != nil {
		return err
	}
	if r.Name == "" || r.Topic == "" || r.Msg == nil {
		return errors.New("outbox: a recurring schedule needs a name, a topic and a message")
	}
	sched, err := cronspec.Parse(r.Spec)
	if err != nil {
		return fmt.Errorf("outbox: recurring schedule %q: %w", r.Name, err)
	}
	if r.CatchUp < engine.CatchUpOnce || r.CatchUp > engine.CatchUpAll {
		return fmt.Errorf("outbox: recurring schedule %q: unknown catch-up policy %d", r.Name, r.CatchUp)
	}
	md, err := json.Marshal(r.Msg.Metadata)
	if err != nil {
		return fmt.Errorf("outbox: recurring schedule %q: metadata: %w", r.Name, err)
	}
	var next *time.Time
	if t := sched.Next(time.Now()); !t.IsZero() {
		next = &t
	}
	schema := s.Schema
	if schema == "" {
		schema = DefaultSchema
	}
	// The leading relay reads the recurring schedules when one is due, or
	// when told (recurNotice): a new schedule's first tick may come sooner
	// than its next look.
	_, err = db.ExecContext(ctx, `WITH u AS (INSERT INTO `+qs+`.outbox_recurring AS r
			(name, spec, topic, payload, metadata, catch_up, next_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, now())
		ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, topic = excluded.topic,
			payload = excluded.payload, metadata = excluded.metadata, catch_up = excluded.catch_up,
			next_at = CASE WHEN (r.spec, r.topic, r.payload) IS DISTINCT FROM (excluded.spec, excluded.topic, excluded.payload)
				THEN excluded.next_at ELSE r.next_at END,
			updated_at = now()
		WHERE (r.spec, r.topic, r.payload, r.metadata, r.catch_up)
			IS DISTINCT FROM (excluded.spec, excluded.topic, excluded.payload, excluded.metadata, excluded.catch_up)
		RETURNING 1)
		SELECT pg_notify($8, '`+recurNotice+`') FROM u`,
		r.Name, r.Spec, r.Topic, r.Msg.Payload, md, int(r.CatchUp), next, notifyChannel(schema))
	if err != nil {
		return fmt.Errorf("outbox: declaring recurring schedule %q: %w", r.Name, err)
	}
	return nil
}

// MissedAfter is how late a recurring tick is when it counts as missed (no
// scheduler ran when it was due), for the catch-up policies: a leader
// writes a tick within milliseconds.
const MissedAfter = 5 * time.Second

// maxTicksPerRound bounds the ticks one schedule writes in one round under
// engine.CatchUpAll; the rest follow in the next rounds.
const maxTicksPerRound = 1000

// maxRecurringPerRound bounds the schedules one round writes ticks for;
// the rest follow in the next rounds (the relay does not wait while a tick
// is due).
const maxRecurringPerRound = 100

type recurQueries struct{ due, insert, advance string }

func recurringQueries(qs string) recurQueries {
	return recurQueries{
		due: `SELECT name, spec, topic, payload, metadata, catch_up, next_at, now() FROM ` + qs + `.outbox_recurring
			WHERE next_at <= now() ORDER BY next_at LIMIT 1 FOR UPDATE SKIP LOCKED`,
		// A tick already written and waiting (same id) is not written twice.
		insert: `INSERT INTO ` + qs + `.outbox (topic, uuid, payload, metadata, deliver_at)
			SELECT $1, t.uuid, $2, t.metadata::jsonb, t.at FROM unnest($3::text[], $4::text[], $5::timestamptz[]) AS t(uuid, metadata, at)
			ON CONFLICT (uuid) WHERE forwarded_at IS NULL AND deliver_at IS NOT NULL DO NOTHING`,
		advance: `UPDATE ` + qs + `.outbox_recurring SET next_at = $2 WHERE name = $1`,
	}
}

// recur writes the due ticks of the recurring schedules, one schedule per
// transaction (the tick's rows and the schedule's next_at together).
func (r Relay) recur(ctx context.Context, conn *pgx.Conn, q recurQueries) error {
	for range maxRecurringPerRound {
		done, err := r.recurOne(ctx, conn, q)
		if err != nil {
			return fmt.Errorf("writing recurring ticks: %w", err)
		}
		if done {
			return nil
		}
	}
	return nil
}

// recurOne writes the due ticks of one schedule; it reports whether none
// was due.
func (r Relay) recurOne(ctx context.Context, conn *pgx.Conn, q recurQueries) (bool, error) {
	sctx, cancel := r.stmt(ctx)
	defer cancel()
	tx, err := conn.Begin(sctx)
	if err != nil {
		return false, err
	}
	defer func() { _ = tx.Rollback(sctx) }()
	var (
		name, spec, topic string
		payload, md       []byte
		catchUp           int
		nextAt, now       time.Time
	)
	err = tx.QueryRow(sctx, q.due).Scan(&name, &spec, &topic, &payload, &md, &catchUp, &nextAt, &now)
	if errors.Is(err, pgx.ErrNoRows) {
		return true, tx.Commit(sctx)
	}
	if err != nil {
		return false, err
	}
	ticks, next, err := dueTicks(spec, engine.CatchUp(catchUp), nextAt, now)
	if err != nil {
		r.Logger.Error("outbox relay: recurring schedule with an invalid spec; stopped until declared again", "name", name, "err", err)
	}
	if len(ticks) > 0 {
		var template map[string]string
		if err := json.Unmarshal(md, &template); err != nil {
			return false, fmt.Errorf("metadata of %q: %w", name, err)
		}
		ids, mds := make([]string, len(ticks)), make([]string, len(ticks))
		for i, t := range ticks {
			ids[i] = TickID(name, t)
			template[envelope.KeyScheduledFor] = envelope.FormatTime(t)
			b, _ := json.Marshal(template)
			mds[i] = string(b)
		}
		if _, err := tx.Exec(sctx, q.insert, topic, payload, ids, mds, ticks); err != nil {
			return false, fmt.Errorf("ticks of %q: %w", name, err)
		}
	}
	var nextArg *time.Time
	if !next.IsZero() {
		nextArg = &next
	}
	if _, err := tx.Exec(sctx, q.advance, name, nextArg); err != nil {
		return false, fmt.Errorf("advancing %q: %w", name, err)
	}
	return false, tx.Commit(sctx)
}

// dueTicks returns the ticks to write for a schedule whose next tick is
// nextAt (<= now), by its catch-up policy, and the tick to write next
// (zero: none, or an invalid spec).
func dueTicks(spec string, policy engine.CatchUp, nextAt, now time.Time) ([]time.Time, time.Time, error) {
	sched, err := cronspec.Parse(spec)
	if err != nil {
		return nil, time.Time{}, err
	}
	switch policy {
	case engine.CatchUpAll:
		var ticks []time.Time
		t := nextAt
		for !t.IsZero() && !t.After(now) && len(ticks) < maxTicksPerRound {
			ticks = append(ticks, t)
			t = sched.Next(t)
		}
		return ticks, t, nil
	case engine.CatchUpSkip:
		if now.Sub(nextAt) < MissedAfter {
			return []time.Time{nextAt}, sched.Next(now), nil
		}
		return nil, sched.Next(now), nil
	default: // CatchUpOnce: the first due tick stands for all of them
		return []time.Time{nextAt}, sched.Next(now), nil
	}
}

// tickNamespace derives the ids of recurring ticks.
var tickNamespace = uuid.MustParse("6f1d3c52-8a4e-4d2b-9a57-3b0f5f2b7c11")

// TickID is the id of the message a recurring schedule writes for its tick
// at t: the same for every relay, so a tick written twice is recognisable.
func TickID(name string, t time.Time) string {
	return uuid.NewSHA1(tickNamespace, []byte(name+"\x00"+envelope.FormatTime(t))).String()
}

// ScheduledRow is a scheduled message waiting in the outbox.
type ScheduledRow struct {
	// ID is the row's id.
	ID int64
	// Topic is the message's topic.
	Topic string
	// MessageID is the message's id, its schedule id (for Cancel).
	MessageID string
	// DeliverAt is when it is due.
	DeliverAt time.Time
	// CreatedAt is when it was scheduled.
	CreatedAt time.Time
	// Attempts is how many times the target refused it.
	Attempts int
}

// ListScheduled returns up to limit (at most MaxListed) scheduled messages
// of schema's outbox not forwarded yet, the first due first.
func ListScheduled(ctx context.Context, db *sql.DB, schema string, limit int) ([]ScheduledRow, error) {
	qs, err := quote(schema)
	if err != nil {
		return nil, err
	}
	if limit <= 0 || limit > MaxListed {
		limit = MaxListed
	}
	rows, err := db.QueryContext(ctx, `SELECT id, topic, uuid, deliver_at, created_at, attempts
		FROM `+qs+`.outbox WHERE forwarded_at IS NULL AND deliver_at IS NOT NULL
		ORDER BY deliver_at, id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox: listing scheduled messages: %w", err)
	}
	defer rows.Close()
	var out []ScheduledRow
	for rows.Next() {
		var x ScheduledRow
		if err := rows.Scan(&x.ID, &x.Topic, &x.MessageID, &x.DeliverAt, &x.CreatedAt, &x.Attempts); err != nil {
			return nil, fmt.Errorf("outbox: listing scheduled messages: %w", err)
		}
		out = append(out, x)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: listing scheduled messages: %w", err)
	}
	return out, nil
}

// CancelScheduled deletes the given scheduled messages (by message id) of
// schema's outbox that still wait, and returns how many it deleted.
func CancelScheduled(ctx context.Context, db *sql.DB, schema string, ids ...string) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	qs, err := quote(schema)
	if err != nil {
		return 0, err
	}
	res, err := db.ExecContext(ctx, `DELETE FROM `+qs+`.outbox
		WHERE uuid = ANY($1) AND forwarded_at IS NULL AND deliver_at IS NOT NULL`, ids)
	if err != nil {
		return 0, fmt.Errorf("outbox: cancelling scheduled messages: %w", err)
	}
	return res.RowsAffected()
}
