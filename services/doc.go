// Package services holds no code: it documents the folder, which holds the
// optional components Switchboard ships for applications. Each is built on
// the same public API applications have (package engine); the gateway also
// shares the library's internal helpers for strict payload decoding and
// for W3C trace headers, so that it decodes and propagates exactly as the
// engine does. None has private hooks into the engine, its router or the
// bridges. Despite the folder's name, none of them is an engine.Service:
// they run next to the engine, in front of it, and call commands like any
// program does.
//
//   - httpgateway exposes chosen commands as HTTP endpoints with one
//     declaration each, serves an OpenAPI 3.1 document generated from the
//     commands' Go types, maps errors to problem+json responses, and runs an
//     HTTP server next to an engine with a graceful drain (Serve).
//   - health serves /healthz (liveness) and /readyz (the engine is running
//     and its bridge answers), for any deployment, with or without the
//     gateway.
//
// Dead-letter administration (list, inspect, replay, purge) is not here: it
// is the operator's CLI, cmd/switchboard (switchboard dlq), on top of
// package deadletter and its stores.
//
// The same application code runs in every deployment model: see
// examples/monolith, examples/microservices, examples/serverless (the
// gateway and the services in one process on the in-process bridge) and
// examples/edge (one small process against a local NATS server).
package services
