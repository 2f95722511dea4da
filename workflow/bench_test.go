package workflow_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/workflow"
)

// queryCounter counts the statements sent to the database: each is one
// round trip (pgx sends a statement with its parameters in one).
type queryCounter struct{ n atomic.Int64 }

func (q *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	q.n.Add(1)
	return ctx
}

func (q *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// countedEnv is newEnv on a database handle whose statements are counted.
// It returns the uncounted handle too.
func countedEnv(b *testing.B) (env, *queryCounter, *sql.DB) {
	e := newEnv(b)
	cfg, err := pgx.ParseConfig(testenv.URL(b, testenv.Postgres))
	if err != nil {
		b.Fatal(err)
	}
	qc := &queryCounter{}
	cfg.Tracer = qc
	db := stdlib.OpenDB(*cfg)
	db.SetMaxIdleConns(50)
	b.Cleanup(func() { _ = db.Close() })
	return env{db: db, schema: e.schema}, qc, e.db
}

var noop = engine.NewCommand[Done, Done]("bench", "1", "noop")

// BenchmarkStep measures the overhead of one step, run after run of
// b.N steps in one run: a no-op local Step, and an Invoke of a no-op
// command on the in-process bus. It reports p50 and p99 per step and the
// database statements (round trips) per step. Its floor, measured in the
// same run since the machine's load moves every figure: one autocommitted
// INSERT of a row as large as a step's, the least a durable checkpoint
// costs (a step's p50 over the floor's is the ratio to report).
func BenchmarkStep(b *testing.B) {
	b.Run("floor-commit", func(b *testing.B) {
		e := newEnv(b)
		lat := make([]time.Duration, 0, b.N)
		insert := `INSERT INTO "` + e.schema + `".effects (kind, key) VALUES ('floor', $1)`
		b.ResetTimer()
		for i := range b.N {
			t0 := time.Now()
			if _, err := e.db.Exec(insert, fmt.Sprint(i)); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs/step")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs/step")
		b.ReportMetric(1, "db-roundtrips/step")
	})
	for _, kind := range []string{"local", "command"} {
		b.Run(kind, func(b *testing.B) {
			e, qc, _ := countedEnv(b)
			bus := inprocBus(b)
			lat := make([]time.Duration, 0, b.N)
			var queries int64
			wf := workflow.New("wforders", "1", "steps", func(wf workflow.Context, n int) (Done, error) {
				queries = qc.n.Load()
				for i := range n {
					t0 := time.Now()
					var err error
					if kind == "local" {
						_, err = workflow.Step(wf, "noop", func(context.Context) (int, error) { return i, nil })
					} else {
						_, err = workflow.Invoke(wf, noop, Done{})
					}
					lat = append(lat, time.Since(t0))
					if err != nil {
						return Done{}, err
					}
				}
				queries = qc.n.Load() - queries
				return Done{}, nil
			})
			svc := engine.NewService("bench", "1")
			engine.Handle(svc, noop, func(context.Context, Done) (Done, error) { return Done{}, nil })
			orders := engine.NewService("wforders", "1")
			if err := workflow.Register(orders, e.store(), wf); err != nil {
				b.Fatal(err)
			}
			eng, _ := startEngine(b, bus, svc, orders)
			ctx, cancel := context.WithTimeout(engine.WithEngine(context.Background(), eng), 10*time.Minute)
			defer cancel()
			b.ResetTimer()
			if _, err := wf.Invoke(ctx, b.N); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs/step")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs/step")
			b.ReportMetric(float64(queries)/float64(b.N), "db-roundtrips/step")
		})
	}
}

// BenchmarkRuns measures runs per second with 16 runs executed at once (the
// runner's default Concurrency): b.N runs of one no-op local step (the
// shape of DBOS's published benchmark: the input, the step and the outcome
// written) and of three, are started by 16 callers, and the clock stops
// when the last one completed. It reports the database statements per run,
// everything included (start, claim, history, steps, end).
func BenchmarkRuns(b *testing.B) {
	for _, steps := range []int{1, 3} {
		b.Run(fmt.Sprintf("%dstep", steps), func(b *testing.B) { benchmarkRuns(b, steps) })
	}
}

func benchmarkRuns(b *testing.B, steps int) {
	e, qc, plain := countedEnv(b)
	bus := inprocBus(b)
	var completed atomic.Int64
	done := make(chan struct{})
	total := int64(b.N)
	wf := workflow.New("wforders", "1", "three", func(wf workflow.Context, in int) (int, error) {
		for i := range steps {
			if _, err := workflow.Step(wf, fmt.Sprint("s", i), func(context.Context) (int, error) { return i, nil }); err != nil {
				return 0, err
			}
		}
		return in, nil
	})
	orders := engine.NewService("wforders", "1")
	if err := workflow.Register(orders, e.store(), wf); err != nil {
		b.Fatal(err)
	}
	eng, _ := startEngine(b, bus, orders)
	ctx := engine.WithEngine(context.Background(), eng)
	go func() { // completion is seen in the database, by polling
		defer close(done)
		for completed.Load() < total {
			time.Sleep(5 * time.Millisecond)
			var n int64
			if err := plain.QueryRow(`SELECT count(*) FROM "` + e.schema + `".workflow_runs WHERE status = 'completed'`).Scan(&n); err != nil && err != sql.ErrConnDone {
				return
			}
			completed.Store(n)
		}
	}()
	b.ResetTimer()
	start := time.Now()
	q0 := qc.n.Load()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1); i <= total; i = next.Add(1) {
				if _, err := wf.Start(ctx, int(i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatal("runs not completed in 5 minutes")
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "runs/s")
	b.ReportMetric(float64(qc.n.Load()-q0)/float64(b.N), "db-roundtrips/run")
}
