package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/outbox"
)

type Order struct {
	ID    int    `json:"id"`
	Item  string `json:"item"`
	Trace string `json:"trace,omitempty"`
}

var (
	OrderPlaced = engine.NewEvent[Order]("orders.placed")
	ShipOrder   = engine.NewCommand[Order, Order]("shipping", "1", "ship")
)

// setup returns the database URL, an open *sql.DB and a fresh migrated
// schema, dropped when the test ends.
func setup(t *testing.T) (string, *sql.DB, string) {
	t.Helper()
	url := testenv.URL(t, testenv.Postgres)
	db := testenv.PostgresDB(t)
	schema := testenv.Schema(t, db)
	if _, err := migrations.Up(t.Context(), db, migrations.Config{Schema: schema}); err != nil {
		t.Fatal(err)
	}
	return url, db, schema
}

func rows(t *testing.T, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func newEngine(t *testing.T, b bridge.Bridge, services ...*engine.Service) *engine.Engine {
	t.Helper()
	e, err := engine.New(engine.Config{SharedBridge: b, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Register(services...); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestTransactionalPublish(t *testing.T) {
	url, db, schema := setup(t)
	e := newEngine(t, inproc.New())
	ctx := engine.WithMeta(engine.WithEngine(t.Context(), e), engine.Meta{CorrelationID: "corr-7"})
	outboxRows := func() int { return rows(t, db, `SELECT count(*) FROM "`+schema+`".outbox`) }

	// database/sql: rollback leaves nothing, commit leaves the message.
	for _, commit := range []bool{false, true} {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		tctx := outbox.WithTx(ctx, tx, schema)
		if err := OrderPlaced.Emit(tctx, Order{ID: 1, Item: "book"}); err != nil {
			t.Fatal(err)
		}
		if err := ShipOrder.Send(tctx, Order{ID: 1}); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
		if got, want := outboxRows(), map[bool]int{false: 0, true: 2}[commit]; got != want {
			t.Fatalf("commit=%v: %d outbox rows, want %d", commit, got, want)
		}
	}
	var topic, md string
	if err := db.QueryRow(`SELECT topic, metadata::text FROM "`+schema+`".outbox ORDER BY id LIMIT 1`).Scan(&topic, &md); err != nil {
		t.Fatal(err)
	}
	if topic != "event.orders.placed" || !strings.Contains(md, `"correlation_id": "corr-7"`) || !strings.Contains(md, `"kind": "event"`) {
		t.Errorf("row: topic %s metadata %s", topic, md)
	}

	// pgx
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := OrderPlaced.Emit(outbox.WithPgxTx(ctx, tx, schema), Order{ID: 2}); err != nil {
		t.Fatal(err)
	}
	if outboxRows() != 2 {
		t.Error("an uncommitted pgx transaction is visible")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if outboxRows() != 3 {
		t.Errorf("%d rows after the pgx commit, want 3", outboxRows())
	}
}

// collector subscribes to topic on b and records payload ids in order.
type collector struct {
	mu  sync.Mutex
	ids []int
}

func collect(t *testing.T, b bridge.Bridge, topic, group string) *collector {
	t.Helper()
	sub, err := b.Subscriber(t.Context(), bridge.Spec{Topic: topic, Group: group, Kind: bridge.Event, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	c := &collector{}
	go func() {
		for m := range ch {
			var o Order
			_ = jsonUnmarshal(m.Payload, &o)
			c.mu.Lock()
			c.ids = append(c.ids, o.ID)
			c.mu.Unlock()
			m.Ack()
		}
	}()
	return c
}

func (c *collector) snapshot() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.ids...)
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
	}
}

// waitForStats waits until the stats of schema's outbox satisfy ok, and
// fails with the last stats read if they do not within d. The relay marks
// rows forwarded after it has published them, so a test that has seen a
// message arrive must wait for the row's new state: reading it at once
// races with the relay.
func waitForStats(t *testing.T, db *sql.DB, schema string, d time.Duration, what string, ok func(outbox.Stats) bool) {
	t.Helper()
	var (
		s   outbox.Stats
		err error
	)
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		if s, err = outbox.ReadStats(t.Context(), db, schema); err == nil && ok(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: stats %+v, %v", d, what, s, err)
		}
	}
}

// emitOrders writes orders from..to-1, each in its own committed transaction.
func emitOrders(t *testing.T, e *engine.Engine, db *sql.DB, schema string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if err := OrderPlaced.Emit(outbox.WithTx(engine.WithEngine(t.Context(), e), tx, schema), Order{ID: i}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

func runRelay(t *testing.T, r outbox.Relay) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("relay: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return cancel
}

func TestRelayForwardsInOrderAndCleansUp(t *testing.T) {
	url, db, schema := setup(t)
	bus := inproc.New()
	got := collect(t, bus, "event.orders.placed", "g")
	e := newEngine(t, inproc.New())
	const n = 300
	emitOrders(t, e, db, schema, 0, n/2)
	runRelay(t, outbox.Relay{DatabaseURL: url, Schema: schema, Target: bus, Retention: -1, PollInterval: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	emitOrders(t, e, db, schema, n/2, n) // arrives by notification: the poll is a minute
	waitFor(t, 20*time.Second, "every order", func() bool { return len(got.snapshot()) >= n })
	for i, id := range got.snapshot() {
		if id != i {
			t.Fatalf("order %d arrived at position %d: order not preserved", id, i)
		}
	}
	waitFor(t, 5*time.Second, "forwarded rows deleted", func() bool {
		return rows(t, db, `SELECT count(*) FROM "`+schema+`".outbox`) == 0
	})
	s, err := outbox.ReadStats(t.Context(), db, schema)
	if err != nil || s.Backlog != 0 || s.OldestAge != 0 {
		t.Errorf("stats %+v %v", s, err)
	}
}

func TestStatsAndRetention(t *testing.T) {
	url, db, schema := setup(t)
	e := newEngine(t, inproc.New())
	emitOrders(t, e, db, schema, 0, 5)
	time.Sleep(20 * time.Millisecond)
	s, err := outbox.ReadStats(t.Context(), db, schema)
	if err != nil || s.Backlog != 5 || s.OldestAge < 20*time.Millisecond {
		t.Errorf("stats before the relay: %+v %v", s, err)
	}
	bus := inproc.New()
	collect(t, bus, "event.orders.placed", "g")
	runRelay(t, outbox.Relay{DatabaseURL: url, Schema: schema, Target: bus, Retention: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	waitFor(t, 10*time.Second, "the backlog to drain", func() bool {
		s, _ := outbox.ReadStats(t.Context(), db, schema)
		return s.Backlog == 0
	})
	if n := rows(t, db, `SELECT count(*) FROM "`+schema+`".outbox WHERE forwarded_at IS NOT NULL`); n != 5 {
		t.Errorf("%d forwarded rows kept, want 5 (retention 1 h)", n)
	}
}

func TestTwoRelays(t *testing.T) {
	url, db, schema := setup(t)
	bus := inproc.New()
	got := collect(t, bus, "event.orders.placed", "g")
	e := newEngine(t, inproc.New())
	var logs [2]*testenv.LogBuffer
	var stop [2]context.CancelFunc
	for i := range 2 {
		logs[i] = &testenv.LogBuffer{}
		stop[i] = runRelay(t, outbox.Relay{DatabaseURL: url, Schema: schema, Target: bus, Retention: -1, LeaderPoll: 50 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(logs[i], nil))})
	}
	const n = 400
	emitOrders(t, e, db, schema, 0, n)
	waitFor(t, 20*time.Second, "the first orders", func() bool { return len(got.snapshot()) >= n })
	// Marked forwarded before the leader dies: else the standby forwards
	// them again, as it should.
	waitForStats(t, db, schema, 10*time.Second, "the first orders marked forwarded", func(s outbox.Stats) bool { return s.Backlog == 0 })
	time.Sleep(200 * time.Millisecond)
	if c := len(got.snapshot()); c != n {
		t.Errorf("steady state: %d messages forwarded for %d orders (duplicates)", c, n)
	}
	leader := -1
	for i := range 2 {
		if strings.Contains(logs[i].String(), "leading") {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no relay says it leads")
	}
	stop[leader]() // the leader dies; the other must take over
	emitOrders(t, e, db, schema, n, 2*n)
	waitFor(t, 20*time.Second, "the orders written after the leader died", func() bool { return len(got.snapshot()) >= 2*n })
	seen := map[int]int{}
	for _, id := range got.snapshot() {
		seen[id]++
	}
	for i := range 2 * n {
		if seen[i] != 1 {
			t.Fatalf("order %d forwarded %d times", i, seen[i])
		}
	}
	if !strings.Contains(logs[1-leader].String(), "leading") {
		t.Error("the standby never took over")
	}
}

func TestInboxExactlyOnceEffect(t *testing.T) {
	_, db, schema := setup(t)
	if _, err := db.Exec(`CREATE TABLE "` + schema + `".effects (order_id int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	failNext := map[int]bool{7: true}
	svc := engine.NewService("billing", "1")
	inbox := outbox.Inbox{DB: db, Schema: schema}
	engine.Subscribe(svc, OrderPlaced, func(ctx context.Context, o Order) error {
		tx, ok := outbox.TxFrom(ctx)
		if !ok {
			return fmt.Errorf("no inbox transaction")
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO "`+schema+`".effects VALUES ($1)`, o.ID); err != nil {
			return err
		}
		if err := ShipOrder.Send(ctx, o); err != nil { // into the outbox, same transaction
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if failNext[o.ID] {
			delete(failNext, o.ID)
			return fmt.Errorf("crash after the writes")
		}
		return nil
	}, engine.Use(inbox.Middleware()))
	bus := inproc.New()
	newEngine(t, bus, svc)

	// The same message delivered three times (a broker redelivering).
	publish := func(id int, uuid string) {
		m := message.NewMessage(uuid, []byte(fmt.Sprintf(`{"id":%d}`, id)))
		m.Metadata.Set("correlation_id", "c")
		if err := bus.Publisher().Publish("event.orders.placed", m); err != nil {
			t.Fatal(err)
		}
	}
	dup := watermill.NewUUID()
	for range 3 {
		publish(1, dup)
	}
	publish(7, watermill.NewUUID()) // fails once after writing: everything rolls back, then succeeds
	q := `SELECT count(*) FROM "` + schema + `".`
	waitFor(t, 10*time.Second, "both orders' effects", func() bool { return rows(t, db, q+`effects`) >= 2 })
	time.Sleep(200 * time.Millisecond)
	if e, o, in := rows(t, db, q+`effects`), rows(t, db, q+`outbox`), rows(t, db, q+`inbox`); e != 2 || o != 2 || in != 2 {
		t.Errorf("effects %d, outbox rows %d, inbox rows %d; want 2 of each (once per distinct message)", e, o, in)
	}
	if n, err := outbox.PurgeInbox(t.Context(), db, schema, time.Hour); err != nil || n != 0 {
		t.Errorf("purge of fresh rows: %d, %v", n, err)
	}
	if _, err := db.Exec(`UPDATE "` + schema + `".inbox SET processed_at = now() - interval '2 hours'`); err != nil {
		t.Fatal(err)
	}
	if n, err := outbox.PurgeInbox(t.Context(), db, schema, time.Hour); err != nil || n != 2 {
		t.Errorf("purge of old rows: %d, %v", n, err)
	}
}

func TestRelayConfigErrors(t *testing.T) {
	err := outbox.Relay{DatabaseURL: "::bad", Schema: "bad schema!", BatchSize: -1, PollInterval: -1}.Validate()
	for _, want := range []string{"DatabaseURL", "schema", "target bridge is nil", "BatchSize", "PollInterval"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate does not report %q: %v", want, err)
		}
	}
}

// A command whose service has not subscribed yet is not dropped: the relay
// waits for it; an event nobody subscribes to is done.
func TestInboxConfigErrors(t *testing.T) {
	in := outbox.Inbox{Schema: "bad schema!"}
	err := in.Validate()
	for _, want := range []string{"DB is nil", "schema"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate does not report %q: %v", want, err)
		}
	}
	defer func() {
		if v := recover(); v == nil || !strings.Contains(fmt.Sprint(v), "DB is nil") {
			t.Errorf("Middleware of an invalid Inbox: recovered %v", v)
		}
	}()
	in.Middleware()
}

func TestRelayKeepsCommandsUntilTheirServiceSubscribes(t *testing.T) {
	url, db, schema := setup(t)
	bus := inproc.New()
	e := newEngine(t, inproc.New())
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	ctx := outbox.WithTx(engine.WithEngine(t.Context(), e), tx, schema)
	if err := OrderPlaced.Emit(ctx, Order{ID: 1}); err != nil { // nobody subscribes: done
		t.Fatal(err)
	}
	if err := ShipOrder.Send(ctx, Order{ID: 2}); err != nil { // shipping not running yet
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	runRelay(t, outbox.Relay{DatabaseURL: url, Schema: schema, Target: bus, Retention: -1, LeaderPoll: 50 * time.Millisecond, Logger: discard()})
	waitFor(t, 10*time.Second, "the event to be done", func() bool {
		return rows(t, db, `SELECT count(*) FROM "`+schema+`".outbox WHERE topic = 'event.orders.placed'`) == 0
	})
	time.Sleep(300 * time.Millisecond)
	if n := rows(t, db, `SELECT count(*) FROM "`+schema+`".outbox WHERE topic = 'shipping.v1.ship'`); n != 1 {
		t.Fatalf("the command was dropped before its service subscribed (%d rows)", n)
	}
	got := collect(t, bus, "shipping.v1.ship", "shipping.v1") // the service starts
	waitFor(t, 10*time.Second, "the command to arrive", func() bool { return len(got.snapshot()) == 1 })
}
