// Package health serves the two probes every deployment needs, with or
// without the HTTP gateway:
//
//	GET /healthz  liveness: 200 while the process can answer at all
//	GET /readyz   readiness: 200 only when the engine is running and its
//	              bridge answers (engine.Health); 503 while starting,
//	              draining or stopped, and when the broker is unreachable
//
// Both answer JSON (Status): the engine's state, the bridge's name, the
// services the process runs, and for a 503 the reason. Liveness ignores the
// bridge on purpose: an orchestrator restarts a process whose liveness
// fails, and restarting every process because the broker is down helps
// nobody; readiness takes the process out of rotation instead.
//
//	chk := health.New(health.Config{Engine: eng})
//	mux.Handle("/healthz", chk)
//	mux.Handle("/readyz", chk)
//
// Shutdown: call Drain first (httpgateway.Serve does), so /readyz fails
// while the engine still runs and in-flight work completes; once the engine
// stops, /readyz reports "stopped".
//
// Each /readyz request probes the bridge, bounded by Config.CheckTimeout (DefaultCheckTimeout, 2 s). The
// endpoints are unauthenticated, so a 503 names only the failing component
// in fixed words ("draining: shutting down", "engine starting", "bridge
// nats unreachable"); the probe's error, which can name the broker's or the
// database's address, user and parameters, goes to the log (Config.Logger).
package health
