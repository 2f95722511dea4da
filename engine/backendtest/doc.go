// Package backendtest is the engine half of the conformance suite: one
// backend underneath a full engine. Round trips, errors on the wire,
// competing consumers, fan-out, replies to the right caller, redelivery,
// graceful shutdown and drain, an outage of the broker, and the chaos run
// (10 000 events, transient failures, poison payloads, one outage: every
// effect recorded or dead-lettered, none lost).
//
// A backend's TestConformance runs it after the bridge half
// (bridge/bridgetest) with the same Harness: Run runs RunEngine as subtest
// Engine, then RunChaos as subtest Chaos. RunEngine runs these cases in
// this order, each a named subtest (the list is the table engineCases in
// engine_suite.go; a test keeps the two the same):
//
//   - CommandRoundTrip: a command's result reaches its caller.
//   - ErrorsCrossTheWire: a handler's *engine.Error arrives whole; a panic
//     arrives as ErrInternal, without its message.
//   - CompetingConsumers: two instances of a service share 60 calls, each
//     handled once.
//   - EventFanOut: each subscribing service gets every event once, its
//     instances competing for it.
//   - ReplyGoesToTheRightCaller: three callers each get their own replies.
//   - RedeliveryAfterHandlerError: a failed event is delivered again.
//   - GracefulShutdownLosesNothing: an instance stopped mid-stream drains,
//     and a new one handles the rest (started after the stop where the
//     backend declares GroupOutlivesMembers, before it otherwise, as in a
//     rolling restart); every call answered, once.
//   - StopAnswersCallsItsHandlersFinish: handlers that complete during the
//     drain have their replies delivered.
//   - StopAnswersCallsCompletedPastTheDeadline: so do those that complete
//     past the drain deadline while Stop waits for them.
//   - NoHandlerStartsAfterStop: once Stop has begun no handler starts;
//     the calls not started fail with ErrShuttingDown.
//   - StartWithEndedContext: a router started with an ended context stops
//     at once, leaving no goroutine.
//   - SurvivesOutage (only with Harness.Outage): events and calls flow
//     again after the broker comes back.
//
// so that one runs alone:
//
//	go test ./bridge/postgres -run 'TestConformance/Engine/NoHandlerStartsAfterStop'
package backendtest
