// Package services holds the services Switchboard ships. Each is built with
// the same public API users have (package engine) and nothing else: no
// private hooks into the engine, router or bridges.
//
//   - httpgateway exposes chosen commands as HTTP endpoints with one
//     declaration each, serves an OpenAPI 3.1 document generated from the
//     commands' Go types, maps errors to problem+json responses, and runs an
//     HTTP server next to an engine with a graceful drain (Serve).
//   - health serves /healthz (liveness) and /readyz (the engine is running
//     and its bridge answers), for any deployment, with or without the
//     gateway.
//
// The same service code runs in every deployment model: see
// examples/monolith, examples/microservices, examples/serverless (the
// gateway and the services in one process on the in-process bridge) and
// examples/edge (one small process against a local NATS server).
package services
