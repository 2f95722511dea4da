package workflow_test

import (
	"context"
	"crypto/md5"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/workflow"
)

// adminEnv is a fresh schema with the workflow tables.
type adminEnv struct {
	t      *testing.T
	db     *sql.DB
	schema string
	ctx    context.Context
}

func newAdminEnv(t *testing.T) adminEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	db := testenv.PostgresDB(t)
	schema := testenv.Schema(t, db)
	if _, err := migrations.Up(ctx, db, migrations.Config{Schema: schema}); err != nil {
		t.Fatal(err)
	}
	return adminEnv{t: t, db: db, schema: schema, ctx: ctx}
}

// exec runs SQL in which {s} stands for the quoted schema.
func (e adminEnv) exec(q string, args ...any) {
	e.t.Helper()
	if _, err := e.db.ExecContext(e.ctx, strings.ReplaceAll(q, "{s}", `"`+e.schema+`"`), args...); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
}

// adminRow is what a test reads back of a run's row.
type adminRow struct {
	status           string
	cancel           bool
	wakeIn           sql.NullFloat64 // wake_at - now(), seconds
	owner            sql.NullString
	fence            int64
	leased, finished bool
	errJSON          sql.NullString
	steps            []int
}

func (e adminEnv) row(id string) adminRow {
	e.t.Helper()
	var r adminRow
	s := `"` + e.schema + `"`
	if err := e.db.QueryRowContext(e.ctx, `SELECT status, cancel_requested, extract(epoch FROM wake_at - now())::float8, owner, fence,
			lease_until IS NOT NULL, finished_at IS NOT NULL, error::text FROM `+s+`.workflow_runs WHERE id = $1`, id).
		Scan(&r.status, &r.cancel, &r.wakeIn, &r.owner, &r.fence, &r.leased, &r.finished, &r.errJSON); err != nil {
		e.t.Fatalf("run %s: %v", id, err)
	}
	rows, err := e.db.QueryContext(e.ctx, `SELECT seq FROM `+s+`.workflow_steps WHERE run_id = $1 ORDER BY seq`, id)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var n int
		if err := rows.Scan(&n); err != nil {
			e.t.Fatal(err)
		}
		r.steps = append(r.steps, n)
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return r
}

// insertRun inserts a run; extra sets more columns ("col = value, ...").
func (e adminEnv) insertRun(id, wf, status, extra string) {
	e.t.Helper()
	e.exec(`INSERT INTO {s}.workflow_runs (id, workflow, status, input) VALUES ($1, $2, $3, '{"n":1}')`, id, wf, status)
	if extra != "" {
		e.exec(`UPDATE {s}.workflow_runs SET `+extra+` WHERE id = $1`, id)
	}
}

// insertStep records step seq of run id; errCode 0 means success.
func (e adminEnv) insertStep(id string, seq int, kind string, errCode int) {
	e.t.Helper()
	var errJSON any
	if errCode != 0 {
		errJSON = fmt.Sprintf(`{"code":%d,"reason":"r%d","message":"step %d failed","details":{"n":%d}}`, errCode, seq, seq, seq)
	}
	e.exec(`INSERT INTO {s}.workflow_steps (run_id, seq, kind, name, result, error, attempts, started_at, finished_at)
		VALUES ($1, $2, $3, $4, $5, $6::jsonb, $2, now() - interval '2 seconds', now() - interval '500 milliseconds')`,
		id, seq, kind, fmt.Sprintf("%s-%d", kind, seq), []byte(fmt.Sprintf(`{"seq":%d}`, seq)), errJSON)
}

const adminWF = "orders.v1.place"

func TestAdminList(t *testing.T) {
	e := newAdminEnv(t)
	// r1 oldest ... r4 newest.
	e.insertRun("r1", adminWF, "completed", `created_at = now() - interval '4 minutes', output = '{"ok":true}', finished_at = now()`)
	e.insertRun("r2", adminWF, "failed", `created_at = now() - interval '3 minutes', error = '{"code":422,"reason":"declined","message":"card declined","details":{"tries":3}}'`)
	e.insertRun("r3", "billing.v2.refund", "running", `created_at = now() - interval '2 minutes', owner = 'host-1', wake_at = now(), claims = 2,
		cancel_requested = true, awaiting_event = 'shipping.v1.shipped', awaiting_key = 'o-1'`)
	e.insertRun("r4", adminWF, "running", `created_at = now() - interval '1 minute'`)
	e.insertStep("r2", 1, "invoke", 0)

	ids := func(runs []workflow.Run) string {
		var s []string
		for _, r := range runs {
			s = append(s, r.ID)
		}
		return strings.Join(s, ",")
	}
	for _, c := range []struct {
		f    workflow.Filter
		want string
	}{
		{workflow.Filter{}, "r4,r3,r2,r1"},
		{workflow.Filter{Workflow: adminWF}, "r4,r2,r1"},
		{workflow.Filter{Status: "running"}, "r4,r3"},
		{workflow.Filter{Workflow: adminWF, Status: "running"}, "r4"},
		{workflow.Filter{Status: "stopped"}, ""},
		{workflow.Filter{Limit: 2}, "r4,r3"},
	} {
		runs, err := workflow.List(e.ctx, e.db, e.schema, c.f)
		if err != nil || ids(runs) != c.want {
			t.Errorf("List(%+v) = %s, %v; want %s", c.f, ids(runs), err, c.want)
		}
	}
	runs, err := workflow.List(e.ctx, e.db, e.schema, workflow.Filter{})
	if err != nil || len(runs) != 4 {
		t.Fatalf("List: %v, %v", runs, err)
	}
	r3, r2 := runs[1], runs[2]
	if r3.Workflow != "billing.v2.refund" || r3.Owner != "host-1" || r3.Claims != 2 || r3.WakeAt == nil || r3.FinishedAt != nil ||
		!r3.CancelRequested || r3.AwaitingEvent != "shipping.v1.shipped" || r3.AwaitingKey != "o-1" || r3.Error != nil {
		t.Errorf("r3 = %+v", r3)
	}
	// The error reads back as the engine's error: errors.As and Is work.
	var ee *engine.Error
	if !errors.As(error(r2.Error), &ee) || ee.Code != 422 || ee.Reason != "declined" || ee.Message != "card declined" || ee.Details["tries"] != 3 ||
		!errors.Is(r2.Error, engine.ErrUnprocessable) {
		t.Errorf("r2.Error = %#v", r2.Error)
	}
	// A listing has no input, output or steps.
	for _, r := range runs {
		if r.Input != nil || r.Output != nil || r.Steps != nil {
			t.Errorf("List gave %s's input %q, output %q or steps %v", r.ID, r.Input, r.Output, r.Steps)
		}
	}

	// Bounds: the default limit is 100, at most MaxListed; a bad filter
	// or schema is an error, not a query.
	e.exec(`INSERT INTO {s}.workflow_runs (id, workflow, input, created_at)
		SELECT 'bulk-' || i, 'bulk.v1.x', '\x00', now() - interval '1 hour' FROM generate_series(1, 1100) i`)
	if runs, err := workflow.List(e.ctx, e.db, e.schema, workflow.Filter{}); err != nil || len(runs) != 100 {
		t.Errorf("default limit: %d runs, %v; want 100", len(runs), err)
	}
	if runs, err := workflow.List(e.ctx, e.db, e.schema, workflow.Filter{Limit: workflow.MaxListed}); err != nil || len(runs) != workflow.MaxListed {
		t.Errorf("limit MaxListed: %d runs, %v", len(runs), err)
	}
	for _, c := range []struct {
		schema string
		f      workflow.Filter
		want   string
	}{
		{e.schema, workflow.Filter{Limit: workflow.MaxListed + 1}, "limit 1001 out of range"},
		{e.schema, workflow.Filter{Limit: -1}, "limit -1 out of range"},
		{e.schema, workflow.Filter{Status: "paused"}, `unknown status "paused"`},
		{e.schema, workflow.Filter{Workflow: strings.Repeat("w", 1001)}, "1001 bytes"},
		{`x"; DROP TABLE y; --`, workflow.Filter{}, "invalid schema name"},
	} {
		if _, err := workflow.List(e.ctx, e.db, c.schema, c.f); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("List(%q, %+v): %v; want an error with %q", c.schema, c.f, err, c.want)
		}
	}
	// A schema without the tables: the database's error, wrapped.
	if _, err := workflow.List(e.ctx, e.db, "nowhere_"+e.schema, workflow.Filter{}); err == nil || !strings.Contains(err.Error(), "workflow: listing runs") {
		t.Errorf("List in a schema without tables: %v", err)
	}
}

func TestAdminShow(t *testing.T) {
	e := newAdminEnv(t)
	e.insertRun("r1", adminWF, "failed", `error = '{"code":500,"reason":"internal","message":"internal error"}', finished_at = now()`)
	e.insertStep("r1", 1, "invoke", 0)
	e.insertStep("r1", 2, "sleep", 0)
	e.exec(`UPDATE {s}.workflow_steps SET due_at = now(), result = NULL WHERE run_id = 'r1' AND seq = 2`)
	e.insertStep("r1", 3, "step", 503)
	// Stored bytes that are not JSON come back as a JSON string.
	e.exec(`UPDATE {s}.workflow_runs SET input = '\xff01', output = 'plain' WHERE id = 'r1'`)

	r, err := workflow.Show(e.ctx, e.db, e.schema, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "r1" || r.Status != "failed" || r.FinishedAt == nil || r.Error == nil || r.Error.Code != 500 || len(r.Steps) != 3 {
		t.Fatalf("Show = %+v", r)
	}
	if string(r.Output) != `"plain"` || string(r.Input) != `"\ufffd\u0001"` {
		t.Errorf("input %s, output %s: want JSON strings", r.Input, r.Output)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Errorf("a Run does not marshal: %v", err)
	}
	s1, s2, s3 := r.Steps[0], r.Steps[1], r.Steps[2]
	if s1.Seq != 1 || s1.Kind != "invoke" || s1.Name != "invoke-1" || string(s1.Result) != `{"seq":1}` || s1.Error != nil || s1.Attempts != 1 || s1.DueAt != nil {
		t.Errorf("step 1 = %+v", s1)
	}
	if d := s1.FinishedAt.Sub(s1.StartedAt); d < 1400*time.Millisecond || d > 1600*time.Millisecond {
		t.Errorf("step 1 took %s, want 1.5s", d)
	}
	if s2.Kind != "sleep" || s2.DueAt == nil || s2.Result != nil {
		t.Errorf("step 2 = %+v", s2)
	}
	if s3.Error == nil || !errors.Is(s3.Error, engine.ErrUnavailable) || s3.Error.Details["n"] != 3 || s3.Attempts != 3 {
		t.Errorf("step 3 = %+v, error %#v", s3, s3.Error)
	}

	// A stored error that is not engine.Error JSON reads as a 502.
	e.exec(`UPDATE {s}.workflow_runs SET error = '"oops"' WHERE id = 'r1'`)
	if r, err := workflow.Show(e.ctx, e.db, e.schema, "r1"); err != nil || r.Error == nil || r.Error.Code != 502 {
		t.Errorf("Show with a malformed error: %+v, %v", r.Error, err)
	}

	// Not found: an unknown id, and ids no run can have (not queried).
	for _, id := range []string{"nope", "", strings.Repeat("x", 201), "a\x1bb", "é"} {
		_, err := workflow.Show(e.ctx, e.db, e.schema, id)
		if !errors.Is(err, workflow.ErrRunNotFound) || !errors.Is(err, engine.ErrNotFound) {
			t.Errorf("Show(%q): %v; want ErrRunNotFound", id, err)
		}
	}
	if _, err := workflow.Show(e.ctx, e.db, "bad schema", "r1"); err == nil || !strings.Contains(err.Error(), "invalid schema name") {
		t.Errorf("Show with a bad schema: %v", err)
	}

	// Bound: the last MaxListed steps of a longer run.
	e.insertRun("long", adminWF, "running", "")
	e.exec(`INSERT INTO {s}.workflow_steps (run_id, seq, kind, name, started_at)
		SELECT 'long', i, 'step', 's' || i, now() FROM generate_series(1, $1::int) i`, workflow.MaxListed+5)
	r, err = workflow.Show(e.ctx, e.db, e.schema, "long")
	if err != nil || len(r.Steps) != workflow.MaxListed || r.Steps[0].Seq != 6 || r.Steps[len(r.Steps)-1].Seq != workflow.MaxListed+5 {
		t.Errorf("long run: %d steps from %d, %v; want %d steps from 6", len(r.Steps), r.Steps[0].Seq, err, workflow.MaxListed)
	}
}

// listen listens to the runners' wake-up channel of e's schema.
func (e adminEnv) listen() *pgx.Conn {
	e.t.Helper()
	conn, err := pgx.Connect(e.ctx, testenv.URL(e.t, testenv.Postgres))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = conn.Close(context.Background()) })
	sum := md5.Sum([]byte(e.schema))
	if _, err := conn.Exec(e.ctx, `LISTEN "workflow_`+hex.EncodeToString(sum[:])+`"`); err != nil {
		e.t.Fatal(err)
	}
	return conn
}

// adminWoken waits (up to 5 s) for a notification that wakes the runners.
func adminWoken(t *testing.T, conn *pgx.Conn) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := conn.WaitForNotification(ctx)
	return err == nil
}

func TestAdminCancel(t *testing.T) {
	e := newAdminEnv(t)
	e.insertRun("held", adminWF, "running", `owner = 'host-1', fence = 3, lease_until = now() + interval '30 seconds', wake_at = now() + interval '1 hour'`)
	e.insertRun("sleeping", adminWF, "running", `fence = 2, wake_at = now() + interval '1 hour'`)
	e.insertRun("stopped", adminWF, "stopped", `owner = 'host-1', fence = 5, error = '{"code":409,"reason":"nondeterministic","message":"step 2"}'`)
	e.insertRun("done", adminWF, "completed", `finished_at = now()`)
	e.insertRun("failed", adminWF, "failed", `finished_at = now()`)
	e.insertRun("cancelled", adminWF, "cancelled", `finished_at = now(), cancel_requested = true`)

	// A run a runner holds keeps its runner, lease and fencing token: the
	// runner sees the request at its next step.
	if err := workflow.Cancel(e.ctx, e.db, e.schema, "held"); err != nil {
		t.Fatal(err)
	}
	r := e.row("held")
	if r.status != "running" || !r.cancel || !r.wakeIn.Valid || r.wakeIn.Float64 > 0 || r.owner.String != "host-1" || r.fence != 3 || !r.leased {
		t.Errorf("held after Cancel: %+v", r)
	}
	if err := workflow.Cancel(e.ctx, e.db, e.schema, "held"); err != nil {
		t.Errorf("Cancel again: %v", err)
	}

	// A suspended run wakes at once: the runners are notified.
	conn := e.listen()
	if err := workflow.Cancel(e.ctx, e.db, e.schema, "sleeping"); err != nil {
		t.Fatal(err)
	}
	if r := e.row("sleeping"); r.status != "running" || !r.cancel || r.wakeIn.Float64 > 0 || r.fence != 2 {
		t.Errorf("sleeping after Cancel: %+v", r)
	}
	if !adminWoken(t, conn) {
		t.Error("cancelling a sleeping run did not notify the runners")
	}

	// A stopped run is made running for a runner to compensate, with a new
	// fencing token and no lease.
	if err := workflow.Cancel(e.ctx, e.db, e.schema, "stopped"); err != nil {
		t.Fatal(err)
	}
	r = e.row("stopped")
	if r.status != "running" || !r.cancel || r.wakeIn.Float64 > 0 || r.owner.Valid || r.fence != 6 || r.leased || r.errJSON.Valid {
		t.Errorf("stopped after Cancel: %+v", r)
	}
	if !adminWoken(t, conn) {
		t.Error("cancelling a stopped run did not notify the runners")
	}

	// Finished runs: ErrRunFinished, unchanged.
	for _, id := range []string{"done", "failed", "cancelled"} {
		before := e.row(id)
		err := workflow.Cancel(e.ctx, e.db, e.schema, id)
		if !errors.Is(err, workflow.ErrRunFinished) || !errors.Is(err, engine.ErrConflict) || !strings.Contains(err.Error(), "is "+before.status) {
			t.Errorf("Cancel(%s): %v; want ErrRunFinished naming the status", id, err)
		}
		if after := e.row(id); after.wakeIn.Valid || after.status != before.status || after.cancel != before.cancel {
			t.Errorf("Cancel(%s) changed the run: %+v", id, after)
		}
	}
	for _, id := range []string{"nope", "", strings.Repeat("x", 201)} {
		if err := workflow.Cancel(e.ctx, e.db, e.schema, id); !errors.Is(err, workflow.ErrRunNotFound) {
			t.Errorf("Cancel(%q): %v; want ErrRunNotFound", id, err)
		}
	}
	if err := workflow.Cancel(e.ctx, e.db, "1bad", "held"); err == nil || !strings.Contains(err.Error(), "invalid schema name") {
		t.Errorf("Cancel with a bad schema: %v", err)
	}
}

// A run that ends while Cancel waits for its row: ErrRunFinished, and the
// run is left as its runner ended it.
func TestAdminCancelRunEndingMeanwhile(t *testing.T) {
	e := newAdminEnv(t)
	e.insertRun("r", adminWF, "running", `owner = 'host-1', lease_until = now() + interval '30 seconds'`)
	// The runner's final statement, not committed yet: it holds the row.
	tx, err := e.db.BeginTx(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(e.ctx, `UPDATE "`+e.schema+`".workflow_runs SET status = 'completed', wake_at = NULL, finished_at = now() WHERE id = 'r'`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- workflow.Cancel(e.ctx, e.db, e.schema, "r") }()
	// Wait until Cancel waits for the row lock.
	for i := 0; ; i++ {
		var waiting bool
		if err := e.db.QueryRowContext(e.ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%cancel_requested = true%' AND query LIKE '%' || $1 || '%')`, e.schema).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		if i == 500 {
			t.Fatal("Cancel never waited for the row")
		}
		time.Sleep(10 * time.Millisecond) // polling the server's state: no event to await
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, workflow.ErrRunFinished) || !strings.Contains(err.Error(), "ended meanwhile") {
			t.Errorf("Cancel: %v; want ErrRunFinished (ended meanwhile)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Cancel did not return")
	}
	if r := e.row("r"); r.status != "completed" || r.cancel || r.wakeIn.Valid {
		t.Errorf("run after Cancel: %+v", r)
	}
}

func TestAdminRetry(t *testing.T) {
	e := newAdminEnv(t)
	const ended = `finished_at = now(), owner = 'host-1', fence = 4, error = '{"code":422,"message":"declined"}'`
	// Failed, no compensation took effect (the one tried failed): the
	// failed step and all after it run again.
	e.insertRun("failed", adminWF, "failed", ended)
	e.insertStep("failed", 1, "invoke", 0)
	e.insertStep("failed", 2, "invoke", 422)
	e.insertStep("failed", 3, "step", 0)
	e.insertStep("failed", 4, "compensate", 503)
	// Stopped while compensating: the forward failure stands, the failed
	// compensation runs again, the one that succeeded does not.
	e.insertRun("compensating", adminWF, "stopped", ended)
	e.insertStep("compensating", 1, "invoke", 0)
	e.insertStep("compensating", 2, "invoke", 0)
	e.insertStep("compensating", 3, "invoke", 422)
	e.insertStep("compensating", 4, "compensate", 0)
	e.insertStep("compensating", 5, "compensate", 500)
	// Stopped for nondeterminism: no failed step; nothing is deleted.
	e.insertRun("nondet", adminWF, "stopped", `error = '{"code":409,"reason":"nondeterministic","message":"step 2"}'`)
	e.insertStep("nondet", 1, "invoke", 0)
	e.insertStep("nondet", 2, "sleep", 0)
	// Failed and compensated: over.
	e.insertRun("compensated", adminWF, "failed", ended)
	e.insertStep("compensated", 1, "invoke", 0)
	e.insertStep("compensated", 2, "invoke", 422)
	e.insertStep("compensated", 3, "compensate", 0)
	// A compensation that kept failing and was sent to its participant
	// counts as run: failed, over; stopped, only the one not sent runs
	// again.
	e.insertRun("sent", adminWF, "failed", ended)
	e.insertStep("sent", 1, "invoke", 0)
	e.insertStep("sent", 2, "invoke", 422)
	e.insertStep("sent", 3, "compensate", 503)
	e.insertRun("unsent", adminWF, "stopped", ended)
	e.insertStep("unsent", 1, "invoke", 0)
	e.insertStep("unsent", 2, "invoke", 422)
	e.insertStep("unsent", 3, "compensate", 503)
	e.insertStep("unsent", 4, "compensate", 500)
	e.exec(`UPDATE {s}.workflow_steps SET error = jsonb_set(error, '{details,sent}', 'true')
		WHERE (run_id, seq) IN (('sent', 3), ('unsent', 3))`)
	e.insertRun("running", adminWF, "running", `wake_at = now()`)
	e.insertRun("completed", adminWF, "completed", `finished_at = now()`)
	e.insertRun("cancelled", adminWF, "cancelled", `finished_at = now()`)

	conn := e.listen()
	for _, c := range []struct {
		id    string
		steps string
		fence int64
	}{
		{"failed", "[1]", 5},
		{"compensating", "[1 2 3 4]", 5},
		{"nondet", "[1 2]", 1},
		{"unsent", "[1 2 3]", 5},
	} {
		if err := workflow.Retry(e.ctx, e.db, e.schema, c.id); err != nil {
			t.Fatalf("Retry(%s): %v", c.id, err)
		}
		r := e.row(c.id)
		if r.status != "running" || r.errJSON.Valid || r.finished || !r.wakeIn.Valid || r.wakeIn.Float64 > 0 || r.owner.Valid || r.leased ||
			r.fence != c.fence || fmt.Sprint(r.steps) != c.steps {
			t.Errorf("%s after Retry: %+v; want steps %s, fence %d", c.id, r, c.steps, c.fence)
		}
		if !adminWoken(t, conn) {
			t.Errorf("Retry(%s) did not notify the runners", c.id)
		}
	}

	// The runner that held the run before cannot record anything: its
	// fencing token is stale (a checkpoint as the runtime writes it).
	res, err := e.db.ExecContext(e.ctx, `WITH r AS (UPDATE "`+e.schema+`".workflow_runs SET lease_until = now() + interval '30 seconds'
			WHERE id = $1 AND fence = $2 AND status = 'running' RETURNING id)
		INSERT INTO "`+e.schema+`".workflow_steps (run_id, seq, kind, name, started_at) SELECT id, 2, 'invoke', 'x', now() FROM r`, "failed", 4)
	if n, _ := res.RowsAffected(); err != nil || n != 0 {
		t.Errorf("a stale runner's checkpoint after Retry: %d rows, %v", n, err)
	}

	for _, id := range []string{"compensated", "sent", "completed", "cancelled"} {
		before := e.row(id)
		if err := workflow.Retry(e.ctx, e.db, e.schema, id); !errors.Is(err, workflow.ErrRunFinished) {
			t.Errorf("Retry(%s): %v; want ErrRunFinished", id, err)
		}
		if after := e.row(id); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("Retry(%s) changed the run: %+v, was %+v", id, after, before)
		}
	}
	err = workflow.Retry(e.ctx, e.db, e.schema, "running")
	if !errors.Is(err, engine.ErrConflict) || errors.Is(err, workflow.ErrRunFinished) || !strings.Contains(err.Error(), "is running") {
		t.Errorf("Retry(running): %v", err)
	}
	for _, id := range []string{"nope", "", "a\nb"} {
		if err := workflow.Retry(e.ctx, e.db, e.schema, id); !errors.Is(err, workflow.ErrRunNotFound) {
			t.Errorf("Retry(%q): %v; want ErrRunNotFound", id, err)
		}
	}
	if err := workflow.Retry(e.ctx, e.db, strings.Repeat("s", 64), "failed"); err == nil || !strings.Contains(err.Error(), "invalid schema name") {
		t.Errorf("Retry with a bad schema: %v", err)
	}
}
