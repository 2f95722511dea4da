// Command schedconsumer is the consumer of outbox's TestScheduledConformance,
// run as a process of its own so that it is built without the race
// detector (which makes a handler several times slower than in production,
// and the lateness it measures that of the test's instrumentation). It
// subscribes to the event "<name>.due" with the inbox and records each
// event's effect (its id, its due time from Meta.ScheduledFor, the time it
// ran) in the table effects of the schema, prints "ready" once consuming,
// and stops gracefully on SIGTERM or SIGINT.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/switchboard-go/switchboard/bridge"
	_ "github.com/switchboard-go/switchboard/bridge/all"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/middleware"
	"github.com/switchboard-go/switchboard/outbox"
)

// Order is the event's payload: outbox_test.Order (strictly decoded).
type Order struct {
	ID    int    `json:"id"`
	Item  string `json:"item"`
	Trace string `json:"trace,omitempty"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "schedconsumer:", err)
		os.Exit(1)
	}
}

func run() error {
	dbURL := flag.String("db", "", "PostgreSQL URL of the inbox and effects")
	schema := flag.String("schema", "", "schema of the inbox and of the effects table")
	bridgeURL := flag.String("bridge", "", "bridge URL to consume from")
	name := flag.String("name", "", "service name; the event is <name>.due")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	db, err := sql.Open("pgx", *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(40)
	db.SetMaxIdleConns(40) // database/sql keeps 2 by default and opens the others one at a time: see outbox.Inbox.DB
	b, err := bridge.Open(ctx, *bridgeURL)
	if err != nil {
		return err
	}
	defer b.Close()
	effects := `"` + *schema + `".effects`
	due := engine.NewEvent[Order](*name + ".due")
	svc := engine.NewService(*name, "1")
	engine.Subscribe(svc, due, func(ctx context.Context, o Order) error {
		ran := time.Now()
		tx, _ := outbox.TxFrom(ctx)
		_, err := tx.ExecContext(ctx, `INSERT INTO `+effects+` VALUES ($1, $2, $3)`, o.ID, engine.MetaFrom(ctx).ScheduledFor, ran)
		return err
	}, engine.Concurrency(32), engine.Use(outbox.Inbox{DB: db, Schema: *schema, Logger: slog.New(slog.DiscardHandler)}.Middleware()))
	e, err := engine.New(engine.Config{SharedBridge: b, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Reliability: engine.Reliability{Breaker: middleware.BreakerPolicy{Disabled: true}, MaxDeliveries: 100,
			Redelivery: middleware.Backoff{InitialInterval: 50 * time.Millisecond, MaxInterval: time.Second}}})
	if err != nil {
		return err
	}
	if err := e.Register(svc); err != nil {
		return err
	}
	if err := e.Start(ctx); err != nil {
		return err
	}
	fmt.Println("ready")
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return e.Stop(sctx)
}
