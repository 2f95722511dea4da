package outbox

import (
	"context"
	"crypto/md5" //nolint:gosec // a channel name, not a secret
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/postgres"
	"github.com/switchboard-go/switchboard/internal/envelope"
)

// Relay forwards outbox rows to a bridge. See the package documentation.
type Relay struct {
	// DatabaseURL is the PostgreSQL URL of the database holding the
	// outbox. Required. The relay opens its own connections: it holds a
	// session for its leadership lease and LISTENs for new rows.
	DatabaseURL string
	// Schema of the outbox table. Default DefaultSchema.
	Schema string
	// Target receives the messages. Required.
	Target bridge.Bridge
	// BatchSize is how many rows one round forwards. Default 100.
	BatchSize int
	// PollInterval is the sweep for a missed notification. Default 1 s.
	// A scheduled row due more than a second after its transaction began
	// sends no notification (migration 7 compares with now(), the start of
	// the transaction): the relay reads it at its next sweep, up to
	// PollInterval after the commit. So a row written in a transaction
	// that ran long may be forwarded up to PollInterval late, even with
	// the default; otherwise up to PollInterval − 1 s late.
	PollInterval time.Duration
	// LeaderPoll is how often a standby relay tries to take over, and the
	// wait before reconnecting after a lost connection or retrying when the
	// target is unreachable. Default 1 s.
	LeaderPoll time.Duration
	// LeaseTTL is how long leadership lasts without renewal. The leader
	// renews its lease every LeaseTTL/3; every statement it sends has a
	// deadline of LeaseTTL/3; it stops forwarding once it could not renew
	// for 2/3 of LeaseTTL, and a standby takes over once the lease expired
	// (at once when the leader's database session has ended). So a leader
	// that dies, or whose connection freezes, is replaced within
	// LeaseTTL + LeaderPoll + LeaseTTL/3 (MaxTakeover, 21 s, with the
	// defaults). Default 15 s.
	LeaseTTL time.Duration
	// RetryBackoff is the wait before retrying a row the target refused for
	// a reason that can pass (no consumer for a command yet, a broker
	// error); it doubles with each attempt up to MaxRetryBackoff. Default
	// 1 s.
	RetryBackoff time.Duration
	// MaxRetryBackoff caps the doubling of RetryBackoff. Default 1 min.
	MaxRetryBackoff time.Duration
	// Retention keeps forwarded rows this long before deleting them.
	// Default 1 h; negative deletes a row as soon as it is forwarded.
	Retention time.Duration
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Relay.
const (
	DefaultBatchSize       = 100
	DefaultPollInterval    = time.Second
	DefaultLeaderPoll      = time.Second
	DefaultLeaseTTL        = 15 * time.Second
	DefaultRetryBackoff    = time.Second
	DefaultMaxRetryBackoff = time.Minute
	DefaultRetention       = time.Hour
)

// MaxTakeover bounds, with the default LeaseTTL and LeaderPoll, the time
// from the moment a leader dies or its connection freezes to the moment a
// standby forwards: the lease expires at most LeaseTTL after the leader's
// last renewal (which came before), a standby tries every LeaderPoll, and
// its statements take at most LeaseTTL/3.
const MaxTakeover = DefaultLeaseTTL + DefaultLeaderPoll + DefaultLeaseTTL/3

// maxErrorText bounds the publish error stored with a failed row.
const maxErrorText = 1000

// driverURL is DatabaseURL as the driver should read it (see
// postgres.DatabaseURL, which Validate has checked): the driver's errors
// are logged on every reconnect.
func (r Relay) driverURL() string {
	if dsn, err := postgres.DatabaseURL(r.DatabaseURL); err == nil {
		return dsn
	}
	return r.DatabaseURL
}

// Validate reports every problem in r.
func (r Relay) Validate() error {
	errs := r.problems()
	if r.Target == nil {
		errs = append(errs, errors.New("target bridge is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("outbox relay: %w", err)
	}
	return nil
}

// problems lists every problem in r but its Target (which a Scheduler
// receives only in Run).
func (r Relay) problems() []error {
	var errs []error
	if r.DatabaseURL == "" {
		errs = append(errs, errors.New("DatabaseURL is empty"))
	} else if dsn, err := postgres.DatabaseURL(r.DatabaseURL); err != nil {
		errs = append(errs, fmt.Errorf("DatabaseURL: %w", err))
	} else if _, err := pgx.ParseConfig(dsn); err != nil {
		errs = append(errs, fmt.Errorf("DatabaseURL: %w", err))
	}
	if _, err := quote(r.Schema); err != nil {
		errs = append(errs, err)
	}
	if r.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("BatchSize is negative (%d)", r.BatchSize))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"PollInterval", r.PollInterval}, {"LeaderPoll", r.LeaderPoll}, {"LeaseTTL", r.LeaseTTL},
		{"RetryBackoff", r.RetryBackoff}, {"MaxRetryBackoff", r.MaxRetryBackoff}} {
		if d.d < 0 {
			errs = append(errs, fmt.Errorf("%s is negative (%s)", d.name, d.d))
		}
	}
	if r.LeaseTTL > 0 && r.LeaseTTL < 300*time.Millisecond {
		errs = append(errs, fmt.Errorf("LeaseTTL %s is below 300ms", r.LeaseTTL))
	}
	return errs
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
	if r.LeaseTTL == 0 {
		r.LeaseTTL = DefaultLeaseTTL
	}
	if r.RetryBackoff == 0 {
		r.RetryBackoff = DefaultRetryBackoff
	}
	if r.MaxRetryBackoff == 0 {
		r.MaxRetryBackoff = DefaultMaxRetryBackoff
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
	q := queries(qs, r.Retention < 0)
	l := &lease{holder: holderID(), ttl: r.LeaseTTL}
	for ctx.Err() == nil {
		err := r.session(ctx, q, l)
		if ctx.Err() != nil {
			return nil
		}
		r.Logger.Warn("outbox relay: session ended; reconnecting", "err", err, "in", r.LeaderPoll)
		sleep(ctx, r.LeaderPoll)
	}
	return nil
}

// holderID names this relay in the lease: host, process and a random part
// (one per Run, so two relays of one process are told apart).
func holderID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s/%d/%x", host, os.Getpid(), b)
}

// lease is this relay's view of its leadership. The server decides who
// leads (outbox_leader.expires_at, on the server's clock); the relay only
// trusts its lease until 2/3 of the TTL after it SENT its last successful
// renewal, which is before the server stamped it, so the relay stops
// forwarding at least TTL/3 before a standby can take over: the margin for
// a publish in flight.
type lease struct {
	holder string
	ttl    time.Duration
	sent   time.Time // when the last successful renewal was sent; zero: not leading
}

func (l *lease) valid() bool    { return !l.sent.IsZero() && time.Since(l.sent) < 2*l.ttl/3 }
func (l *lease) renewDue() bool { return l.sent.IsZero() || time.Since(l.sent) >= l.ttl/3 }
func (l *lease) until() time.Time {
	return l.sent.Add(2 * l.ttl / 3)
}

// stmt bounds one statement, so that a frozen connection is noticed in
// LeaseTTL/3 (pgx closes a connection whose statement was cancelled).
func (r Relay) stmt(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.LeaseTTL/3)
}

// acquire takes or renews the lease; it reports whether this relay leads.
func (r Relay) acquire(ctx context.Context, conn *pgx.Conn, q relayQueries, l *lease) (bool, error) {
	sctx, cancel := r.stmt(ctx)
	defer cancel()
	sent := time.Now()
	var ok bool
	err := conn.QueryRow(sctx, q.lease, l.holder, l.ttl.Seconds()).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		l.sent = time.Time{}
		return false, nil
	}
	if err != nil {
		l.sent = time.Time{}
		return false, fmt.Errorf("taking the leader lease: %w", err)
	}
	l.sent = sent
	return true, nil
}

// release ends the lease at once when the relay stops, so that a standby
// need not wait for it to expire.
func (r Relay) release(conn *pgx.Conn, q relayQueries, l *lease) {
	if l.sent.IsZero() || conn.IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.LeaseTTL/3)
	defer cancel()
	if _, err := conn.Exec(ctx, q.release, l.holder); err != nil {
		r.Logger.Debug("outbox relay: releasing the lease", "err", err)
	}
	l.sent = time.Time{}
}

// session connects, waits to become the leader, then forwards until the
// connection fails, the lease is lost or ctx ends.
func (r Relay) session(ctx context.Context, q relayQueries, l *lease) error {
	cctx, cancel := r.stmt(ctx)
	conn, err := pgx.Connect(cctx, r.driverURL())
	cancel()
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer func() {
		r.release(conn, q, l)
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	// Hygiene, not safety (the lease is): the server ends this session if
	// it stays silent much longer than the relay ever is, freeing its slot
	// behind a frozen path. PostgreSQL before 14 lacks the setting.
	idle := 3 * max(r.LeaseTTL, r.LeaderPoll)
	sctx, cancel := r.stmt(ctx)
	_, err = conn.Exec(sctx, fmt.Sprintf("SET idle_session_timeout = %d", idle.Milliseconds()))
	cancel()
	if err != nil && conn.IsClosed() {
		return fmt.Errorf("configuring the session: %w", err)
	}
	for {
		leader, err := r.acquire(ctx, conn, q, l)
		if err != nil {
			return err
		}
		if leader {
			break
		}
		if !sleep(ctx, r.LeaderPoll) {
			return ctx.Err()
		}
	}
	r.Logger.Info("outbox relay: leading", "schema", r.Schema, "target", r.Target.Name(), "holder", l.holder)
	sctx, cancel = r.stmt(ctx)
	_, err = conn.Exec(sctx, `LISTEN `+pgx.Identifier{notifyChannel(r.Schema)}.Sanitize())
	cancel()
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	lastClean := time.Time{}
	var nextRecur time.Time // the next recurring tick, as the last round read it
	readRecur := true
	for {
		if l.renewDue() {
			if leader, err := r.acquire(ctx, conn, q, l); err != nil {
				return err
			} else if !leader {
				return errors.New("lost the leader lease to another relay")
			}
		}
		// The recurring schedules are read when one is due (as the last
		// round saw them), in the first round, and after a Recur (its
		// notification): not in every round, a transaction of its own.
		if readRecur || !nextRecur.IsZero() && !time.Now().Before(nextRecur) {
			if err := r.recur(ctx, conn, q.recurring); err != nil {
				return err
			}
		}
		n, next, err := r.forward(ctx, conn, q, l)
		if err != nil {
			return err
		}
		nextRecur, readRecur = next.recur, false
		if r.Retention > 0 && time.Since(lastClean) > time.Minute {
			lastClean = time.Now()
			sctx, cancel := r.stmt(ctx)
			tag, err := conn.Exec(sctx, q.clean, r.Retention.Microseconds())
			cancel()
			if err != nil {
				return fmt.Errorf("deleting forwarded rows: %w", err)
			} else if tag.RowsAffected() > 0 {
				r.Logger.Debug("outbox relay: deleted forwarded rows", "rows", tag.RowsAffected())
			}
		}
		if n >= r.BatchSize {
			// More may wait. A round that read a full batch (of immediate
			// or of due rows) made progress whatever it forwarded (rows it
			// parked or set to retry are not read again), or slept if the
			// target was down.
			continue
		}
		// Wake for a notification (a row written, a schedule moved), the
		// sweep, the next renewal, or the next scheduled row or tick.
		wait := min(r.PollInterval, time.Until(l.sent.Add(l.ttl/3)))
		for _, t := range []time.Time{next.row, next.recur} {
			if !t.IsZero() {
				wait = min(wait, time.Until(t))
			}
		}
		if wait <= 0 {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		note, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("waiting for a notification: %w", err)
		case err == nil && note.Payload == recurNotice:
			readRecur = true
		}
	}
}

// fromNow turns seconds from now into a time on this machine's clock;
// nil is the zero time.
func fromNow(secs *float64) time.Time {
	if secs == nil {
		return time.Time{}
	}
	return time.Now().Add(time.Duration(*secs * float64(time.Second)))
}

// recurNotice is the payload of the notification Scheduler.Recur sends:
// the relay reads the recurring schedules again (a row written notifies
// with an empty payload).
const recurNotice = "recur"

// dueTimes is when the next scheduled row and the next recurring tick are
// due, on this machine's clock (the server's clock decides; only the
// interval is carried over); zero: none.
type dueTimes struct{ row, recur time.Time }

// notifyChannel is the NOTIFY channel of schema's outbox; the trigger of
// migration 6 computes the same name.
func notifyChannel(schema string) string {
	sum := md5.Sum([]byte(schema))
	return "outbox_" + hex.EncodeToString(sum[:])
}

type relayQueries struct {
	pending, lock, done, retry, park, clean, lease, release string
	recurring                                               recurQueries
}

func queries(qs string, deleteAtOnce bool) relayQueries {
	heldBack := `SELECT FROM ` + qs + `.outbox w
				WHERE w.topic = o.topic AND w.id <= o.id
				AND w.forwarded_at IS NULL AND w.parked_at IS NULL AND w.retry_at > now()`
	q := relayQueries{
		recurring: recurringQueries(qs),
		// Rows not forwarded, not parked, and with no row of their topic
		// (themselves included) waiting for a retry: the immediate ones in
		// id order (index outbox_immediate), then the scheduled ones that
		// are due in due order (outbox_due). A scheduled row that is not
		// due is not read and holds back nothing. A last row, of NULLs but
		// its last two columns, gives the seconds from now (the server's
		// clock) to the next scheduled row and to the next recurring tick
		// (NULL: none), read in the same snapshot, so that a row due after
		// the rows read is counted there: the relay sleeps no longer.
		pending: `(SELECT id, topic, uuid, payload, metadata, NULL::float8, NULL::float8 FROM ` + qs + `.outbox o
			WHERE forwarded_at IS NULL AND parked_at IS NULL AND deliver_at IS NULL
			AND NOT EXISTS (` + heldBack + `)
			ORDER BY id LIMIT $1)
			UNION ALL
			(SELECT id, topic, uuid, payload, metadata, NULL, NULL FROM ` + qs + `.outbox o
			WHERE forwarded_at IS NULL AND parked_at IS NULL AND deliver_at IS NOT NULL AND deliver_at <= now()
			AND NOT EXISTS (` + heldBack + `)
			ORDER BY deliver_at, id LIMIT $1)
			UNION ALL
			SELECT NULL, NULL, NULL, NULL, NULL,
				extract(epoch FROM (SELECT min(deliver_at) FROM ` + qs + `.outbox
					WHERE forwarded_at IS NULL AND parked_at IS NULL AND deliver_at IS NOT NULL AND deliver_at > now())
					- clock_timestamp())::float8,
				extract(epoch FROM (SELECT min(next_at) FROM ` + qs + `.outbox_recurring WHERE next_at IS NOT NULL)
					- clock_timestamp())::float8`,
		// The due scheduled rows read that still wait, locked until marked.
		lock: `SELECT id FROM ` + qs + `.outbox WHERE id = ANY($1)
			AND forwarded_at IS NULL AND parked_at IS NULL AND deliver_at <= now() FOR UPDATE`,
		done: `UPDATE ` + qs + `.outbox SET forwarded_at = now() WHERE id = ANY($1)`,
		// $2 and $3 are the first and the longest wait, in seconds; the
		// exponent is capped so that power() cannot overflow.
		retry: `UPDATE ` + qs + `.outbox SET attempts = attempts + 1, last_error = $4,
			retry_at = now() + make_interval(secs => least($2::float8 * power(2, least(attempts, 30)), $3::float8))
			WHERE id = $1`,
		park: `UPDATE ` + qs + `.outbox SET attempts = attempts + 1, last_error = $2, parked_at = now(), retry_at = NULL WHERE id = $1`,
		clean: `DELETE FROM ` + qs + `.outbox WHERE id IN (SELECT id FROM ` + qs + `.outbox
			WHERE forwarded_at < now() - make_interval(secs => $1::bigint / 1e6) LIMIT 10000)`,
		// Takes the lease when free, expired or left by a session that
		// ended, renews it when held: a row comes back only if this relay
		// leads. A session whose start is hidden (another role's, without
		// pg_read_all_stats) counts as alive while its pid is.
		lease: `INSERT INTO ` + qs + `.outbox_leader AS l (id, holder, expires_at, pid, backend_start)
			SELECT true, $1, now() + make_interval(secs => $2::float8), a.pid, a.backend_start
			FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()
			ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,
				pid = excluded.pid, backend_start = excluded.backend_start
			WHERE l.holder = excluded.holder OR l.expires_at < now()
				OR NOT EXISTS (SELECT FROM pg_stat_activity a WHERE a.pid = l.pid
					AND (a.backend_start IS NULL OR a.backend_start = l.backend_start))
			RETURNING true`,
		release: `UPDATE ` + qs + `.outbox_leader SET expires_at = now() WHERE holder = $1`,
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

// verdict is what a publish error means for the row.
type verdict int

const (
	delivered  verdict = iota // published, or an event nobody subscribes to
	targetDown                // the target is unreachable: no row to blame, retry the round
	retryLater                // refused for a reason that can pass: back off, hold its topic
	parkIt                    // refused for what the message is: park it
)

// judge classifies a publish error for a message of kind (envelope.Kind*).
func judge(err error, kind string) verdict {
	switch {
	case err == nil:
		return delivered
	case errors.Is(err, bridge.ErrNoSubscriber) && kind == envelope.KindEvent:
		return delivered // nobody to reach: done
	case errors.Is(err, bridge.ErrNoSubscriber):
		// A command whose service has not subscribed (yet, or any more) must
		// wait for it: dropping it would lose a committed message.
		return retryLater
	case permanent(err):
		return parkIt
	case errors.Is(err, bridge.ErrUnreachable), errors.Is(err, bridge.ErrClosed):
		return targetDown
	default:
		return retryLater
	}
}

// permanent reports whether the target refused a message for what it is,
// so that publishing the same bytes again can never succeed: a message over
// the backend's size limit (NATS's max_payload counts headers), or one it
// cannot encode (metadata NATS headers cannot carry).
func permanent(err error) bool {
	return errors.Is(err, bridge.ErrTooLarge) || errors.Is(err, bridge.ErrRefused)
}

// forward publishes one batch (the immediate rows in id order, then the
// due scheduled rows in due order) and marks what it published; it returns
// how many rows it read (a full batch: more may wait) and when the next
// scheduled row and recurring tick are due. The rows of
// one topic go in order: a row that must be retried holds back the
// later rows of its topic, in this batch (skipped) and in later ones (the
// pending query); other topics go on. A parked row holds back nothing.
func (r Relay) forward(ctx context.Context, conn *pgx.Conn, q relayQueries, l *lease) (int, dueTimes, error) {
	sctx, cancel := r.stmt(ctx)
	defer cancel()
	rows, err := conn.Query(sctx, q.pending, r.BatchSize)
	if err != nil {
		return 0, dueTimes{}, fmt.Errorf("reading the outbox: %w", err)
	}
	var (
		batch []row
		next  dueTimes
	)
	for rows.Next() {
		var (
			id                 *int64
			top, uuid          *string
			body, md           []byte
			nextRow, nextRecur *float64
		)
		if err := rows.Scan(&id, &top, &uuid, &body, &md, &nextRow, &nextRecur); err != nil {
			rows.Close()
			return 0, dueTimes{}, fmt.Errorf("reading the outbox: %w", err)
		}
		if id == nil { // the next due times
			next = dueTimes{fromNow(nextRow), fromNow(nextRecur)}
			continue
		}
		x := row{id: *id, top: *top, msg: message.NewMessage(*uuid, body)}
		if err := json.Unmarshal(md, &x.msg.Metadata); err != nil {
			r.Logger.Error("outbox relay: unreadable metadata; forwarding without it", "id", x.id, "err", err)
		}
		batch = append(batch, x)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, dueTimes{}, fmt.Errorf("reading the outbox: %w", err)
	}
	n := len(batch)
	// The scheduled rows read are locked until they are marked, so that a
	// Cancel or Reschedule meanwhile waits and then finds them forwarded
	// (ErrScheduleNotFound) rather than succeeding on a message already on
	// its way; one cancelled or moved since the read is dropped.
	tx, batch, err := r.lockScheduled(ctx, conn, q, batch)
	if err != nil {
		return 0, dueTimes{}, err
	}
	if tx != nil {
		defer r.rollback(tx) // a no-op once committed
	}
	// A publish must not outlive the lease: past it a standby may lead.
	pctx, pcancel := context.WithDeadline(ctx, l.until())
	defer pcancel()
	var (
		sent []int64
		held = map[string]bool{} // topics with a row to retry in this batch
		down error               // the target is unreachable: stop the round
	)
	for start := 0; start < len(batch) && down == nil; {
		end := start + 1 // one Publish per run of the same topic
		for end < len(batch) && batch[end].top == batch[start].top {
			end++
		}
		run := batch[start:end]
		start = end
		if held[run[0].top] {
			continue
		}
		if !l.valid() {
			break // renew first
		}
		msgs := make([]*message.Message, len(run))
		for i, x := range run {
			x.msg.SetContext(pctx)
			msgs[i] = x.msg
		}
		err := r.Target.Publisher().Publish(run[0].top, msgs...)
		switch v := judge(err, msgs[0].Metadata.Get(envelope.KeyKind)); {
		case v == delivered:
			for _, x := range run {
				sent = append(sent, x.id)
			}
			continue
		case v == targetDown:
			down = err
			continue
		case len(run) == 1:
			if err := r.fail(ctx, conn, q, run[0], v, err); err != nil {
				return 0, dueTimes{}, err
			}
			held[run[0].top] = v == retryLater
			continue
		}
		// Find the row to blame, one at a time. The rows before it may have
		// been published by the failed Publish and are published again:
		// at-least-once allows it, and it happens only on a failure.
		for _, x := range run {
			if !l.valid() {
				break
			}
			err := r.Target.Publisher().Publish(x.top, x.msg)
			v := judge(err, x.msg.Metadata.Get(envelope.KeyKind))
			if v == delivered {
				sent = append(sent, x.id)
				continue
			}
			if v == targetDown {
				down = err
				break
			}
			if err := r.fail(ctx, conn, q, x, v, err); err != nil {
				return 0, dueTimes{}, err
			}
			if v == retryLater {
				held[x.top] = true
				break
			}
		}
	}
	if len(sent) > 0 {
		sctx, cancel := r.stmt(ctx)
		_, err := conn.Exec(sctx, q.done, sent)
		cancel()
		if err != nil {
			// Published but not marked: they will be forwarded again.
			return 0, dueTimes{}, fmt.Errorf("marking %d forwarded rows: %w", len(sent), err)
		}
	}
	if tx != nil {
		sctx, cancel := r.stmt(ctx)
		err := tx.Commit(sctx)
		cancel()
		if err != nil {
			return 0, dueTimes{}, fmt.Errorf("marking %d forwarded rows: %w", len(sent), err)
		}
	}
	if down != nil {
		r.Logger.Warn("outbox relay: target unreachable; retrying", "err", down, "in", r.LeaderPoll)
		if !sleep(ctx, r.LeaderPoll) {
			return 0, dueTimes{}, ctx.Err()
		}
	}
	return n, next, nil
}

// lockScheduled begins a transaction on conn and locks in it the scheduled
// rows of batch that still wait and are due, if batch has any; it returns
// the transaction (nil: none) and batch without the scheduled rows it did
// not lock. The statements that follow on conn (fail, done) run in it.
func (r Relay) lockScheduled(ctx context.Context, conn *pgx.Conn, q relayQueries, batch []row) (pgx.Tx, []row, error) {
	var ids []int64
	for _, x := range batch {
		if x.msg.Metadata.Get(envelope.KeyScheduledFor) != "" {
			ids = append(ids, x.id)
		}
	}
	if len(ids) == 0 {
		return nil, batch, nil
	}
	sctx, cancel := r.stmt(ctx)
	defer cancel()
	tx, err := conn.Begin(sctx)
	if err != nil {
		return nil, nil, fmt.Errorf("locking the due scheduled rows: %w", err)
	}
	rows, err := tx.Query(sctx, q.lock, ids)
	var locked []int64
	if err == nil {
		locked, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	}
	if err != nil {
		r.rollback(tx)
		return nil, nil, fmt.Errorf("locking the due scheduled rows: %w", err)
	}
	keep := make(map[int64]bool, len(locked))
	for _, id := range locked {
		keep[id] = true
	}
	return tx, slices.DeleteFunc(batch, func(x row) bool {
		return x.msg.Metadata.Get(envelope.KeyScheduledFor) != "" && !keep[x.id]
	}), nil
}

// rollback ends tx, bounded like a statement even when the round's
// context has ended.
func (r Relay) rollback(tx pgx.Tx) {
	ctx, cancel := r.stmt(context.Background())
	defer cancel()
	_ = tx.Rollback(ctx)
}

// fail records a refused row: parked, or to retry after a backoff.
func (r Relay) fail(ctx context.Context, conn *pgx.Conn, q relayQueries, x row, v verdict, perr error) error {
	text := errorText(perr)
	sctx, cancel := r.stmt(ctx)
	defer cancel()
	var err error
	if v == parkIt {
		r.Logger.Error("outbox relay: the target refused the message for good; parked (see `switchboard outbox failed`, then `outbox retry`)",
			"id", x.id, "topic", x.top, "message_id", x.msg.UUID, "err", perr)
		_, err = conn.Exec(sctx, q.park, x.id, text)
	} else {
		r.Logger.Warn("outbox relay: publish failed; the row and the later ones of its topic wait for a retry",
			"id", x.id, "topic", x.top, "message_id", x.msg.UUID, "err", perr)
		_, err = conn.Exec(sctx, q.retry, x.id, r.RetryBackoff.Seconds(), r.MaxRetryBackoff.Seconds(), text)
	}
	if err != nil {
		return fmt.Errorf("recording the failure of row %d: %w", x.id, err)
	}
	return nil
}

// errorText is perr's text as last_error can hold it: valid UTF-8 without
// NUL (PostgreSQL's text refuses both, and a failure to record the refusal
// would end the relay's session, round after round, forwarding nothing),
// at most maxErrorText bytes, cut between characters.
func errorText(perr error) string {
	text := strings.ToValidUTF8(strings.ReplaceAll(perr.Error(), "\x00", ""), "\uFFFD")
	if len(text) > maxErrorText {
		cut := maxErrorText
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut]
	}
	return text
}

// Stats describes the outbox's backlog.
type Stats struct {
	// Backlog is the number of rows waiting to be forwarded (Retrying
	// included, Parked not, scheduled rows once due).
	Backlog int64
	// OldestAge is how long the oldest row of the backlog has waited since
	// it was written or, for a scheduled row, since it was due (zero when
	// the backlog is empty).
	OldestAge time.Duration
	// Retrying is the number of rows of the backlog the target refused and
	// that wait for their next attempt; each holds back the later rows of
	// its topic.
	Retrying int64
	// Parked is the number of rows the target refused for good, set aside
	// until retried by hand (Retry).
	Parked int64
	// Scheduled is the number of scheduled rows not due yet (not in the
	// backlog).
	Scheduled int64
}

// ReadStats reads the backlog of schema's outbox.
func ReadStats(ctx context.Context, db *sql.DB, schema string) (Stats, error) {
	qs, err := quote(schema)
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	var age sql.NullFloat64
	err = db.QueryRowContext(ctx, `SELECT
			count(*) FILTER (WHERE parked_at IS NULL AND due),
			extract(epoch FROM now() - min(greatest(created_at, deliver_at)) FILTER (WHERE parked_at IS NULL AND due)),
			count(*) FILTER (WHERE parked_at IS NULL AND due AND retry_at IS NOT NULL),
			count(*) FILTER (WHERE parked_at IS NOT NULL),
			count(*) FILTER (WHERE parked_at IS NULL AND NOT due)
		FROM (SELECT *, coalesce(deliver_at <= now(), true) AS due FROM `+qs+`.outbox WHERE forwarded_at IS NULL) o`).
		Scan(&s.Backlog, &age, &s.Retrying, &s.Parked, &s.Scheduled)
	if err != nil {
		return Stats{}, fmt.Errorf("outbox: reading stats: %w", err)
	}
	if age.Valid {
		s.OldestAge = time.Duration(age.Float64 * float64(time.Second))
	}
	return s, nil
}

// FailedRow is an outbox row the target refused: parked, or waiting for its
// next attempt.
type FailedRow struct {
	// ID is the row's id, for Retry.
	ID int64
	// Topic is the message's topic.
	Topic string
	// MessageID is the message's id (its UUID).
	MessageID string
	// Attempts is how many times the target refused it.
	Attempts int
	// CreatedAt is when the message was written to the outbox.
	CreatedAt time.Time
	// ParkedAt is when it was parked (zero for a row waiting for a retry).
	ParkedAt time.Time
	// RetryAt is its next attempt (zero for a parked row).
	RetryAt time.Time
	// LastError is the target's last refusal.
	LastError string
}

// MaxListed bounds ListFailed.
const MaxListed = 1000

// ListFailed returns up to limit (at most MaxListed) rows of schema's outbox
// the target refused and that are not forwarded yet, parked ones first, in
// id order. A row retried by hand (Retry) stays listed, with neither
// ParkedAt nor RetryAt, until it is forwarded or refused again.
func ListFailed(ctx context.Context, db *sql.DB, schema string, limit int) ([]FailedRow, error) {
	qs, err := quote(schema)
	if err != nil {
		return nil, err
	}
	if limit <= 0 || limit > MaxListed {
		limit = MaxListed
	}
	rows, err := db.QueryContext(ctx, `SELECT id, topic, uuid, attempts, created_at, parked_at, retry_at, coalesce(last_error, '')
		FROM `+qs+`.outbox WHERE forwarded_at IS NULL AND attempts > 0
		ORDER BY parked_at IS NULL, id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox: listing failed rows: %w", err)
	}
	defer rows.Close()
	var out []FailedRow
	for rows.Next() {
		var (
			f               FailedRow
			parked, retryAt sql.NullTime
		)
		if err := rows.Scan(&f.ID, &f.Topic, &f.MessageID, &f.Attempts, &f.CreatedAt, &parked, &retryAt, &f.LastError); err != nil {
			return nil, fmt.Errorf("outbox: listing failed rows: %w", err)
		}
		f.ParkedAt, f.RetryAt = parked.Time, retryAt.Time
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: listing failed rows: %w", err)
	}
	return out, nil
}

// Retry makes the given parked or waiting rows of schema's outbox
// deliverable at the relay's next round and returns how many it changed.
// A row the target refuses again fails again. RetryAll does it for every
// such row; Retry with no ids changes none.
func Retry(ctx context.Context, db *sql.DB, schema string, ids ...int64) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	return retry(ctx, db, schema, ` AND id = ANY($1)`, ids)
}

// RetryAll is Retry for every parked or waiting row of schema's outbox.
func RetryAll(ctx context.Context, db *sql.DB, schema string) (int64, error) {
	return retry(ctx, db, schema, ``)
}

func retry(ctx context.Context, db *sql.DB, schema, cond string, args ...any) (int64, error) {
	qs, err := quote(schema)
	if err != nil {
		return 0, err
	}
	res, err := db.ExecContext(ctx, `UPDATE `+qs+`.outbox SET parked_at = NULL, retry_at = NULL
		WHERE forwarded_at IS NULL AND (parked_at IS NOT NULL OR retry_at IS NOT NULL)`+cond, args...)
	if err != nil {
		return 0, fmt.Errorf("outbox: retrying rows: %w", err)
	}
	return res.RowsAffected()
}

// Discard deletes the given rows of schema's outbox, but only those the
// relay has failed to forward (parked, or waiting for a retry), and returns
// how many it deleted. It is how an operator gives up on a message for
// good, for instance a command to a service version retired for ever: the
// message is lost by decision, so ids are required and there is no "all".
func Discard(ctx context.Context, db *sql.DB, schema string, ids ...int64) (int64, error) {
	if len(ids) == 0 {
		return 0, errors.New("outbox: Discard needs the ids of the rows to delete")
	}
	qs, err := quote(schema)
	if err != nil {
		return 0, err
	}
	res, err := db.ExecContext(ctx, `DELETE FROM `+qs+`.outbox
		WHERE id = ANY($1) AND forwarded_at IS NULL AND (parked_at IS NOT NULL OR retry_at IS NOT NULL)`, ids)
	if err != nil {
		return 0, fmt.Errorf("outbox: discarding rows: %w", err)
	}
	return res.RowsAffected()
}

// RegisterMetrics publishes the backlog of schema's outbox as OpenTelemetry
// gauges, read from db at each collection: switchboard.outbox.backlog
// (rows), switchboard.outbox.oldest_age (s), switchboard.outbox.retrying
// and switchboard.outbox.parked (rows). A nil mp means the global provider.
func RegisterMetrics(mp metric.MeterProvider, db *sql.DB, schema string) error {
	if _, err := quote(schema); err != nil {
		return err
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter("github.com/switchboard-go/switchboard/outbox")
	backlog, err := m.Int64ObservableGauge("switchboard.outbox.backlog", metric.WithUnit("{message}"),
		metric.WithDescription("Outbox rows waiting to be forwarded"))
	if err != nil {
		return err
	}
	age, err := m.Float64ObservableGauge("switchboard.outbox.oldest_age", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest outbox row waiting to be forwarded"))
	if err != nil {
		return err
	}
	retrying, err := m.Int64ObservableGauge("switchboard.outbox.retrying", metric.WithUnit("{message}"),
		metric.WithDescription("Outbox rows the target refused, waiting for their next attempt"))
	if err != nil {
		return err
	}
	parked, err := m.Int64ObservableGauge("switchboard.outbox.parked", metric.WithUnit("{message}"),
		metric.WithDescription("Outbox rows the target refused for good, waiting to be retried by hand"))
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
		o.ObserveInt64(retrying, s.Retrying)
		o.ObserveInt64(parked, s.Parked)
		return nil
	}, backlog, age, retrying, parked)
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
