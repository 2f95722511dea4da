// Command workflow is a durable workflow end to end: the orders service
// runs the workflow "place" (payment, stock, shipping, a wait for the
// parcel to leave, a pause, a closing event), checkpointed step by step in
// PostgreSQL, over three other services — payments, inventory, shipping —
// each of which has its effects exactly once through outbox.Inbox. One
// order asks for an item that is never in stock: its run fails for good at
// the reservation and the refund of its payment runs as a compensation.
//
// Each step of a run is recorded when it ends, so a run survives its
// process: another instance (or this one, restarted) resumes it after its
// last recorded step, and a message a step sent again after a crash keeps
// its id, which the participant's inbox has seen. The transport changes
// nothing of this: the store is PostgreSQL, the messages go by
// $SWITCHBOARD_BRIDGE (empty: in process; nats://, amqp://, postgres://).
//
// The database is $SWITCHBOARD_DB, by default the README's demo database
// postgres://postgres@127.0.0.1:5432/switchboard?sslmode=disable, created
// once with
//
//	createdb -h 127.0.0.1 -U postgres switchboard
//
// (the example creates its tables, in the schema workflow_example):
//
//	go run ./examples/workflow
//	SWITCHBOARD_BRIDGE=nats://127.0.0.1:4222 go run ./examples/workflow
//
// It prints each order's outcome, the participants' rows for it and the
// run's recorded steps (workflow.Show, what `switchboard workflow show`
// prints), then exits.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"

	_ "github.com/switchboard-go/switchboard/bridge/all"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/outbox"
	"github.com/switchboard-go/switchboard/workflow"
)

// PlaceIn is an order to place.
type PlaceIn struct {
	OrderID string `json:"order_id"`
	Item    string `json:"item"`
	Qty     int    `json:"qty"`
	Amount  int    `json:"amount"` // in cents
}

// Validate implements engine.Validator.
func (in PlaceIn) Validate() error {
	switch {
	case in.OrderID == "":
		return engine.Invalid("order_id", "is required")
	case in.Item == "":
		return engine.Invalid("item", "is required")
	case in.Qty < 1:
		return engine.Invalid("qty", "must be at least 1")
	case in.Amount < 1:
		return engine.Invalid("amount", "must be at least 1")
	}
	return nil
}

// PlaceOut is a placed order: what each participant gave it.
type PlaceOut struct {
	PaymentID     string `json:"payment_id"`
	ReservationID string `json:"reservation_id"`
	Tracking      string `json:"tracking"`
}

// The participants' contracts.
type (
	// ChargeIn charges an order's amount.
	ChargeIn struct {
		OrderID string `json:"order_id"`
		Amount  int    `json:"amount"`
	}
	// Payment is a charge made.
	Payment struct {
		PaymentID string `json:"payment_id"`
	}
	// RefundIn refunds amount of a payment.
	RefundIn struct {
		PaymentID string `json:"payment_id"`
		Amount    int    `json:"amount"`
	}
	// ReserveIn reserves stock for an order.
	ReserveIn struct {
		OrderID string `json:"order_id"`
		Item    string `json:"item"`
		Qty     int    `json:"qty"`
	}
	// Reservation is stock set aside.
	Reservation struct {
		ReservationID string `json:"reservation_id"`
	}
	// ReleaseIn gives the stock of an order's reservation back.
	ReleaseIn struct {
		OrderID       string `json:"order_id"`
		ReservationID string `json:"reservation_id"`
	}
	// ShipIn asks for an order to be shipped.
	ShipIn struct {
		OrderID string `json:"order_id"`
	}
	// Shipment is an order handed to the carrier; Shipped is emitted when
	// the parcel leaves.
	Shipment struct {
		OrderID  string `json:"order_id"`
		Tracking string `json:"tracking"`
	}
	// Completed is an order whose workflow ended well.
	Completed struct {
		OrderID  string `json:"order_id"`
		Tracking string `json:"tracking"`
	}
	// Done is an empty reply.
	Done struct{}
)

var (
	Charge  = engine.NewCommand[ChargeIn, Payment]("payments", "1", "charge")
	Refund  = engine.NewCommand[RefundIn, Done]("payments", "1", "refund")
	Reserve = engine.NewCommand[ReserveIn, Reservation]("inventory", "1", "reserve")
	Release = engine.NewCommand[ReleaseIn, Done]("inventory", "1", "release")
	Ship    = engine.NewCommand[ShipIn, Shipment]("shipping", "1", "ship")
	// Shipped is emitted by shipping when the parcel has left.
	Shipped = engine.NewEvent[Shipment]("shipping.shipped")
	// OrderCompleted closes a placed order.
	OrderCompleted = engine.NewEvent[Completed]("orders.completed")

	// PlaceOrder is the workflow: run by the orders service, started by
	// anyone with an engine (PlaceOrder.Invoke). Correlate makes the orders
	// service subscribe to Shipped and match each event to the run that
	// awaits its order id.
	PlaceOrder = workflow.New("orders", "1", "place", placeOrder,
		workflow.Correlate(Shipped, func(s Shipment) string { return s.OrderID }))
)

// Durations of the demo, with what they stand for in production.
const (
	// shippedWithin bounds the wait for the parcel to leave (48 h, say).
	shippedWithin = 30 * time.Second
	// followUpAfter stands for "wait 15 min before the follow-up mail".
	// Over a second, the sleep is durable: the run is given back to the
	// store until then, and a runner (of any instance) claims it again at
	// its due time.
	followUpAfter = 1500 * time.Millisecond
	// carrierDelay is when the parcel leaves after the ship command.
	carrierDelay = 300 * time.Millisecond
)

// placeOrder is the workflow's function. Each workflow.* call is a step,
// recorded when it ends; run again after a crash, the function gets the
// recorded outcomes of the steps done and goes on from the first one not
// done. Its code must therefore reach the same steps in the same order on
// every run (a changed workflow is deployed under a new version).
func placeOrder(wf workflow.Context, in PlaceIn) (PlaceOut, error) {
	pay, err := workflow.Invoke(wf, Charge, ChargeIn{OrderID: in.OrderID, Amount: in.Amount})
	if err != nil {
		return PlaceOut{}, err
	}
	// From here on, a failure of the run refunds the payment.
	workflow.OnFailure(wf, Refund, RefundIn{PaymentID: pay.PaymentID, Amount: in.Amount})

	res, err := workflow.Invoke(wf, Reserve, ReserveIn{OrderID: in.OrderID, Item: in.Item, Qty: in.Qty})
	if err != nil {
		return PlaceOut{}, err // permanent (out of stock): the refund runs
	}
	workflow.OnFailure(wf, Release, ReleaseIn{OrderID: in.OrderID, ReservationID: res.ReservationID})

	if _, err := workflow.Invoke(wf, Ship, ShipIn{OrderID: in.OrderID}); err != nil {
		return PlaceOut{}, err
	}
	// No process holds the run while it waits: the event wakes it.
	shipped, err := workflow.Await(wf, Shipped, in.OrderID, shippedWithin)
	if err != nil {
		return PlaceOut{}, err // workflow.ErrAwaitTimeout: release, then refund
	}

	if err := workflow.Sleep(wf, followUpAfter); err != nil {
		return PlaceOut{}, err
	}
	if err := workflow.Emit(wf, OrderCompleted, Completed{OrderID: in.OrderID, Tracking: shipped.Tracking}); err != nil {
		return PlaceOut{}, err
	}
	return PlaceOut{PaymentID: pay.PaymentID, ReservationID: res.ReservationID, Tracking: shipped.Tracking}, nil
}

// Defaults when $SWITCHBOARD_DB is empty; the schema of main's tables.
const (
	defaultDB = "postgres://postgres@127.0.0.1:5432/switchboard?sslmode=disable"
	schema    = "workflow_example"
)

func main() {
	if err := run(context.Background(), os.Stdout, os.Getenv("SWITCHBOARD_DB"), os.Getenv("SWITCHBOARD_BRIDGE"), schema); err != nil {
		fmt.Fprintln(os.Stderr, "workflow:", err)
		os.Exit(1)
	}
}

// run places two orders, one that completes and one that fails, on the
// transport bridgeURL ("" in process) with the store dbURL in schema, and
// prints to w what happened. It fails if an order ends otherwise.
func run(ctx context.Context, w io.Writer, dbURL, bridgeURL, schema string) error {
	if dbURL == "" {
		dbURL = defaultDB
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	// Kept connections: the runner's runs (Store.Concurrency) plus 2, and
	// one per inbox handler running.
	db.SetMaxIdleConns(16)
	// 1. Migrate: the library's tables (outbox, inbox, workflow runs, …),
	// then the participants'.
	if _, err := migrations.Up(ctx, db, migrations.Config{Schema: schema}); err != nil {
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "3D000" { // invalid_catalog_name
			return fmt.Errorf("%w\n(the database does not exist: create it once, for the default one with 'createdb -h 127.0.0.1 -U postgres switchboard')", err)
		}
		return err
	}
	s := `"` + schema + `"`
	if _, err := db.ExecContext(ctx, `
		CREATE TABLE IF NOT EXISTS `+s+`.payments (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			order_id text NOT NULL, amount int NOT NULL, refunded int NOT NULL DEFAULT 0);
		CREATE TABLE IF NOT EXISTS `+s+`.stock (item text PRIMARY KEY, available int NOT NULL);
		CREATE TABLE IF NOT EXISTS `+s+`.reservations (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			order_id text NOT NULL, item text NOT NULL, qty int NOT NULL, released boolean NOT NULL DEFAULT false);
		CREATE TABLE IF NOT EXISTS `+s+`.shipments (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			order_id text NOT NULL UNIQUE);
		INSERT INTO `+s+`.stock (item, available) VALUES ('book', 1000000), ('unicorn', 0) ON CONFLICT (item) DO NOTHING`); err != nil {
		return err
	}

	// 2. The engine: the transport by URL alone; the outbox's scheduler
	// publishes the Shipped events shipping schedules (see shippingService).
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sched := &outbox.Scheduler{DatabaseURL: dbURL, Schema: schema, Logger: log}
	defer sched.Close() // after the engine has stopped (deferred later, runs first)
	eng, err := engine.New(engine.Config{Bridge: bridgeURL, Scheduler: sched, Logger: log})
	if err != nil {
		return err
	}
	orders := engine.NewService("orders", "1")
	store := &workflow.Store{DB: db, Schema: schema, Concurrency: 4, Logger: log}
	if err := workflow.Register(orders, store, PlaceOrder); err != nil {
		return err
	}
	inbox := engine.Use(outbox.Inbox{DB: db, Schema: schema, Logger: log}.Middleware())
	if err := eng.Register(orders, paymentsService(s, inbox), inventoryService(s, inbox), shippingService(s, inbox)); err != nil {
		return err
	}
	if err := eng.Start(ctx); err != nil {
		return err
	}
	defer eng.Stop(context.Background())

	// 3. Two orders, ids new at each run of the program (a run id, like an
	// order id, is the same run forever: starting it again is idempotent).
	batch := make([]byte, 3)
	_, _ = rand.Read(batch)
	prefix := "o-" + hex.EncodeToString(batch)
	good := PlaceIn{OrderID: prefix + "-1", Item: "book", Qty: 2, Amount: 3000}
	bad := PlaceIn{OrderID: prefix + "-2", Item: "unicorn", Qty: 1, Amount: 99900}
	ectx := engine.WithEngine(ctx, eng)
	for _, in := range []PlaceIn{good, bad} {
		out, err := PlaceOrder.Invoke(ectx, in, workflow.RunID(in.OrderID))
		fmt.Fprintf(w, "order %s (%d × %s): ", in.OrderID, in.Qty, in.Item)
		var we *engine.Error
		switch {
		case err == nil:
			fmt.Fprintf(w, "completed: payment %s, reservation %s, tracking %s\n", out.PaymentID, out.ReservationID, out.Tracking)
		case errors.As(err, &we):
			fmt.Fprintf(w, "failed: %v\n", we)
		default:
			return fmt.Errorf("order %s: %w", in.OrderID, err)
		}
		if (in == good) != (err == nil) {
			return fmt.Errorf("order %s ended unexpectedly: %v", in.OrderID, err)
		}
		if err := printEffects(ctx, w, db, s, in.OrderID); err != nil {
			return err
		}
	}

	// 4. What the store keeps of each run (`switchboard workflow show`).
	for _, in := range []PlaceIn{good, bad} {
		r, err := workflow.Show(ctx, db, schema, in.OrderID)
		if err != nil {
			return err
		}
		printRun(w, r)
	}
	return nil
}

// paymentsService charges and refunds, each message once (the inbox).
func paymentsService(s string, inbox engine.HandlerOption) *engine.Service {
	svc := engine.NewService("payments", "1")
	engine.Handle(svc, Charge, func(ctx context.Context, in ChargeIn) (Payment, error) {
		tx, _ := outbox.TxFrom(ctx)
		var id int64
		err := tx.QueryRowContext(ctx, `INSERT INTO `+s+`.payments (order_id, amount) VALUES ($1, $2) RETURNING id`, in.OrderID, in.Amount).Scan(&id)
		return Payment{PaymentID: fmt.Sprintf("pay-%d", id)}, err
	}, inbox)
	engine.Handle(svc, Refund, func(ctx context.Context, in RefundIn) (Done, error) {
		tx, _ := outbox.TxFrom(ctx)
		var id int64
		if _, err := fmt.Sscanf(in.PaymentID, "pay-%d", &id); err != nil {
			return Done{}, engine.Invalid("payment_id", "not a payment id")
		}
		_, err := tx.ExecContext(ctx, `UPDATE `+s+`.payments SET refunded = refunded + $2 WHERE id = $1`, id, in.Amount)
		return Done{}, err
	}, inbox)
	return svc
}

// inventoryService reserves and releases stock. Out of stock is a 409:
// permanent, so the workflow fails at once and compensates.
func inventoryService(s string, inbox engine.HandlerOption) *engine.Service {
	svc := engine.NewService("inventory", "1")
	engine.Handle(svc, Reserve, func(ctx context.Context, in ReserveIn) (Reservation, error) {
		tx, _ := outbox.TxFrom(ctx)
		res, err := tx.ExecContext(ctx, `UPDATE `+s+`.stock SET available = available - $2 WHERE item = $1 AND available >= $2`, in.Item, in.Qty)
		if err != nil {
			return Reservation{}, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return Reservation{}, &engine.Error{Code: http.StatusConflict, Reason: "out_of_stock",
				Message: fmt.Sprintf("%d × %s wanted, not in stock", in.Qty, in.Item)}
		}
		var id int64
		err = tx.QueryRowContext(ctx, `INSERT INTO `+s+`.reservations (order_id, item, qty) VALUES ($1, $2, $3) RETURNING id`, in.OrderID, in.Item, in.Qty).Scan(&id)
		return Reservation{ReservationID: fmt.Sprintf("res-%d", id)}, err
	}, inbox)
	engine.Handle(svc, Release, func(ctx context.Context, in ReleaseIn) (Done, error) {
		tx, _ := outbox.TxFrom(ctx)
		var id int64
		if _, err := fmt.Sscanf(in.ReservationID, "res-%d", &id); err != nil {
			return Done{}, engine.Invalid("reservation_id", "not a reservation id")
		}
		_, err := tx.ExecContext(ctx, `WITH r AS (UPDATE `+s+`.reservations SET released = true WHERE id = $1 AND order_id = $2 AND NOT released RETURNING item, qty)
			UPDATE `+s+`.stock st SET available = available + r.qty FROM r WHERE st.item = r.item`, id, in.OrderID)
		return Done{}, err
	}, inbox)
	return svc
}

// shippingService records a shipment and schedules its Shipped event for
// when the parcel leaves. Under the inbox, the handler's context writes
// messages into the outbox in the handler's transaction (engine.Schedule
// on such a context): the event is scheduled if and only if the shipment
// is recorded, once, and the engine's outbox.Scheduler publishes it when
// due, after the ship command has long been answered. No goroutine to
// lose in a crash, no second event on a redelivery.
func shippingService(s string, inbox engine.HandlerOption) *engine.Service {
	svc := engine.NewService("shipping", "1")
	engine.Handle(svc, Ship, func(ctx context.Context, in ShipIn) (Shipment, error) {
		tx, _ := outbox.TxFrom(ctx)
		var id int64
		if err := tx.QueryRowContext(ctx, `INSERT INTO `+s+`.shipments (order_id) VALUES ($1) RETURNING id`, in.OrderID).Scan(&id); err != nil {
			return Shipment{}, err
		}
		sh := Shipment{OrderID: in.OrderID, Tracking: fmt.Sprintf("TRK-%d", id)}
		if _, err := Shipped.Schedule(ctx, time.Now().Add(carrierDelay), sh); err != nil {
			return Shipment{}, err
		}
		return sh, nil
	}, inbox)
	return svc
}

// printEffects prints the participants' rows for an order: each effect
// happened once, and a failed order's payment is refunded.
func printEffects(ctx context.Context, w io.Writer, db *sql.DB, s, orderID string) error {
	var payments, refunded, reservations, released, shipments int
	err := db.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM `+s+`.payments WHERE order_id = $1),
		(SELECT count(*) FROM `+s+`.payments WHERE order_id = $1 AND refunded = amount),
		(SELECT count(*) FROM `+s+`.reservations WHERE order_id = $1),
		(SELECT count(*) FROM `+s+`.reservations WHERE order_id = $1 AND released),
		(SELECT count(*) FROM `+s+`.shipments WHERE order_id = $1)`, orderID).
		Scan(&payments, &refunded, &reservations, &released, &shipments)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  rows: %d payment(s), %d refunded; %d reservation(s), %d released; %d shipment(s)\n",
		payments, refunded, reservations, released, shipments)
	return nil
}

// printRun prints a run and its recorded steps.
func printRun(w io.Writer, r workflow.Run) {
	fmt.Fprintf(w, "run %s (%s): %s, claimed %d time(s)\n", r.ID, r.Workflow, r.Status, r.Claims)
	for _, st := range r.Steps {
		outcome := "ok"
		if st.Error != nil {
			outcome = st.Error.Error()
		}
		took := st.FinishedAt.Sub(st.StartedAt)
		if st.Kind == "sleep" && st.DueAt != nil {
			took = st.DueAt.Sub(st.StartedAt) // recorded when it began
		}
		fmt.Fprintf(w, "  %d  %-10s %-28s %-7s %s\n", st.Seq, st.Kind, st.Name, took.Round(time.Millisecond), outcome)
	}
}
