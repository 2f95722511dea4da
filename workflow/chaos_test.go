package workflow_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/switchboard-go/switchboard/bridge/nats"
	_ "github.com/switchboard-go/switchboard/bridge/postgres"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/outbox"
	"github.com/switchboard-go/switchboard/workflow"
)

// The crash test: 1,000 runs of a four-step workflow on worker
// processes that are SIGKILLed and restarted at random, while the
// participant fails 10 % of steps transiently (once) and 2 % permanently.
// Every run must end completed or failed-and-compensated; each step's effect
// happens exactly once and each compensation of a failed run exactly once,
// counted in the participant's own tables; no run is left behind.

// chaosEnv, set in the environment of the test binary re-executed as a
// worker, makes TestWorkflowChaos act as that worker; its value is a
// chaosOrder in JSON.
const chaosEnv = "SWITCHBOARD_WORKFLOW_CHAOS_WORKER"

type chaosOrder struct {
	Bridge   string // the transport's URL
	Database string // PostgreSQL URL of the store and the participant's tables
	Schema   string
	Suffix   string // makes service and workflow names unique to this run
}

// ApplyIn is one step's command: the participant records (run, step).
type ApplyIn struct {
	Run  string `json:"run"`
	Step int    `json:"step"`
}

// ApplyOut answers ApplyIn.
type ApplyOut struct {
	Step int `json:"step"`
}

// ChaosIn starts a run.
type ChaosIn struct {
	Steps int `json:"steps"`
}

// ChaosOut ends a completed run.
type ChaosOut struct {
	Done int `json:"done"`
}

// chaosContracts are the participant's commands and the workflow, named
// with the run's suffix (the same in the parent and in every worker).
type chaosContracts struct {
	apply, undo *engine.Command[ApplyIn, ApplyOut]
	flow        *workflow.Workflow[ChaosIn, ChaosOut]
	participant string
}

func newChaosContracts(suffix string) chaosContracts {
	participant := "chaosp" + suffix
	c := chaosContracts{
		apply:       engine.NewCommand[ApplyIn, ApplyOut](participant, "1", "apply"),
		undo:        engine.NewCommand[ApplyIn, ApplyOut](participant, "1", "undo"),
		participant: participant,
	}
	c.flow = workflow.New("chaosw"+suffix, "1", "four", func(wf workflow.Context, in ChaosIn) (ChaosOut, error) {
		for step := 1; step <= in.Steps; step++ {
			if _, err := workflow.Invoke(wf, c.apply, ApplyIn{Run: wf.RunID(), Step: step}); err != nil {
				return ChaosOut{}, err
			}
			workflow.OnFailure(wf, c.undo, ApplyIn{Run: wf.RunID(), Step: step})
		}
		return ChaosOut{Done: in.Steps}, nil
	})
	return c
}

// fault is what the participant does with (run, step): fail it once with a
// transient error (10 %), refuse it for good (2 %), or apply it.
type fault int

const (
	faultNone fault = iota
	faultTransient
	faultPermanent
)

func faultOf(run string, step int) fault {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d", run, step)
	switch n := h.Sum32() % 100; {
	case n < 10:
		return faultTransient
	case n < 12:
		return faultPermanent
	}
	return faultNone
}

const (
	chaosRuns    = 1000
	chaosSteps   = 4
	chaosWorkers = 3
)

func TestWorkflowChaos(t *testing.T) {
	if order := os.Getenv(chaosEnv); order != "" {
		runChaosWorker(t, order)
		return
	}
	for _, transport := range []string{testenv.Postgres, testenv.NATS} {
		t.Run(transport, func(t *testing.T) { testChaos(t, transport) })
	}
}

func testChaos(t *testing.T, transport string) {
	db := testenv.PostgresDB(t)
	schema := testenv.Schema(t, db)
	ctx := t.Context()
	if _, err := migrations.Up(ctx, db, migrations.Config{Schema: schema}); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"effects", "compensations", "attempts"} {
		if _, err := db.ExecContext(ctx, `CREATE TABLE "`+schema+`".`+table+` (run text NOT NULL, step int NOT NULL, at timestamptz NOT NULL DEFAULT now())`); err != nil {
			t.Fatal(err)
		}
	}
	var bridgeURL string
	switch transport {
	case testenv.Postgres:
		bridgeURL = testenv.URL(t, testenv.Postgres) + "&schema=" + schema + "&ack_deadline=2s"
	case testenv.NATS:
		bridgeURL = testenv.URL(t, testenv.NATS) + "?ack_wait=2s"
	}
	suffix := fmt.Sprintf("%x", rand.Uint32())
	c := newChaosContracts(suffix)
	order := chaosOrder{Bridge: bridgeURL, Database: testenv.URL(t, testenv.Postgres), Schema: schema, Suffix: suffix}

	workers := make([]*chaosWorker, chaosWorkers)
	for i := range workers {
		workers[i] = startChaosWorker(t, order, i)
	}
	defer func() {
		for _, w := range workers {
			w.stop(t)
		}
	}()

	// The runs are started through the transport, by an engine that hosts
	// neither the workflow nor the participant.
	caller, err := engine.New(engine.Config{Bridge: bridgeURL, Logger: slog.New(slog.DiscardHandler), CallTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = caller.Stop(context.Background()) }()
	cctx := engine.WithEngine(ctx, caller)

	// The killer: every 0.3-1 s one worker is SIGKILLed and a new one
	// started in its place, while runs are open (at most 20 s).
	killerDone, allEnded := make(chan struct{}), make(chan struct{})
	kills := 0
	go func() {
		defer close(killerDone)
		end := time.Now().Add(20 * time.Second)
		for time.Now().Before(end) {
			select {
			case <-ctx.Done():
				return
			case <-allEnded:
				return
			case <-time.After(time.Duration(300+rand.IntN(700)) * time.Millisecond):
			}
			i := rand.IntN(len(workers))
			workers[i].kill(t)
			workers[i] = startChaosWorker(t, order, i)
			kills++
		}
	}()

	// Eight callers start the runs; starting again with the same id is the
	// same run, so a start whose worker was killed before it answered is
	// simply repeated.
	start := time.Now()
	var starters sync.WaitGroup
	startErr := make(chan error, 8)
	for g := range 8 {
		starters.Add(1)
		go func() {
			defer starters.Done()
			for i := g; i < chaosRuns; i += 8 {
				id := fmt.Sprintf("run-%04d", i)
				for attempt := 0; ; attempt++ {
					got, err := c.flow.Start(cctx, ChaosIn{Steps: chaosSteps}, workflow.RunID(id))
					if err == nil && got == id {
						break
					}
					if attempt == 20 || err == nil {
						startErr <- fmt.Errorf("starting %s: %q, %v", id, got, err)
						return
					}
				}
			}
		}()
	}
	starters.Wait()
	close(startErr)
	for err := range startErr {
		t.Fatal(err)
	}
	t.Logf("%d runs started in %s", chaosRuns, time.Since(start).Round(time.Millisecond))

	// Every run ends, within a bound.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var open int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM "`+schema+`".workflow_runs WHERE status NOT IN ('completed', 'failed')`).Scan(&open); err != nil {
			t.Fatal(err)
		}
		if open == 0 {
			close(allEnded)
			break
		}
		if time.Now().After(deadline) {
			dumpOpenRuns(t, db, schema)
			t.Fatalf("%d runs still open 3 min after the last start", open)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("all %d runs ended %s after the first start", chaosRuns, time.Since(start).Round(time.Millisecond))
	<-killerDone
	// The kills must have cut runs short, or nothing was proven: runs
	// claimed again (resumed by another worker after a lease ran out).
	var resumed, retried int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE claims > 1) FROM "`+schema+`".workflow_runs`).Scan(&resumed); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE attempts > 1) FROM "`+schema+`".workflow_steps`).Scan(&retried); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d workers killed; %d runs claimed more than once; %d steps took more than one attempt", kills, resumed, retried)
	if kills == 0 || resumed == 0 {
		t.Errorf("%d kills, %d runs resumed: the kills cut no run short", kills, resumed)
	}
	checkChaosOutcome(t, db, schema)
}

// checkChaosOutcome compares what the participant recorded with what the
// faults say must have happened, run by run.
func checkChaosOutcome(t *testing.T, db *sql.DB, schema string) {
	t.Helper()
	ctx := t.Context()
	count := func(table string) map[string]int {
		rows, err := db.QueryContext(ctx, `SELECT run, step, count(*) FROM "`+schema+`".`+table+` GROUP BY run, step`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]int{}
		for rows.Next() {
			var run string
			var step, n int
			if err := rows.Scan(&run, &step, &n); err != nil {
				t.Fatal(err)
			}
			out[fmt.Sprintf("%s/%d", run, step)] = n
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	effects, comps := count("effects"), count("compensations")
	status, runErr := map[string]string{}, map[string]string{}
	rows, err := db.QueryContext(ctx, `SELECT id, status, coalesce(error::text, '') FROM "`+schema+`".workflow_runs`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, st, e string
		if err := rows.Scan(&id, &st, &e); err != nil {
			t.Fatal(err)
		}
		status[id], runErr[id] = st, e
	}
	rows.Close()
	if len(status) != chaosRuns {
		t.Errorf("%d runs recorded, want %d", len(status), chaosRuns)
	}
	var completed, failed, wrong int
	for i := range chaosRuns {
		run := fmt.Sprintf("run-%04d", i)
		failsAt := 0
		for step := 1; step <= chaosSteps; step++ {
			if faultOf(run, step) == faultPermanent {
				failsAt = step
				break
			}
		}
		want := "completed"
		applied := chaosSteps
		if failsAt > 0 {
			want, applied = "failed", failsAt-1
		}
		if status[run] != want {
			wrong++
			if wrong <= 10 {
				t.Errorf("%s ended %q, want %q (error %s)", run, status[run], want, runErr[run])
			}
		}
		if want == "completed" {
			completed++
		} else {
			failed++
		}
		for step := 1; step <= chaosSteps; step++ {
			key := fmt.Sprintf("%s/%d", run, step)
			wantEffect, wantComp := 0, 0
			if step <= applied {
				wantEffect = 1
				if failsAt > 0 {
					wantComp = 1
				}
			}
			if effects[key] != wantEffect || comps[key] != wantComp {
				wrong++
				if wrong <= 10 {
					t.Errorf("%s: effect %d times, compensation %d times; want %d and %d", key, effects[key], comps[key], wantEffect, wantComp)
				}
			}
		}
	}
	t.Logf("%d completed, %d failed and compensated (expected by the faults); %d discrepancies", completed, failed, wrong)
}

func dumpOpenRuns(t *testing.T, db *sql.DB, schema string) {
	rows, err := db.QueryContext(t.Context(), `SELECT id, status, coalesce(owner, ''), coalesce(wake_at::text, ''), coalesce(lease_until::text, ''), claims, coalesce(error::text, '')
		FROM "`+schema+`".workflow_runs WHERE status NOT IN ('completed', 'failed') ORDER BY id LIMIT 10`)
	if err != nil {
		t.Log(err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var id, st, owner, wake, lease, errText string
		var claims int
		if err := rows.Scan(&id, &st, &owner, &wake, &lease, &claims, &errText); err == nil {
			t.Logf("open: %s %s owner=%q wake=%s lease=%s claims=%d err=%s", id, st, owner, wake, lease, claims, errText)
		}
	}
}

// chaosWorker is a worker process: the workflow's runner and the
// participant, on the transport.
type chaosWorker struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	tail []string
}

func startChaosWorker(t *testing.T, order chaosOrder, i int) *chaosWorker {
	t.Helper()
	b, _ := json.Marshal(order)
	cmd := exec.Command(os.Args[0], "-test.run=^TestWorkflowChaos$", "-test.v")
	cmd.Env = append(os.Environ(), chaosEnv+"="+string(b))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &chaosWorker{cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, "chaos worker: running") {
				once.Do(func() { close(ready) })
			}
			w.mu.Lock()
			w.tail = append(w.tail, line)
			if len(w.tail) > 50 {
				w.tail = w.tail[1:]
			}
			w.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
	}()
	select {
	case <-ready:
	case <-w.done:
		t.Fatalf("worker %d exited before running:\n%s", i, w.lastLines())
	case <-time.After(30 * time.Second):
		w.kill(t)
		t.Fatalf("worker %d not running within 30 s:\n%s", i, w.lastLines())
	}
	return w
}

func (w *chaosWorker) lastLines() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.tail, "\n")
}

func (w *chaosWorker) kill(t *testing.T) {
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		t.Errorf("worker %d did not die within 10 s of SIGKILL", w.cmd.Process.Pid)
	}
}

// stop ends a worker gracefully (SIGTERM: the engine drains) and waits.
func (w *chaosWorker) stop(t *testing.T) {
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		t.Errorf("worker %d did not stop within 30 s of SIGTERM:\n%s", w.cmd.Process.Pid, w.lastLines())
		w.kill(t)
	}
}

// runChaosWorker is the worker process: it hosts the participant (through
// the inbox, faults injected) and the workflow, until SIGTERM or SIGKILL.
func runChaosWorker(t *testing.T, raw string) {
	var order chaosOrder
	if err := json.Unmarshal([]byte(raw), &order); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	db, err := sql.Open("pgx", order.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Three workers and the other packages' tests share the server's 100
	// connections: at most 16 each. A participant's handler holds one for
	// its inbox transaction and may take a second (attempts): 4 handlers of
	// each command hold at most 12, so the runner always gets one.
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	q := `"` + order.Schema + `".`
	c := newChaosContracts(order.Suffix)

	participant := engine.NewService(c.participant, "1")
	participant.Use(outbox.Inbox{DB: db, Schema: order.Schema}.Middleware())
	engine.Handle(participant, c.apply, func(ctx context.Context, in ApplyIn) (ApplyOut, error) {
		tx, _ := outbox.TxFrom(ctx)
		time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond) // a step takes time: kills land inside steps
		switch faultOf(in.Run, in.Step) {
		case faultPermanent:
			return ApplyOut{}, engine.NewError(422, "step %d of %s refused", in.Step, in.Run)
		case faultTransient:
			// Counted outside the handler's transaction, which the failure
			// rolls back: the first attempt fails, the next succeed.
			var n int
			if err := db.QueryRowContext(ctx, `WITH i AS (INSERT INTO `+q+`attempts (run, step) VALUES ($1, $2) RETURNING 1)
				SELECT count(*) + 1 FROM `+q+`attempts WHERE run = $1 AND step = $2`, in.Run, in.Step).Scan(&n); err != nil {
				return ApplyOut{}, err
			}
			if n == 1 {
				return ApplyOut{}, engine.NewError(503, "step %d of %s: try again", in.Step, in.Run)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+q+`effects (run, step) VALUES ($1, $2)`, in.Run, in.Step); err != nil {
			return ApplyOut{}, err
		}
		return ApplyOut{Step: in.Step}, nil
	}, engine.Concurrency(4))
	engine.Handle(participant, c.undo, func(ctx context.Context, in ApplyIn) (ApplyOut, error) {
		tx, _ := outbox.TxFrom(ctx)
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+q+`compensations (run, step) VALUES ($1, $2)`, in.Run, in.Step); err != nil {
			return ApplyOut{}, err
		}
		return ApplyOut{Step: in.Step}, nil
	}, engine.Concurrency(4))

	host := engine.NewService("chaosw"+order.Suffix, "1")
	store := &workflow.Store{DB: db, Schema: order.Schema, Concurrency: 8, LeaseTTL: 3 * time.Second, PollInterval: 500 * time.Millisecond}
	if err := workflow.Register(host, store, c.flow); err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.Config{
		Bridge:       order.Bridge,
		CallTimeout:  2 * time.Second,
		DrainTimeout: 5 * time.Second,
		Logger:       slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Register(participant, host); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Println("chaos worker: running")
	<-ctx.Done()
	if err := eng.Stop(context.Background()); err != nil {
		t.Error(err)
	}
}
