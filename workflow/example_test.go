package workflow_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/workflow"
)

// The contracts of the example's participants.
type (
	Payment struct {
		Order  string `json:"order"`
		Amount int    `json:"amount"`
	}
	Receipt struct {
		ID string `json:"id"`
	}
	Parcel struct {
		Order string `json:"order"`
	}
)

var (
	ChargeCard = engine.NewCommand[Payment, Receipt]("payments", "1", "chargeCard")
	RefundCard = engine.NewCommand[Receipt, Receipt]("payments", "1", "refundCard")
	ShipParcel = engine.NewCommand[Parcel, Receipt]("shipping", "1", "shipParcel")
)

// PlaceOrder charges the card, waits a moment (a durable timer), ships;
// when shipping fails, the charge is refunded.
var PlaceOrder = workflow.New("orders", "1", "placeOrder", func(wf workflow.Context, in Payment) (Receipt, error) {
	paid, err := workflow.Invoke(wf, ChargeCard, in)
	if err != nil {
		return Receipt{}, err
	}
	workflow.OnFailure(wf, RefundCard, paid)
	if err := workflow.Sleep(wf, 10*time.Millisecond); err != nil {
		return Receipt{}, err
	}
	return workflow.Invoke(wf, ShipParcel, Parcel{Order: in.Order})
})

// A workflow on the in-process bus with its runs in PostgreSQL: one order
// ships, the other cannot and is refunded.
func Example() {
	dsn := os.Getenv("SWITCHBOARD_TEST_POSTGRES")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/switchboard_test?sslmode=disable"
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		panic(err)
	}
	defer db.Close()
	ctx := context.Background()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "ex_" + hex.EncodeToString(b)
	if _, err := migrations.Up(ctx, db, migrations.Config{Schema: schema}); err != nil {
		panic(err)
	}
	defer db.Exec(`DROP SCHEMA "` + schema + `" CASCADE`)

	payments := engine.NewService("payments", "1")
	engine.Handle(payments, ChargeCard, func(ctx context.Context, p Payment) (Receipt, error) {
		return Receipt{ID: "pay-" + p.Order}, nil
	})
	engine.Handle(payments, RefundCard, func(ctx context.Context, r Receipt) (Receipt, error) {
		fmt.Println("refunded", r.ID)
		return r, nil
	})
	shipping := engine.NewService("shipping", "1")
	engine.Handle(shipping, ShipParcel, func(ctx context.Context, p Parcel) (Receipt, error) {
		if p.Order == "o2" {
			return Receipt{}, engine.NewError(422, "no courier for %s", p.Order)
		}
		return Receipt{ID: "ship-" + p.Order}, nil
	})
	orders := engine.NewService("orders", "1")
	if err := workflow.Register(orders, &workflow.Store{DB: db, Schema: schema}, PlaceOrder); err != nil {
		panic(err)
	}

	eng, err := engine.New(engine.Config{})
	if err != nil {
		panic(err)
	}
	if err := eng.Register(payments, shipping, orders); err != nil {
		panic(err)
	}
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)

	ctx = engine.WithEngine(ctx, eng)
	shipped, err := PlaceOrder.Invoke(ctx, Payment{Order: "o1", Amount: 20})
	fmt.Println(shipped.ID, err)
	_, err = PlaceOrder.Invoke(ctx, Payment{Order: "o2", Amount: 30}, workflow.RunID("order-o2"))
	var we *engine.Error
	fmt.Println(errors.As(err, &we), we.Code, we.Message)
	// Output:
	// ship-o1 <nil>
	// refunded pay-o2
	// true 422 no courier for o2
}
