package workflow

import (
	"context"
	"crypto/md5"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/switchboard-go/switchboard/engine"
)

// runner claims and executes the runs of the workflows registered on one
// service.
type runner struct {
	st    settings
	runs  runStore // where executions keep their runs
	clock clock    // the executions' time
	defs  map[string]*definition
	names []string
	owner string
	kick  chan struct{} // a slot freed or a run was started here: claim now
	slots chan struct{} // one per run being executed
	wg    sync.WaitGroup
	// stopping is set, and halt closed, when the engine begins to stop:
	// runs being executed halt at their next step boundary (or retry
	// wait) and give their lease back.
	stopping atomic.Bool
	halt     chan struct{}
	// mu guards execCtx and the start of executions against the stop.
	mu      sync.Mutex
	execCtx context.Context // the executions' context; nil until run starts
}

func newRunner(st settings, defs map[string]*definition) *runner {
	r := &runner{
		st:    st,
		clock: realClock{},
		defs:  defs,
		kick:  make(chan struct{}, 1),
		slots: make(chan struct{}, st.concurrency),
		halt:  make(chan struct{}),
	}
	r.runs = pgRuns{db: r.st.db, q: &r.st.q, leaseTTL: r.st.leaseTTL, log: r.st.log}
	for id := range defs {
		r.names = append(r.names, id)
	}
	host, _ := os.Hostname()
	r.owner = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), uuid.NewString()[:8])
	return r
}

func (r *runner) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// run is the runner's loop, run by the engine (Service.Background) from its
// start to its stop. ctx ends when the engine begins to stop.
func (r *runner) run(ctx context.Context) error {
	log := r.st.log.With("runner", r.owner)
	execCtx, cancelExec := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelExec()
	r.mu.Lock()
	r.execCtx = execCtx
	r.mu.Unlock()
	notes := make(chan struct{}, 1)
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		r.listen(ctx, notes)
	}()
	var lastPurge time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for ctx.Err() == nil {
		delay := r.st.pollInterval
		// The slots are taken before the claim, so that every run claimed
		// is executed at once, its lease renewed: a start here meanwhile
		// finds them taken and leaves its run to a claim.
		if free := r.reserve(); free > 0 {
			claimed, next, err := r.claim(ctx, free)
			for _, x := range claimed {
				r.wg.Add(1)
				r.launch(x)
			}
			for range free - len(claimed) { // the slots the claim did not use
				<-r.slots
			}
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				log.Error("workflow: claiming runs", "err", err)
			}
			if next != nil && *next < delay {
				delay = max(*next, 0)
			}
			if len(claimed) == free {
				delay = 0 // there may be more
			}
		}
		if time.Since(lastPurge) > time.Hour {
			lastPurge = time.Now()
			if _, err := r.st.db.ExecContext(ctx, r.st.q.purgeSignals, r.st.retention.Microseconds()); err != nil && ctx.Err() == nil {
				log.Warn("workflow: purging old signals", "err", err)
			}
		}
		if delay == 0 {
			continue
		}
		timer.Reset(delay)
		select {
		case <-ctx.Done():
		case <-r.kick:
		case <-notes:
		case <-timer.C:
		}
		timer.Stop()
	}
	// The engine stops: runs being executed end their current step, up to
	// the drain timeout, then give their lease back.
	r.mu.Lock()
	r.stopping.Store(true)
	close(r.halt)
	r.mu.Unlock()
	stopTimer := time.AfterFunc(drainTimeout(ctx, r.st.leaseTTL), cancelExec)
	r.wg.Wait()
	stopTimer.Stop()
	<-listening
	return nil
}

// reserve takes every free slot, without waiting, and returns how many it
// took.
func (r *runner) reserve() int {
	n := 0
	for n < cap(r.slots) {
		select {
		case r.slots <- struct{}{}:
			n++
		default:
			return n
		}
	}
	return n
}

// drainTimeout is how long runs being executed may go on once the engine
// in ctx begins to stop: LeaseTTL/3, and no longer than the engine's
// DrainTimeout (Stop waits that long for the runner) less a margin for
// giving the runs back: a tenth of it, at least drainMargin.
func drainTimeout(ctx context.Context, leaseTTL time.Duration) time.Duration {
	d := leaseTTL / 3
	if eng, ok := engine.EngineFrom(ctx); ok {
		t := eng.DrainTimeout()
		d = min(d, max(t-max(t/10, drainMargin), 0))
	}
	return d
}

// drainMargin is the least time drainTimeout leaves, within the engine's
// DrainTimeout, for runs to be given back after their context ended.
const drainMargin = 50 * time.Millisecond

// launch executes x on a goroutine of its own; the caller took a slot and
// added it to r.wg.
func (r *runner) launch(x *claimed) {
	go func() {
		defer r.wg.Done()
		defer func() { <-r.slots; r.wake() }()
		r.execute(r.execCtx, x)
	}()
}

// notifyChannel is the channel of migration 8's trigger for schema.
func notifyChannel(schema string) string {
	sum := md5.Sum([]byte(schema))
	return "workflow_" + hex.EncodeToString(sum[:])
}

// listen LISTENs for runs made runnable and signals notes, until ctx ends.
// Without the pgx driver (or while the connection is down) the runner
// polls.
func (r *runner) listen(ctx context.Context, notes chan<- struct{}) {
	for ctx.Err() == nil {
		err := r.listenOnce(ctx, notes)
		if ctx.Err() != nil {
			return
		}
		r.st.log.Warn("workflow: listening for runnable runs; polling meanwhile", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(max(r.st.pollInterval, time.Second)):
		}
	}
}

var errNotPgx = errors.New("the database driver is not pgx's stdlib: polling only")

func (r *runner) listenOnce(ctx context.Context, notes chan<- struct{}) error {
	conn, err := r.st.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			<-ctx.Done()
			return errNotPgx
		}
		pc := sc.Conn()
		if _, err := pc.Exec(ctx, `LISTEN "`+notifyChannel(r.st.raw)+`"`); err != nil {
			return err
		}
		defer func() {
			if !pc.IsClosed() {
				uctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				_, _ = pc.Exec(uctx, `UNLISTEN *`)
			}
		}()
		for {
			if _, err := pc.WaitForNotification(ctx); err != nil {
				return err
			}
			select {
			case notes <- struct{}{}:
			default:
			}
		}
	})
}

// claimed is a run the runner took.
type claimed struct {
	id, workflow    string
	input, metadata []byte
	fence           int64
	cancelRequested bool
	dbNow, localNow time.Time
	history         []stepRecord
	gap             int // the first seq missing before a recorded one (an operator's deletion)
}

// stepRecord is a recorded step.
type stepRecord struct {
	seq      int
	kind     string
	name     string
	result   []byte
	err      *engine.Error
	attempts int
	dueAt    *time.Time
	pending  bool // an await not resolved yet
}

// claim takes up to n runnable runs, with their history, in two round
// trips, and returns the delay until the next one it could take (nil:
// none).
func (r *runner) claim(ctx context.Context, n int) ([]*claimed, *time.Duration, error) {
	sent := time.Now()
	rows, err := r.st.db.QueryContext(ctx, r.st.q.claim, r.names, n, r.owner, r.st.leaseTTL.Microseconds())
	if err != nil {
		return nil, nil, fmt.Errorf("workflow: claim: %w", err)
	}
	var out []*claimed
	var next *time.Duration
	byID := map[string]*claimed{}
	for rows.Next() {
		var (
			id, wf       sql.NullString
			input, meta  []byte
			fence        sql.NullInt64
			cancel       sql.NullBool
			dbNow        sql.NullTime
			delaySeconds sql.NullFloat64
		)
		if err := rows.Scan(&id, &wf, &input, &meta, &fence, &cancel, &dbNow, &delaySeconds); err != nil {
			_ = rows.Close()
			return nil, nil, fmt.Errorf("workflow: claim: %w", err)
		}
		if !id.Valid {
			if delaySeconds.Valid {
				d := time.Duration(delaySeconds.Float64 * float64(time.Second))
				next = &d
			}
			continue
		}
		c := &claimed{id: id.String, workflow: wf.String, input: input, metadata: meta, fence: fence.Int64, cancelRequested: cancel.Bool, dbNow: dbNow.Time, localNow: time.Now()}
		out = append(out, c)
		byID[c.id] = c
	}
	if err := rows.Close(); err != nil {
		return nil, nil, fmt.Errorf("workflow: claim: %w", err)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("workflow: claim: %w", err)
	}
	if len(out) == 0 {
		return nil, next, nil
	}
	ids := make([]string, len(out))
	for i, c := range out {
		ids[i] = c.id
	}
	hist, err := r.st.db.QueryContext(ctx, r.st.q.history, ids)
	if err != nil {
		r.releaseAll(out)
		return nil, next, fmt.Errorf("workflow: reading the history of %d runs: %w", len(out), err)
	}
	defer hist.Close()
	for hist.Next() {
		var (
			runID string
			s     stepRecord
			errJS []byte
			due   sql.NullTime
		)
		if err := hist.Scan(&runID, &s.seq, &s.kind, &s.name, &s.result, &errJS, &s.attempts, &due); err != nil {
			r.releaseAll(out)
			return nil, next, fmt.Errorf("workflow: reading history: %w", err)
		}
		if len(errJS) > 0 {
			s.err = &engine.Error{}
			if err := json.Unmarshal(errJS, s.err); err != nil {
				s.err = &engine.Error{Code: http.StatusInternalServerError, Reason: "internal", Message: "unreadable recorded error"}
			}
		}
		if due.Valid {
			t := due.Time
			s.dueAt = &t
		}
		s.pending = s.kind == kindAwait && s.result == nil && s.err == nil
		c := byID[runID]
		if c.gap != 0 {
			continue
		}
		if s.seq != len(c.history)+1 {
			c.gap = len(c.history) + 1 // executed as a stop: see execute
			continue
		}
		c.history = append(c.history, s)
	}
	if err := hist.Err(); err != nil {
		r.releaseAll(out)
		return nil, next, fmt.Errorf("workflow: reading history: %w", err)
	}
	// The leases run from the claim statement's start: after a claim
	// slower than the renewal interval they may be about to lapse, or
	// have lapsed and been taken by another runner. Renew them first.
	if time.Since(sent) > r.st.leaseTTL/3 {
		out = r.renewAll(ctx, out)
	}
	return out, next, nil
}

// renewAll renews the leases of runs claimed but not executed yet, and
// returns those still this runner's; it gives back those it could not
// renew.
func (r *runner) renewAll(ctx context.Context, cs []*claimed) []*claimed {
	kept := cs[:0]
	for _, c := range cs {
		switch err := r.runs.renew(ctx, c); {
		case err == nil:
			kept = append(kept, c)
		case errors.Is(err, errLeaseLost):
			r.st.log.Warn("workflow: the claim was slower than the lease: another runner has the run", "run_id", c.id)
		default:
			r.st.log.Warn("workflow: renewing the lease of a slow claim; run given back", "run_id", c.id, "err", err)
			r.runs.release(c.id, c.fence, r.st.pollInterval)
		}
	}
	return kept
}

// releaseAll gives back runs claimed but not executed.
func (r *runner) releaseAll(cs []*claimed) {
	for _, c := range cs {
		r.runs.release(c.id, c.fence, r.st.pollInterval)
	}
}

// runMeta is what a run keeps of the Meta of the message that started it.
type runMeta struct {
	CorrelationID string `json:"correlation_id,omitempty"`
	Traceparent   string `json:"traceparent,omitempty"`
	Tracestate    string `json:"tracestate,omitempty"`
	PrincipalID   string `json:"principal_id,omitempty"`
	TenantID      string `json:"tenant_id,omitempty"`
}

// start is the handler of a workflow's start command.
func (r *runner) start(ctx context.Context, d *definition, in startIn) (string, error) {
	if err := validRunID(in.RunID); err != nil {
		return "", err
	}
	if err := d.checkInput(in.Input); err != nil {
		return "", err
	}
	m := engine.MetaFrom(ctx)
	meta, err := json.Marshal(runMeta{CorrelationID: m.CorrelationID, Traceparent: m.Traceparent, Tracestate: m.Tracestate, PrincipalID: m.PrincipalID, TenantID: m.TenantID})
	if err != nil {
		return "", err
	}
	if ok, err := r.startHere(ctx, d, in, meta); ok || err != nil {
		return in.RunID, err
	}
	// Not cut by the caller's deadline, as startHere's insert is not: a
	// start that reached the database is stored either way, and the caller's
	// retry with the same run id finds it.
	res, err := r.st.db.ExecContext(context.WithoutCancel(ctx), r.st.q.insertRun, in.RunID, d.id, []byte(in.Input), string(meta))
	if err != nil {
		return "", fmt.Errorf("workflow %s: storing run %s: %w", d.id, in.RunID, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		r.wake()
		return in.RunID, nil
	}
	var wf, tenant string
	if err := r.st.db.QueryRowContext(ctx, r.st.q.runWorkflow, in.RunID).Scan(&wf, &tenant); err != nil {
		return "", fmt.Errorf("workflow %s: reading run %s: %w", d.id, in.RunID, err)
	}
	if tenant != m.TenantID { // whose run it is is not the caller's business
		return "", &engine.Error{Code: http.StatusConflict, Reason: "run_id_taken", Message: fmt.Sprintf("run id %s is taken", in.RunID)}
	}
	if wf != d.id {
		return "", &engine.Error{Code: http.StatusConflict, Reason: "run_id_taken", Message: fmt.Sprintf("run %s is a run of workflow %s, not %s", in.RunID, wf, d.id)}
	}
	return in.RunID, nil // the same run: idempotent
}

// startHere inserts the run already claimed by this runner and executes it,
// when a slot is free: no notification, claim or history read. It returns
// false, having done nothing, when no slot is free, the runner is not
// running, or the run exists.
func (r *runner) startHere(ctx context.Context, d *definition, in startIn, meta []byte) (bool, error) {
	r.mu.Lock()
	if r.execCtx == nil || r.stopping.Load() {
		r.mu.Unlock()
		return false, nil
	}
	select {
	case r.slots <- struct{}{}:
	default:
		r.mu.Unlock()
		return false, nil
	}
	r.wg.Add(1)
	r.mu.Unlock()
	// Not cut by the caller: a run inserted with no execution would wait
	// for its lease to expire. (A database failure after the commit still
	// may: the run then starts after LeaseTTL.)
	var dbNow time.Time
	err := r.st.db.QueryRowContext(context.WithoutCancel(ctx), r.st.q.insertClaimed, in.RunID, d.id, []byte(in.Input), string(meta), r.owner, r.st.leaseTTL.Microseconds()).Scan(&dbNow)
	if err != nil {
		<-r.slots
		r.wg.Done()
		if errors.Is(err, sql.ErrNoRows) { // it exists
			return false, nil
		}
		return false, fmt.Errorf("workflow %s: storing run %s: %w", d.id, in.RunID, err)
	}
	r.launch(&claimed{id: in.RunID, workflow: d.id, input: in.Input, metadata: meta, fence: 1, dbNow: dbNow, localNow: time.Now()})
	return true, nil
}

// waitMax is how long the wait command waits for a run to end.
const waitMax = 10 * time.Second

// waitPoll is how often the wait command reads the run's status.
const waitPoll = 50 * time.Millisecond

// wait is the handler of a workflow's wait command: the run's outcome, once
// it ended or after waitMax (or before the caller's deadline, but after one
// poll at least), polling every waitPoll. A run of another workflow or another tenant is not found.
func (r *runner) wait(ctx context.Context, d *definition, id string) (waitOut, error) {
	if err := validRunID(id); err != nil {
		return waitOut{}, err
	}
	now := time.Now()
	until := now.Add(waitMax)
	if dl, ok := ctx.Deadline(); ok && dl.Add(-200*time.Millisecond).Before(until) {
		until = dl.Add(-200 * time.Millisecond)
	}
	// At least one poll, whatever the deadline: a caller whose CallTimeout
	// is under the margin would otherwise be answered "running" at once and
	// ask again at once, a busy loop for as long as the run runs.
	until = later(until, now.Add(waitPoll))
	caller := engine.MetaFrom(ctx).TenantID
	tick := time.NewTicker(waitPoll)
	defer tick.Stop()
	for {
		var (
			wf, tenant, status string
			output             []byte
			errJS              []byte
		)
		err := r.st.db.QueryRowContext(ctx, r.st.q.waitRun, id).Scan(&wf, &tenant, &status, &output, &errJS)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && (wf != d.id || tenant != caller)) {
			return waitOut{}, &engine.Error{Code: http.StatusNotFound, Reason: "run_not_found", Message: fmt.Sprintf("workflow %s has no run %s", d.id, id)}
		}
		if err != nil {
			return waitOut{}, fmt.Errorf("workflow %s: reading run %s: %w", d.id, id, err)
		}
		if status != statusRunning || !time.Now().Before(until) {
			out := waitOut{Status: status, Output: output}
			if len(errJS) > 0 {
				out.Error = &engine.Error{}
				if err := json.Unmarshal(errJS, out.Error); err != nil {
					return waitOut{}, fmt.Errorf("workflow %s: run %s: reading its error: %w", d.id, id, err)
				}
			}
			return out, nil
		}
		select {
		case <-ctx.Done():
			return waitOut{}, ctx.Err()
		case <-tick.C:
		}
	}
}

// signal stores a correlated event and wakes the runs awaiting it, under
// the lock an Await takes when it suspends.
func (r *runner) signal(ctx context.Context, event, key, messageID string, payload []byte) error {
	tx, err := r.st.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("workflow: storing event %s: %w", event, err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, r.st.q.lock, event, key); err != nil {
		return fmt.Errorf("workflow: storing event %s: %w", event, err)
	}
	if _, err := tx.ExecContext(ctx, r.st.q.signal, event, key, messageID, payload); err != nil {
		return fmt.Errorf("workflow: storing event %s: %w", event, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("workflow: storing event %s: %w", event, err)
	}
	return nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
