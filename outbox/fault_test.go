package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	_ "github.com/switchboard-go/switchboard/bridge/all"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/middleware"
	"github.com/switchboard-go/switchboard/outbox"
)

var (
	buildOnce sync.Once
	relayBin  string
	buildErr  error
)

// switchboardBinary builds cmd/switchboard once per test run.
func switchboardBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "switchboard-relay-")
		if err != nil {
			buildErr = err
			return
		}
		relayBin = filepath.Join(dir, "switchboard")
		out, err := exec.Command("go", "build", "-o", relayBin, "../cmd/switchboard").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return relayBin
}

// relayProcess is one `switchboard relay` OS process that can be killed
// and restarted.
type relayProcess struct {
	t    *testing.T
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

func (r *relayProcess) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := exec.Command(switchboardBinary(r.t), r.args...)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		r.t.Errorf("starting a relay: %v", err)
		return
	}
	go func() { _ = cmd.Wait() }()
	r.cmd = cmd
}

func (r *relayProcess) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		r.cmd = nil
	}
}

// TestFaultsNoLossNoGhostExactlyOnce is the outbox's proof: 10 000
// transactions each store an order and emit orders.placed; one in ten rolls
// back. Two relay processes forward to the broker while they are SIGKILLed
// and restarted at random moments and their PostgreSQL connections are
// terminated. A consumer with the inbox records each order's effect. Every
// committed order must have exactly one effect, and no rolled-back order
// any.
func TestFaultsNoLossNoGhostExactlyOnce(t *testing.T) {
	for _, broker := range []string{testenv.NATS, testenv.Postgres} {
		t.Run(broker, func(t *testing.T) { faultRun(t, broker, 10_000) })
	}
}

func faultRun(t *testing.T, broker string, n int) {
	dbURL, db, schema := setup(t)
	q := func(table string) string { return `"` + schema + `".` + table }
	if _, err := db.Exec(`CREATE TABLE ` + q("orders") + ` (id int PRIMARY KEY); CREATE TABLE ` + q("effects") + ` (order_id int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	target := testenv.URL(t, broker)
	if broker == testenv.Postgres {
		target = withParam(target, "schema", schema)
	}
	b, err := bridge.Open(t.Context(), target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })

	name := "f" + strings.ToLower(watermill.NewShortUUID()[:8])
	placed := engine.NewEvent[Order](name + ".placed")
	var calls atomic.Int64
	svc := engine.NewService(name, "1")
	count := func(h message.HandlerFunc) message.HandlerFunc {
		return func(m *message.Message) ([]*message.Message, error) { calls.Add(1); return h(m) }
	}
	engine.Subscribe(svc, placed, func(ctx context.Context, o Order) error {
		tx, _ := outbox.TxFrom(ctx)
		_, err := tx.ExecContext(ctx, `INSERT INTO `+q("effects")+` VALUES ($1)`, o.ID)
		return err
	}, engine.Concurrency(8), engine.Use(count, outbox.Inbox{DB: db, Schema: schema}.Middleware()))
	consumer, err := engine.New(engine.Config{SharedBridge: b, Logger: discard(),
		Reliability: engine.Reliability{Breaker: middleware.BreakerPolicy{Disabled: true}, MaxDeliveries: 100,
			Redelivery: middleware.Backoff{InitialInterval: 50 * time.Millisecond, MaxInterval: time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := consumer.Register(svc); err != nil {
		t.Fatal(err)
	}
	if err := consumer.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = consumer.Stop(context.Background()) })

	appName := "sbrelay_" + schema
	args := []string{"relay", "--db", withParam(dbURL, "application_name", appName), "--schema", schema,
		"--bridge", target, "--poll", "200ms", "--retention", "0"}
	relays := []*relayProcess{{t: t, args: args}, {t: t, args: args}}
	for _, r := range relays {
		r.start()
		t.Cleanup(r.kill)
	}

	// Chaos until the producers are done.
	stopChaos := make(chan struct{})
	var kills, cuts atomic.Int64
	var chaos sync.WaitGroup
	chaos.Go(func() {
		for {
			select {
			case <-stopChaos:
				return
			case <-time.After(time.Duration(200+rand.IntN(600)) * time.Millisecond):
			}
			if rand.IntN(3) == 0 {
				res, err := db.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, appName)
				if err == nil {
					k, _ := res.RowsAffected()
					cuts.Add(k)
				}
				continue
			}
			r := relays[rand.IntN(len(relays))]
			r.kill()
			kills.Add(1)
			time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
			r.start()
		}
	})

	producer, err := engine.New(engine.Config{SharedBridge: b, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	if err := producer.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = producer.Stop(context.Background()) })
	var committed, rolledBack atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				if err := writeOrder(engine.WithEngine(t.Context(), producer), db, schema, placed, i, i%10 == 3); err != nil {
					t.Errorf("order %d: %v", i, err)
					return
				}
				if i%10 == 3 {
					rolledBack.Add(1)
				} else {
					committed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(stopChaos)
	chaos.Wait()
	for _, r := range relays {
		r.kill()
		r.start() // both alive for the end
	}

	want := int(committed.Load())
	waitFor(t, 3*time.Minute, fmt.Sprintf("%d effects", want), func() bool {
		return rows(t, db, `SELECT count(DISTINCT order_id) FROM `+q("effects")) >= want
	})
	time.Sleep(time.Second) // a late duplicate would show now
	total := rows(t, db, `SELECT count(*) FROM `+q("effects"))
	distinct := rows(t, db, `SELECT count(DISTINCT order_id) FROM `+q("effects"))
	ghosts := rows(t, db, `SELECT count(*) FROM `+q("effects")+` e LEFT JOIN `+q("orders")+` o ON o.id = e.order_id WHERE o.id IS NULL`)
	missing := rows(t, db, `SELECT count(*) FROM `+q("orders")+` o WHERE NOT EXISTS (SELECT 1 FROM `+q("effects")+` e WHERE e.order_id = o.id)`)
	if distinct != want || missing != 0 {
		t.Errorf("delivered: %d committed orders have an effect, want %d (%d missing)", distinct, want, missing)
	}
	if ghosts != 0 {
		t.Errorf("%d effects of rolled-back orders", ghosts)
	}
	if total != distinct {
		t.Errorf("exactly once: %d effects for %d orders", total, distinct)
	}
	t.Logf("%s: %d transactions (%d committed, %d rolled back); %d relay SIGKILLs, %d relay connections terminated; "+
		"%d handler runs for %d effects (%d redeliveries absorbed by the inbox); ghosts %d, missing %d",
		broker, n, want, rolledBack.Load(), kills.Load(), cuts.Load(), calls.Load(), total, calls.Load()-int64(total), ghosts, missing)
}

func writeOrder(ctx context.Context, db *sql.DB, schema string, ev *engine.Event[Order], id int, rollback bool) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO "`+schema+`".orders VALUES ($1)`, id); err != nil {
		return err
	}
	if err := ev.Emit(outbox.WithTx(ctx, tx, schema), Order{ID: id}); err != nil {
		return err
	}
	if rollback {
		return tx.Rollback()
	}
	return tx.Commit()
}

func withParam(raw, k, v string) string {
	sep := "?"
	if strings.Contains(raw, "?") {
		sep = "&"
	}
	return raw + sep + k + "=" + v
}
