// Package backendtest is the engine half of the conformance suite: one
// backend underneath a full engine. Round trips, errors on the wire,
// competing consumers, fan-out, replies to the right caller, redelivery,
// graceful shutdown and drain, an outage of the broker, and the chaos run
// (10 000 events, transient failures, poison payloads, one outage: every
// effect recorded or dead-lettered, none lost).
//
// A backend's TestConformance runs it after the bridge half
// (bridge/bridgetest) with the same Harness; each case is a named
// subtest:
//
//	go test ./bridge/postgres -run 'TestConformance/Engine/NoHandlerStartsAfterStop'
package backendtest
