// Command outbox is the transactional outbox end to end: an orders service
// stores an order and emits orders.placed in ONE PostgreSQL transaction; a
// relay forwards the outbox to the broker (NATS by default: another
// backend); a billing service consumes orders.placed through the inbox and
// records one invoice per order, whatever the redeliveries.
//
// It needs PostgreSQL and, by default, NATS. The database is the README's
// demo database, $SWITCHBOARD_DB or by default
// postgres://postgres@127.0.0.1:5432/switchboard?sslmode=disable, created
// once with
//
//	createdb -h 127.0.0.1 -U postgres switchboard
//
// (the example creates its tables, in the schema outbox_example, not the
// database). The broker is $SWITCHBOARD_BRIDGE, by default
// nats://127.0.0.1:4222:
//
//	go run ./examples/outbox
//	SWITCHBOARD_BRIDGE=amqp://guest:guest@127.0.0.1:5672/ go run ./examples/outbox
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"

	_ "github.com/switchboard-go/switchboard/bridge/all"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/outbox"
)

// Order is a placed order.
type Order struct {
	ID   int64  `json:"id"`
	Item string `json:"item"`
	Qty  int    `json:"qty"`
}

// PlaceOrderIn is the input of PlaceOrder.
type PlaceOrderIn struct {
	Item string `json:"item"`
	Qty  int    `json:"qty"`
}

// Validate implements engine.Validator.
func (in PlaceOrderIn) Validate() error {
	if in.Item == "" {
		return engine.Invalid("item", "is required")
	}
	if in.Qty < 1 {
		return engine.Invalid("qty", "must be at least 1")
	}
	return nil
}

var (
	// OrderPlaced is emitted, through the outbox, for every stored order.
	OrderPlaced = engine.NewEvent[Order]("orders.placed")
	// PlaceOrder stores an order.
	PlaceOrder = engine.NewCommand[PlaceOrderIn, Order]("orders", "1", "placeOrder")
)

const schema = "outbox_example"

// Defaults when $SWITCHBOARD_DB and $SWITCHBOARD_BRIDGE are empty.
const (
	defaultDB     = "postgres://postgres@127.0.0.1:5432/switchboard?sslmode=disable"
	defaultBridge = "nats://127.0.0.1:4222"
)

func main() {
	if err := run(context.Background(), os.Getenv("SWITCHBOARD_DB"), os.Getenv("SWITCHBOARD_BRIDGE")); err != nil {
		fmt.Fprintln(os.Stderr, "outbox:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dbURL, bridgeURL string) error {
	if dbURL == "" {
		dbURL = defaultDB
	}
	if bridgeURL == "" {
		bridgeURL = defaultBridge
	}
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxIdleConns(8) // a connection per inbox handler running, kept (see outbox.Inbox.DB)
	// 1. Migrate: the library's tables (outbox, inbox, …), then the example's.
	if _, err := migrations.Up(ctx, db, migrations.Config{Schema: schema}); err != nil {
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "3D000" { // invalid_catalog_name
			return fmt.Errorf("%w\n(the database does not exist: create it once, for the default one with 'createdb -h 127.0.0.1 -U postgres switchboard')", err)
		}
		return err
	}
	if _, err := db.ExecContext(ctx, `
		CREATE TABLE IF NOT EXISTS `+schema+`.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, item text NOT NULL, qty int NOT NULL);
		CREATE TABLE IF NOT EXISTS `+schema+`.invoices (order_id bigint NOT NULL, amount int NOT NULL)`); err != nil {
		return err
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng, err := engine.New(engine.Config{Bridge: bridgeURL, Logger: log})
	if err != nil {
		return err
	}
	if err := eng.Register(ordersService(db), billingService(db)); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := eng.Start(ctx); err != nil {
		return err
	}
	defer eng.Stop(context.Background())

	// 2. The relay: here in-process; in production `switchboard relay`.
	go func() {
		_ = outbox.Relay{DatabaseURL: dbURL, Schema: schema, Target: eng.Bridge(), Logger: log}.Run(ctx)
	}()

	// 3. Place orders; each one's event leaves through the outbox.
	var ids []int64
	for _, in := range []PlaceOrderIn{{Item: "book", Qty: 2}, {Item: "lamp", Qty: 1}, {Item: "pen", Qty: 10}} {
		o, err := PlaceOrder.Invoke(engine.WithEngine(ctx, eng), in)
		if err != nil {
			return fmt.Errorf("placeOrder: %w", err)
		}
		fmt.Printf("order %d placed: %d × %s (row and event committed together)\n", o.ID, o.Qty, o.Item)
		ids = append(ids, o.ID)
	}
	for _, id := range ids {
		if err := waitInvoice(ctx, db, id); err != nil {
			return err
		}
	}
	return nil
}

// ordersService stores an order and emits OrderPlaced in one transaction.
func ordersService(db *sql.DB) *engine.Service {
	svc := engine.NewService("orders", "1")
	engine.Handle(svc, PlaceOrder, func(ctx context.Context, in PlaceOrderIn) (Order, error) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return Order{}, err
		}
		defer tx.Rollback()
		o := Order{Item: in.Item, Qty: in.Qty}
		if err := tx.QueryRowContext(ctx, `INSERT INTO `+schema+`.orders (item, qty) VALUES ($1, $2) RETURNING id`, in.Item, in.Qty).Scan(&o.ID); err != nil {
			return Order{}, err
		}
		if err := OrderPlaced.Emit(outbox.WithTx(ctx, tx, schema), o); err != nil {
			return Order{}, err
		}
		return o, tx.Commit()
	})
	return svc
}

// billingService records one invoice per order, idempotently: the inbox
// and the invoice are written in the same transaction.
func billingService(db *sql.DB) *engine.Service {
	svc := engine.NewService("billing", "1")
	inbox := outbox.Inbox{DB: db, Schema: schema}
	engine.Subscribe(svc, OrderPlaced, func(ctx context.Context, o Order) error {
		tx, _ := outbox.TxFrom(ctx)
		_, err := tx.ExecContext(ctx, `INSERT INTO `+schema+`.invoices (order_id, amount) VALUES ($1, $2)`, o.ID, o.Qty*100)
		return err
	}, engine.Use(inbox.Middleware()))
	return svc
}

func waitInvoice(ctx context.Context, db *sql.DB, id int64) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		var n, amount int
		err := db.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(amount), 0) FROM `+schema+`.invoices WHERE order_id = $1`, id).Scan(&n, &amount)
		if err != nil {
			return err
		}
		if n > 0 {
			fmt.Printf("order %d invoiced once: %d invoice(s), amount %d\n", id, n, amount)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("order %d was never invoiced", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
