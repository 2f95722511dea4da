// Package bridgetest is the conformance suite every backend runs from its own
// test: the same tests, against the real server, with the backend's declared
// Capabilities deciding the few places where backends legitimately differ.
//
// RunBridge checks the bridge contract on its own (delivery semantics per
// Kind, concurrency, redelivery, close without loss, broker restarts).
// RunEngine (in engine_suite.go) checks the same backend underneath a full
// engine: round trips, errors on the wire, replies to the right caller.
package bridgetest
