package workflow_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	_ "github.com/switchboard-go/switchboard/bridge/nats" // nats:// for the NATS runs
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/outbox"
	"github.com/switchboard-go/switchboard/workflow"
)

// The participants' contracts.
type (
	ChargeIn struct {
		Order  string `json:"order"`
		Amount int    `json:"amount"`
	}
	ChargeOut struct {
		PaymentID string `json:"payment_id"`
	}
	RefundIn struct {
		PaymentID string `json:"payment_id"`
		Reason    string `json:"reason,omitempty"`
	}
	Done    struct{}
	Shipped struct {
		Order   string `json:"order"`
		Carrier string `json:"carrier"`
	}
)

var (
	Charge    = engine.NewCommand[ChargeIn, ChargeOut]("wfpayments", "1", "charge")
	Refund    = engine.NewCommand[RefundIn, Done]("wfpayments", "1", "refund")
	Reserve   = engine.NewCommand[ChargeIn, Done]("wfstock", "1", "reserve")
	Release   = engine.NewCommand[ChargeIn, Done]("wfstock", "1", "release")
	Fail      = engine.NewCommand[ChargeIn, Done]("wfstock", "1", "fail")
	ShippedEv = engine.NewEvent[Shipped]("wftest.shipped")
)

func quiet() *slog.Logger {
	if os.Getenv("WF_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// env is a test's database schema, migrated.
type env struct {
	db     *sql.DB
	schema string
}

func newEnv(t testing.TB) env {
	t.Helper()
	db := testenv.PostgresDB(t)
	db.SetMaxIdleConns(50)
	schema := testenv.Schema(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := migrations.Up(ctx, db, migrations.Config{Schema: schema}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE "`+schema+`".effects (kind text NOT NULL, key text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`); err != nil {
		t.Fatal(err)
	}
	return env{db: db, schema: schema}
}

func (e env) store() *workflow.Store {
	return &workflow.Store{DB: e.db, Schema: e.schema, LeaseTTL: 3 * time.Second, PollInterval: time.Second, Logger: quiet(),
		StepRetry: engine.Retry{Backoff: engine.Backoff{InitialInterval: 20 * time.Millisecond, MaxInterval: 100 * time.Millisecond}}}
}

// effects counts the participants' effects of kind and key.
func (e env) effects(t testing.TB, kind, key string) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(`SELECT count(*) FROM "`+e.schema+`".effects WHERE kind = $1 AND key = $2`, kind, key).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// participants returns the payments and stock services: every handler
// records its effect in the effects table through outbox.Inbox, so each
// message has its effect once. fail decides whether stock.fail fails.
func (e env) participants(fail func(ChargeIn) error) []*engine.Service {
	inbox := engine.Use(outbox.Inbox{DB: e.db, Schema: e.schema, Logger: quiet()}.Middleware())
	effect := func(ctx context.Context, kind, key string) error {
		tx, _ := outbox.TxFrom(ctx)
		_, err := tx.ExecContext(ctx, `INSERT INTO "`+e.schema+`".effects (kind, key) VALUES ($1, $2)`, kind, key)
		return err
	}
	pay := engine.NewService("wfpayments", "1")
	engine.Handle(pay, Charge, func(ctx context.Context, in ChargeIn) (ChargeOut, error) {
		return ChargeOut{PaymentID: "p-" + in.Order}, effect(ctx, "charge", in.Order)
	}, inbox)
	engine.Handle(pay, Refund, func(ctx context.Context, in RefundIn) (Done, error) {
		return Done{}, effect(ctx, "refund", in.PaymentID)
	}, inbox)
	stock := engine.NewService("wfstock", "1")
	engine.Handle(stock, Reserve, func(ctx context.Context, in ChargeIn) (Done, error) {
		return Done{}, effect(ctx, "reserve", in.Order)
	}, inbox)
	engine.Handle(stock, Release, func(ctx context.Context, in ChargeIn) (Done, error) {
		return Done{}, effect(ctx, "release", in.Order)
	}, inbox)
	engine.Handle(stock, Fail, func(ctx context.Context, in ChargeIn) (Done, error) {
		if err := effect(ctx, "fail", in.Order); err != nil {
			return Done{}, err
		}
		if fail != nil {
			return Done{}, fail(in)
		}
		return Done{}, nil
	}, inbox)
	return []*engine.Service{pay, stock}
}

// transports are the buses the tests run on.
var transports = []struct {
	name string
	open func(t testing.TB) bridge.Bridge
}{
	{"inproc", func(testing.TB) bridge.Bridge { return inproc.New() }},
	{"nats", func(t testing.TB) bridge.Bridge {
		b, err := bridge.Open(context.Background(), testenv.URL(t, testenv.NATS))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}},
}

// startEngine runs services on bus until the test ends (or stop is
// called).
func startEngine(t testing.TB, bus bridge.Bridge, services ...*engine.Service) (*engine.Engine, func()) {
	t.Helper()
	eng, err := engine.New(engine.Config{SharedBridge: bus, Logger: quiet(), DrainTimeout: 3 * time.Second, CallTimeout: 5 * time.Second,
		Reliability: engine.Reliability{CallBreaker: engine.BreakerPolicy{Disabled: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Register(services...); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := eng.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	}
	t.Cleanup(stop)
	return eng, stop
}

// eventually polls cond every 20 ms until it holds, for at most d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// run is a row of workflow_runs, as the tests read it.
type run struct {
	status, errJSON string
	claims          int
}

func (e env) run(t testing.TB, id string) run {
	t.Helper()
	var r run
	var errJS sql.NullString
	if err := e.db.QueryRow(`SELECT status, error::text, claims FROM "`+e.schema+`".workflow_runs WHERE id = $1`, id).Scan(&r.status, &errJS, &r.claims); err != nil {
		t.Fatalf("run %s: %v", id, err)
	}
	r.errJSON = errJS.String
	return r
}

// steps returns "kind name" of each recorded step of run id, in order.
func (e env) steps(t testing.TB, id string) []string {
	t.Helper()
	rows, err := e.db.Query(`SELECT kind, name FROM "`+e.schema+`".workflow_steps WHERE run_id = $1 ORDER BY seq`, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k, n string
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %s", k, n))
	}
	return out
}

func inprocBus(t testing.TB) bridge.Bridge {
	b := inproc.New()
	t.Cleanup(func() { _ = b.Close() })
	return b
}
