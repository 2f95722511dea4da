package workflowtest_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow/workflowtest"
)

// TestReview2UnstubbedCommandOfAStubbedServiceFails: a command invoked
// without a stub fails the test naming it, also when another command of
// the same service is stubbed (here the compensation payments.v1.refund,
// beside the stubbed payments.v1.charge).
func TestReview2UnstubbedCommandOfAStubbedServiceFails(t *testing.T) {
	ft := &fakeT{TB: t}
	defer ft.cleanup()
	env := workflowtest.New(ft)
	workflowtest.Stub(env, Charge, func(_ context.Context, in ChargeIn) (ChargeOut, error) {
		return ChargeOut{PaymentID: "p-" + in.Order}, nil
	})
	workflowtest.Stub(env, Reserve, func(context.Context, ItemIn) (Done, error) {
		return Done{}, engine.NewError(http.StatusConflict, "out of stock")
	})
	done := make(chan struct{})
	var err error
	go func() { // Fatalf ends the goroutine
		defer close(done)
		_, err = workflowtest.Run(env, PlaceOrder, OrderIn{Order: "o8"})
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
	if !strings.Contains(ft.fatal, "payments.v1.refund") || !strings.Contains(ft.fatal, "no stub") {
		t.Errorf("the test failed with %q (Run: %v; steps %+v), want it to name payments.v1.refund, which has no stub", ft.fatal, err, env.Steps())
	}
}
