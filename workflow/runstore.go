package workflow

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"time"

	"github.com/switchboard-go/switchboard/engine"
)

// runStore is where an execution keeps its run: the steps it records, its
// suspensions and end, and the signals its Awaits read. pgRuns is the
// runner's (the tables of migration 8); simRuns keeps one run in memory
// for package workflowtest. Every method that writes on behalf of the run
// returns errLeaseLost when the run's fence is no longer c's: another
// runner has it, and nothing was written.
type runStore interface {
	// checkpoint records new step s, begun at started, and renews the
	// lease; it returns whether a cancellation is requested.
	checkpoint(ctx context.Context, c *claimed, s stepRecord, started time.Time) (cancel bool, err error)
	// suspend records sleep step s and gives the run back until its due
	// time.
	suspend(ctx context.Context, c *claimed, s stepRecord, started time.Time) error
	// resolve completes the await recorded at seq with payload or we; it
	// returns whether a cancellation is requested.
	resolve(ctx context.Context, c *claimed, seq int, payload []byte, we *engine.Error) (cancel bool, err error)
	// park gives the run back until due.
	park(ctx context.Context, c *claimed, due time.Time) error
	// signalFor returns the first stored event of that name and key.
	signalFor(ctx context.Context, event, key string) (payload []byte, found bool, err error)
	// parkAwaiting gives the run back until the event comes or due, unless
	// the event is stored already (found: nothing was changed).
	parkAwaiting(ctx context.Context, c *claimed, due time.Time, event, key string) (found bool, err error)
	// finish records the run's end.
	finish(ctx context.Context, c *claimed, status string, out []byte, we *engine.Error) error
	// stop records the run's stop for an operator.
	stop(ctx context.Context, c *claimed, we *engine.Error) error
	// renew renews the lease of a run being executed.
	renew(ctx context.Context, c *claimed) error
	// cancelRequested renews the lease of a run being executed and
	// returns whether a cancellation is requested (at a short Sleep's
	// end, between a step's retries).
	cancelRequested(ctx context.Context, c *claimed) (bool, error)
	// release gives the run back, runnable after delay; a failure is
	// logged (the lease expires instead).
	release(id string, fence int64, delay time.Duration)
}

// errLeaseLost: the run's fence is no longer the runner's.
var errLeaseLost = errors.New("workflow: the run's lease was lost")

// pgRuns is the runStore of the runner: the tables of migration 8.
type pgRuns struct {
	db       *sql.DB
	q        *queries
	leaseTTL time.Duration
	log      *slog.Logger
}

// affected is errLeaseLost when a fenced statement changed no row.
func affected(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errLeaseLost
	}
	return nil
}

func (p pgRuns) checkpoint(ctx context.Context, c *claimed, s stepRecord, started time.Time) (bool, error) {
	var cancel bool
	err := p.db.QueryRowContext(ctx, p.q.checkpoint, c.id, c.fence, p.leaseTTL.Microseconds(),
		s.seq, s.kind, s.name, s.result, errorJSON(s.err), s.attempts, s.dueAt, started).Scan(&cancel)
	if errors.Is(err, sql.ErrNoRows) {
		return false, errLeaseLost
	}
	return cancel, err
}

func (p pgRuns) suspend(ctx context.Context, c *claimed, s stepRecord, started time.Time) error {
	return affected(p.db.ExecContext(ctx, p.q.suspend, c.id, c.fence, p.leaseTTL.Microseconds(),
		s.seq, s.kind, s.name, s.result, errorJSON(s.err), s.attempts, s.dueAt, started))
}

func (p pgRuns) resolve(ctx context.Context, c *claimed, seq int, payload []byte, we *engine.Error) (bool, error) {
	var cancel bool
	err := p.db.QueryRowContext(ctx, p.q.resolve, c.id, c.fence, p.leaseTTL.Microseconds(), seq, payload, errorJSON(we)).Scan(&cancel)
	if errors.Is(err, sql.ErrNoRows) {
		return false, errLeaseLost
	}
	return cancel, err
}

func (p pgRuns) park(ctx context.Context, c *claimed, due time.Time) error {
	return affected(p.db.ExecContext(ctx, p.q.awaitSuspend, c.id, c.fence, due, nil, nil))
}

func (p pgRuns) signalFor(ctx context.Context, event, key string) ([]byte, bool, error) {
	var payload []byte
	err := p.db.QueryRowContext(ctx, p.q.signalFor, event, key).Scan(&payload)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	return payload, err == nil, err
}

// parkAwaiting takes the lock the signal's handler takes (runner.signal),
// so that an event stored meanwhile is seen here or wakes the run.
func (p pgRuns) parkAwaiting(ctx context.Context, c *claimed, due time.Time, event, key string) (bool, error) {
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, p.q.lock, event, key); err != nil {
		return false, err
	}
	var payload []byte
	err = tx.QueryRowContext(ctx, p.q.signalFor, event, key).Scan(&payload)
	if err == nil {
		return true, nil // it came: read it
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return false, err
	}
	if err := affected(tx.ExecContext(ctx, p.q.awaitSuspend, c.id, c.fence, due, event, key)); err != nil {
		return false, err
	}
	return false, tx.Commit()
}

func (p pgRuns) finish(ctx context.Context, c *claimed, status string, out []byte, we *engine.Error) error {
	return affected(p.db.ExecContext(ctx, p.q.finish, c.id, c.fence, status, out, errorJSON(we)))
}

func (p pgRuns) stop(ctx context.Context, c *claimed, we *engine.Error) error {
	return affected(p.db.ExecContext(ctx, p.q.stop, c.id, c.fence, errorJSON(we)))
}

func (p pgRuns) renew(ctx context.Context, c *claimed) error {
	_, err := p.cancelRequested(ctx, c)
	return err
}

func (p pgRuns) cancelRequested(ctx context.Context, c *claimed) (bool, error) {
	var cancel bool
	err := p.db.QueryRowContext(ctx, p.q.renew, c.id, c.fence, p.leaseTTL.Microseconds()).Scan(&cancel)
	if errors.Is(err, sql.ErrNoRows) {
		return false, errLeaseLost
	}
	return cancel, err
}

// release gives a run back, runnable after delay: at once when the engine
// stops, after PollInterval when the database failed (not in a loop).
func (p pgRuns) release(id string, fence int64, delay time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.db.ExecContext(ctx, p.q.release, id, fence, delay.Microseconds()); err != nil {
		p.log.Warn("workflow: releasing a run (its lease will expire instead)", "run_id", id, "err", err)
	}
}

// clock is the execution's time: its now, and its waits (a short Sleep, a
// retry's backoff). realClock is the runner's; workflowtest's moves only
// when the run waits.
type clock interface {
	now() time.Time
	// wait returns after d, or once ctx ends or stop is closed (a nil
	// stop is never closed).
	wait(ctx context.Context, stop <-chan struct{}, d time.Duration)
}

type realClock struct{}

func (realClock) now() time.Time { return time.Now() }

func (realClock) wait(ctx context.Context, stop <-chan struct{}, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-stop:
	case <-timer.C:
	}
}
