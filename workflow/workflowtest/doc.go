// Package workflowtest runs a workflow in a unit test, without a database
// or a broker: its steps are the runtime's (package workflow's replay,
// retries and compensations), its commands are stubbed, its run is kept in
// memory, and its clock is fake, so that sleeps and deadlines are instant.
//
//	env := workflowtest.New(t)
//	start := env.Now()
//	workflowtest.Stub(env, paymentsapi.Charge, func(ctx context.Context, in paymentsapi.ChargeIn) (paymentsapi.ChargeOut, error) {
//		return paymentsapi.ChargeOut{ID: "p1"}, nil
//	})
//	workflowtest.Stub(env, shippingapi.Ship, func(ctx context.Context, in shippingapi.ShipIn) (shippingapi.ShipOut, error) {
//		workflowtest.Signal(env, shippingapi.Shipped, shippingapi.ShippedEvent{Order: in.Order}) // the event the workflow awaits
//		return shippingapi.ShipOut{}, nil
//	})
//	out, err := workflowtest.Run(env, orders.PlaceOrder, orders.PlaceIn{ID: "o1"})
//	steps := env.Steps()            // the run's history, as workflow.Show gives it
//	waited := env.Now().Sub(start)  // its sleeps, deadlines and backoffs, at once
//	placed := workflowtest.Emitted(env, ordersapi.Placed)
//
// # What is real
//
// A stub is a handler on an in-process engine of the Env's own (Stub,
// engine.Handle on the command's service): Invoke calls it through the
// engine, with its strict codec and its input's Validate, and the message
// id the step derives from the run. Its error is the step's: a permanent
// one fails the step (the run compensates, last registered first), a
// transient one is retried with the default Store.StepRetry (100
// attempts). The run is executed as the runner executes it: a Sleep of
// more than a second, or an Await whose event has not come, gives the run
// back; it is then executed again from the start, replaying its recorded
// steps (a stub is not called again for a recorded step).
//
// # What is not
//
// The clock starts at 2030-01-01 00:00 UTC and moves only when the run
// waits: to the wake time of a run given back (a Sleep's due time, an
// Await's deadline), by the duration of a short Sleep, by each retry's
// backoff (jittered, as at run time). The engine's own timeouts are on the
// real clock: a stub that blocks holds its attempt for the engine's
// CallTimeout (30 s), and the step retries it; to test a timeout, return an
// error matching engine.ErrTimeout from the stub. The caller-side circuit
// breaker is off. Events (those the workflow or a stub emit, and those
// Signal makes arrive) are stored as the runtime's subscription stores the
// events a workflow correlates, at once: an Await sees an event emitted
// before it. A run cannot be cancelled, lose its lease or meet a changed
// history (ErrNondeterministic): those need the runtime and its database
// (see package workflow's tests).
//
// # Mechanism
//
// The kit reaches package workflow's unexported machinery through an
// internal package (workflow/internal/kit) whose constructor package
// workflow sets at init: the execution keeps its run through a small
// interface (PostgreSQL at run time, memory here) and reads the time
// through a clock (real at run time, fake here). Package workflow's API is
// unchanged.
package workflowtest
