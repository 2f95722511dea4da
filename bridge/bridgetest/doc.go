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
// Every case is a named subtest, so one runs alone:
//
//	go test ./bridge/nats -run 'TestConformance/Bridge/RedeliveryAfterNack'
package bridgetest
