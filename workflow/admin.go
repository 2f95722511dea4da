package workflow

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/migrations"
)

// The operations on runs (List, Show, Cancel, Retry) work on the tables of
// migration 0008 in a schema, without a Store or an engine: the CLI
// (switchboard workflow list|show|cancel|retry) uses them with just a
// database.

// MaxListed bounds Filter.Limit, and the steps Show returns.
const MaxListed = 1000

// ErrRunNotFound: no run has that id (404, reason "run_not_found"), from
// Show, Cancel and Retry.
var ErrRunNotFound = &engine.Error{Code: http.StatusNotFound, Reason: "run_not_found", Message: "no such workflow run"}

// ErrRunFinished: the run has ended (completed, failed or cancelled), so
// it cannot be cancelled; or it cannot be retried: completed, cancelled,
// or failed after its compensations ran or were sent to their
// participants (409, reason "run_finished").
var ErrRunFinished = &engine.Error{Code: http.StatusConflict, Reason: "run_finished", Message: "workflow run finished"}

// Run is a workflow run as stored, for operators.
type Run struct {
	// ID is the run's id.
	ID string
	// Workflow is "<service>.v<version>.<name>".
	Workflow string
	// Status is running, completed, failed, cancelled or stopped.
	Status string
	// Input is the run's input and Output its result (nil until it
	// completes), as JSON: stored bytes that are not JSON are given as a
	// JSON string of them. List leaves both nil.
	Input, Output json.RawMessage
	// Error is the run's error (nil unless failed, cancelled or stopped).
	Error *engine.Error
	// CreatedAt is when the run was started, UpdatedAt when its row last
	// changed, FinishedAt when it ended (nil while running or stopped).
	CreatedAt, UpdatedAt time.Time
	FinishedAt           *time.Time
	// Claims is how many times a runner claimed the run.
	Claims int
	// Owner is the runner that holds or last held the run ("" if none).
	Owner string
	// WakeAt is when the run may next be claimed (nil once finished or
	// stopped).
	WakeAt *time.Time
	// CancelRequested is true once Cancel was called on the run: the
	// runner compensates and ends it cancelled.
	CancelRequested bool
	// AwaitingEvent and AwaitingKey are what an Await of the run waits for
	// ("" when it does not wait).
	AwaitingEvent, AwaitingKey string
	// Steps are the run's recorded steps in order (Show only): at most
	// MaxListed, the last ones when there are more (the first one's Seq is
	// then above 1).
	Steps []StepRecord
}

// StepRecord is one recorded step of a run.
type StepRecord struct {
	// Seq is the step's position in the run's history, from 1.
	Seq int
	// Kind is invoke, emit, step, sleep, await or compensate; Name the
	// command's or event's topic, the step's name, or the awaited
	// "<event>/<key>".
	Kind, Name string
	// Result is the step's result as JSON (see Run.Input), nil if none.
	Result json.RawMessage
	// Error is the step's error, nil if it succeeded.
	Error *engine.Error
	// Attempts is how many times the step was tried.
	Attempts int
	// DueAt is a sleep's or an await's due time.
	DueAt *time.Time
	// StartedAt and FinishedAt bound the step's execution.
	StartedAt, FinishedAt time.Time
}

// Filter selects the runs List returns.
type Filter struct {
	// Workflow keeps the runs of that workflow ("<service>.v<version>.<name>");
	// "" keeps all.
	Workflow string
	// Status keeps the runs in that status (running, completed, failed,
	// cancelled, stopped); "" keeps all.
	Status string
	// Limit is how many runs at most: default 100, at most MaxListed.
	Limit int
}

// List returns the runs in schema's workflow_runs that f selects, newest
// first, without their input, output and steps (Show has them). An invalid
// schema, status or limit is an error.
func List(ctx context.Context, db *sql.DB, schema string, f Filter) ([]Run, error) {
	qs, err := migrations.Config{Schema: schema}.Quoted()
	if err != nil {
		return nil, err
	}
	switch f.Status {
	case "", "running", "completed", "failed", "cancelled", "stopped":
	default:
		return nil, fmt.Errorf("workflow: unknown status %q (want running, completed, failed, cancelled or stopped)", f.Status)
	}
	if len(f.Workflow) > 1000 { // longer than any workflow's name
		return nil, fmt.Errorf("workflow: filter's workflow name is %d bytes long", len(f.Workflow))
	}
	switch {
	case f.Limit == 0:
		f.Limit = 100
	case f.Limit < 0 || f.Limit > MaxListed:
		return nil, fmt.Errorf("workflow: limit %d out of range (1 to %d)", f.Limit, MaxListed)
	}
	q := `SELECT ` + adminRunColumns + ` FROM ` + qs + `.workflow_runs WHERE true`
	args := []any{f.Limit}
	if f.Workflow != "" {
		args = append(args, f.Workflow)
		q += fmt.Sprintf(` AND workflow = $%d`, len(args))
	}
	if f.Status != "" {
		args = append(args, f.Status)
		q += fmt.Sprintf(` AND status = $%d`, len(args))
	}
	rows, err := db.QueryContext(ctx, q+` ORDER BY created_at DESC, id LIMIT $1`, args...)
	if err != nil {
		return nil, fmt.Errorf("workflow: listing runs: %w", err)
	}
	defer rows.Close()
	var out []Run
	for rows.Next() {
		r, err := scanAdminRun(rows)
		if err != nil {
			return nil, fmt.Errorf("workflow: listing runs: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("workflow: listing runs: %w", err)
	}
	return out, nil
}

// adminRunColumns are the columns scanAdminRun reads.
const adminRunColumns = `id, workflow, status, error, created_at, updated_at, finished_at, claims,
	coalesce(owner, ''), wake_at, cancel_requested, coalesce(awaiting_event, ''), coalesce(awaiting_key, '')`

func scanAdminRun(s interface{ Scan(...any) error }, extra ...any) (Run, error) {
	var (
		r        Run
		errJSON  []byte
		finished sql.NullTime
		wake     sql.NullTime
	)
	dest := append([]any{&r.ID, &r.Workflow, &r.Status, &errJSON, &r.CreatedAt, &r.UpdatedAt, &finished, &r.Claims,
		&r.Owner, &wake, &r.CancelRequested, &r.AwaitingEvent, &r.AwaitingKey}, extra...)
	if err := s.Scan(dest...); err != nil {
		return Run{}, err
	}
	r.Error = adminStoredError(errJSON)
	r.FinishedAt = adminTime(finished)
	r.WakeAt = adminTime(wake)
	return r, nil
}

// Show returns the run id of schema's workflow_runs with its input, output
// and steps (the last MaxListed), read in one snapshot; ErrRunNotFound if
// there is none.
func Show(ctx context.Context, db *sql.DB, schema, id string) (Run, error) {
	qs, err := quotedFor(schema, id)
	if err != nil {
		return Run{}, err
	}
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return Run{}, fmt.Errorf("workflow: showing run %q: %w", id, err)
	}
	defer func() { _ = tx.Rollback() }() // read only: nothing to commit
	var input, output []byte
	r, err := scanAdminRun(tx.QueryRowContext(ctx, `SELECT `+adminRunColumns+`, input, output FROM `+qs+`.workflow_runs WHERE id = $1`, id), &input, &output)
	if errors.Is(err, sql.ErrNoRows) {
		return Run{}, fmt.Errorf("workflow: run %q: %w", id, ErrRunNotFound)
	}
	if err != nil {
		return Run{}, fmt.Errorf("workflow: showing run %q: %w", id, err)
	}
	r.Input, r.Output = adminStoredJSON(input), adminStoredJSON(output)
	rows, err := tx.QueryContext(ctx, `SELECT seq, kind, name, result, error, attempts, due_at, started_at, finished_at
		FROM `+qs+`.workflow_steps WHERE run_id = $1 ORDER BY seq DESC LIMIT $2`, id, MaxListed)
	if err != nil {
		return Run{}, fmt.Errorf("workflow: showing run %q: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			s               StepRecord
			result, errJSON []byte
			due             sql.NullTime
		)
		if err := rows.Scan(&s.Seq, &s.Kind, &s.Name, &result, &errJSON, &s.Attempts, &due, &s.StartedAt, &s.FinishedAt); err != nil {
			return Run{}, fmt.Errorf("workflow: showing run %q: %w", id, err)
		}
		s.Result, s.Error, s.DueAt = adminStoredJSON(result), adminStoredError(errJSON), adminTime(due)
		r.Steps = append(r.Steps, s)
	}
	if err := rows.Err(); err != nil {
		return Run{}, fmt.Errorf("workflow: showing run %q: %w", id, err)
	}
	slices.Reverse(r.Steps)
	return r, nil
}

// Cancel asks the run id of schema's workflow_runs to stop: the runner
// that executes it, or the next one to claim it (at once: its wake time is
// set to now), sees the request at its next step, runs the compensations
// and ends the run cancelled. A running run keeps its runner and lease. A
// stopped run (no runner holds it) is made running again, with a new
// fencing token, so that a runner compensates it; a run stopped because
// its history does not match the code stops again until the code matches.
// Cancelling a run already asked to cancel does nothing more. A run that
// has ended: ErrRunFinished; none: ErrRunNotFound.
func Cancel(ctx context.Context, db *sql.DB, schema, id string) error {
	qs, err := quotedFor(schema, id)
	if err != nil {
		return err
	}
	// prev reads the status before the update (the statement's snapshot).
	var (
		status  sql.NullString
		changed bool
	)
	err = db.QueryRowContext(ctx, `WITH prev AS (SELECT status FROM `+qs+`.workflow_runs WHERE id = $1),
		u AS (UPDATE `+qs+`.workflow_runs SET cancel_requested = true, wake_at = now(), updated_at = now(),
				fence = CASE WHEN status = 'stopped' THEN fence + 1 ELSE fence END,
				owner = CASE WHEN status = 'stopped' THEN NULL ELSE owner END,
				lease_until = CASE WHEN status = 'stopped' THEN NULL ELSE lease_until END,
				error = CASE WHEN status = 'stopped' THEN NULL ELSE error END,
				status = 'running'
			WHERE id = $1 AND status IN ('running', 'stopped') RETURNING 1)
		SELECT (SELECT status FROM prev), EXISTS (SELECT FROM u)`, id).Scan(&status, &changed)
	switch {
	case err != nil:
		return fmt.Errorf("workflow: cancelling run %q: %w", id, err)
	case changed:
		return nil
	case !status.Valid:
		return fmt.Errorf("workflow: run %q: %w", id, ErrRunNotFound)
	case status.String == "running" || status.String == "stopped":
		// It ended between the statement's snapshot and its update.
		return fmt.Errorf("workflow: run %q ended meanwhile: %w", id, ErrRunFinished)
	default:
		return fmt.Errorf("workflow: run %q is %s: %w", id, status.String, ErrRunFinished)
	}
}

// Retry resumes the run id of schema's workflow_runs that is stopped or
// failed: it is made running again (no error, wake time now, a new fencing
// token, so that no earlier runner can record anything) and resumes where
// it stopped, replaying its recorded steps. The records of the steps that
// failed are deleted, and every record after the first of them, so that
// they run again and the history stays the code's sequence; except once a
// compensation is recorded done or sent (sent: it kept failing and was
// handed to the participant's engine, its error's details say "sent":
// true): the run's earlier effects are being undone, so only the
// compensations that failed without being sent, and what follows the first
// of them, run again. A failed run whose compensations were all done or
// sent is over (ErrRunFinished, as completed and cancelled runs: start a
// new run): running a sent compensation again would run it under a new
// message id, which the participant's inbox does not know. A running run:
// an error matching engine.ErrConflict; none: ErrRunNotFound.
func Retry(ctx context.Context, db *sql.DB, schema, id string) error {
	qs, err := quotedFor(schema, id)
	if err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("workflow: retrying run %q: %w", id, err)
	}
	defer func() { _ = tx.Rollback() }() // after Commit, a no-op
	var status string
	err = tx.QueryRowContext(ctx, `SELECT status FROM `+qs+`.workflow_runs WHERE id = $1 FOR UPDATE`, id).Scan(&status)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("workflow: run %q: %w", id, ErrRunNotFound)
	case err != nil:
		return fmt.Errorf("workflow: retrying run %q: %w", id, err)
	case status == "running":
		return fmt.Errorf("workflow: run %q is running, there is nothing to retry: %w", id, engine.ErrConflict)
	case status != "stopped" && status != "failed":
		return fmt.Errorf("workflow: run %q is %s: %w", id, status, ErrRunFinished)
	}
	// undoing: a compensation is recorded done or sent; firstUnsent: the
	// first compensation that failed without being sent.
	var (
		undoing                  sql.NullBool
		firstFailed, firstUnsent sql.NullInt64
	)
	if err := tx.QueryRowContext(ctx, `WITH s AS (
			SELECT seq, kind = 'compensate' AS comp, error IS NOT NULL AS failed,
				coalesce(error #> '{details,sent}' = 'true', false) AS sent
			FROM `+qs+`.workflow_steps WHERE run_id = $1)
		SELECT bool_or(comp AND (NOT failed OR sent)),
			min(seq) FILTER (WHERE failed),
			min(seq) FILTER (WHERE comp AND failed AND NOT sent)
		FROM s`, id).Scan(&undoing, &firstFailed, &firstUnsent); err != nil {
		return fmt.Errorf("workflow: retrying run %q: %w", id, err)
	}
	from := firstFailed
	if undoing.Bool {
		from = firstUnsent
		if !from.Valid && status == "failed" {
			return fmt.Errorf("workflow: run %q failed and its compensations all ran or were handed to the participants: %w", id, ErrRunFinished)
		}
	}
	if from.Valid {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+qs+`.workflow_steps WHERE run_id = $1 AND seq >= $2`, id, from.Int64); err != nil {
			return fmt.Errorf("workflow: retrying run %q: %w", id, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+qs+`.workflow_runs SET status = 'running', error = NULL, output = NULL,
			wake_at = now(), finished_at = NULL, owner = NULL, lease_until = NULL, fence = fence + 1, updated_at = now()
		WHERE id = $1`, id); err != nil {
		return fmt.Errorf("workflow: retrying run %q: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("workflow: retrying run %q: %w", id, err)
	}
	return nil
}

// quotedFor returns schema quoted for Show, Cancel and Retry of run id,
// after checking both (checkAdminID).
func quotedFor(schema, id string) (string, error) {
	qs, err := migrations.Config{Schema: schema}.Quoted()
	if err != nil {
		return "", err
	}
	return qs, checkAdminID(id)
}

// checkAdminID refuses an id no run can have (RunID's bound: 1 to 200
// bytes; text PostgreSQL can hold: UTF-8 without NUL) as not found,
// without a query: PostgreSQL would answer an encoding error.
func checkAdminID(id string) error {
	if id == "" || len(id) > maxRunIDLen {
		return fmt.Errorf("workflow: run id of %d bytes (want 1 to %d): %w", len(id), maxRunIDLen, ErrRunNotFound)
	}
	if !storable(id) {
		return fmt.Errorf("workflow: run id %q is not UTF-8 text: %w", id, ErrRunNotFound)
	}
	return nil
}

// adminStoredJSON returns b as JSON: nil for none, b when it is JSON, else a
// JSON string of it (invalid UTF-8 replaced), so that a Run always
// marshals.
func adminStoredJSON(b []byte) json.RawMessage {
	if b == nil {
		return nil
	}
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b)) // a string always marshals
	return s
}

// adminStoredError decodes an error column (engine.Error JSON); nil for none,
// a 502 "bad_reply" error for JSON that is not one.
func adminStoredError(b []byte) *engine.Error {
	if b == nil {
		return nil
	}
	return envelope.UnmarshalError(b)
}

func adminTime(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	return &t.Time
}
