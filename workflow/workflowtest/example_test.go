package workflowtest_test

import (
	"context"
	"fmt"

	"github.com/switchboard-go/switchboard/workflow/workflowtest"
)

// Example runs PlaceOrder (declared in this package's tests: charge,
// reserve, sleep 15 minutes, ship, await the parcel's departure for up to
// 48 hours, emit orders.placed) with its commands stubbed. The stub of
// Ship makes the awaited event arrive; the Sleep takes no time.
func Example() {
	t := new(fakeT) // in a test, the test's *testing.T
	defer t.cleanup()

	env := workflowtest.New(t)
	start := env.Now()
	workflowtest.Stub(env, Charge, func(_ context.Context, in ChargeIn) (ChargeOut, error) {
		return ChargeOut{PaymentID: "p-" + in.Order}, nil
	})
	workflowtest.Stub(env, Reserve, func(context.Context, ItemIn) (Done, error) { return Done{}, nil })
	workflowtest.Stub(env, Ship, func(_ context.Context, in ItemIn) (Done, error) {
		workflowtest.Signal(env, ShippedE, Shipped{Order: in.Order, Carrier: "ups"})
		return Done{}, nil
	})

	out, err := workflowtest.Run(env, PlaceOrder, OrderIn{Order: "o1", Amount: 30})
	fmt.Printf("%+v %v\n", out, err)
	fmt.Println("the clock moved", env.Now().Sub(start))
	for _, s := range env.Steps() {
		fmt.Printf("%d %s %s result=%s\n", s.Seq, s.Kind, s.Name, s.Result)
	}
	fmt.Printf("%+v\n", workflowtest.Emitted(env, PlacedE))
	// Output:
	// {PaymentID:p-o1 Carrier:ups} <nil>
	// the clock moved 15m0s
	// 1 invoke payments.v1.charge result={"payment_id":"p-o1"}
	// 2 invoke stock.v1.reserve result={}
	// 3 sleep sleep result=
	// 4 invoke shipping.v1.ship result={}
	// 5 await shipping.shipped/o1 result={"order":"o1","carrier":"ups"}
	// 6 emit orders.placed result=
	// [{Order:o1}]
}
