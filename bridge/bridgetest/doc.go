// Package bridgetest is the bridge half of the conformance suite every
// backend runs from its own test, against the real server: the bridge
// contract on its own (delivery semantics per Kind, concurrency,
// redelivery, close without loss, health, a broker outage), with the
// backend's declared Capabilities deciding the few places where backends
// legitimately differ. It imports nothing of the engine.
//
// The engine half (round trips, errors on the wire, drain, the chaos run)
// is package engine/backendtest. A backend's test runs both:
//
//	func TestConformance(t *testing.T) {
//		h := bridgetest.Harness{URL: url, Outage: …}
//		t.Run("Bridge", func(t *testing.T) { bridgetest.Run(t, h) })
//		backendtest.Run(t, h) // subtests Engine and Chaos
//	}
//
// Run runs these cases in this order, each a named subtest (the list is
// the table cases in bridge_suite.go; a test keeps the two the same):
//
//   - Health: a fresh bridge is healthy and has a name; Close is idempotent.
//   - InvalidSpec: Subscriber refuses an empty Spec.
//   - CompetingConsumers: two members of a command group share 40
//     commands, each handled once.
//   - EventFanOut: every event group gets each event once, its members
//     competing for it.
//   - ReplyGoesToItsOwner: a reply topic delivers to its instance only.
//   - RedeliveryAfterNack: a nacked message comes back, after the delay
//     asked (Capabilities.NackDelay) and with its delivery count
//     (Capabilities.CountsDeliveries).
//   - Concurrency: Spec.Concurrency messages are in flight at once.
//   - CloseWithUnackedLosesNothing: Close waits for the message in flight;
//     nacked meanwhile, it goes to the next subscriber (subscribed after
//     the Close where the backend declares GroupOutlivesMembers, before it
//     otherwise).
//   - CloseEndsTheSubscription: when Close returns, the subscription's
//     channel is closed.
//   - CloseLeavesNoGoroutine: when the bridge's Close returns, no
//     goroutine runs the backend's code (subscriptions, health probes,
//     connection watchers).
//   - KilledConsumerLosesNothing (checks only on a Durable, CrossProcess
//     backend; the others log why not): a consumer process SIGKILLed while
//     it holds a full batch (Spec.Concurrency messages, none settled) loses
//     none: a member of its group in the test's process gets each again
//     within WaitLimit plus Harness.DeadConsumerDelay, counted as a
//     redelivery (Capabilities.CountsDeliveries), and what is published
//     after. The consumer is the test binary itself, re-executed to run
//     only this case; Harness.URL opens the backend there.
//   - OutageMidStream (only with Harness.Outage): Health reports the
//     outage and recovers, and messages flow again.
//
// so that one runs alone:
//
//	go test ./bridge/nats -run 'TestConformance/Bridge/RedeliveryAfterNack'
package bridgetest
