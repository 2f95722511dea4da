// Package workflow runs durable workflows: multi-step processes across
// services, with compensation, checkpointed in PostgreSQL, on any
// transport the engine runs on (in-process, NATS, RabbitMQ, PostgreSQL).
//
// # Model
//
// A workflow is a Go function of a Context and an input, declared once
// with New beside the service that runs it:
//
//	var PlaceOrder = workflow.New("orders", "1", "place", func(wf workflow.Context, in PlaceIn) (PlaceOut, error) {
//		pay, err := workflow.Invoke(wf, paymentsapi.Charge, ChargeIn{Order: in.ID})
//		if err != nil {
//			return PlaceOut{}, err
//		}
//		workflow.OnFailure(wf, paymentsapi.Refund, RefundIn{PaymentID: pay.ID})
//		if err := workflow.Sleep(wf, 15*time.Minute); err != nil {
//			return PlaceOut{}, err
//		}
//		shipped, err := workflow.Await(wf, shippingapi.Shipped, in.ID, 48*time.Hour)
//		...
//	}, workflow.Correlate(shippingapi.Shipped, func(s Shipped) string { return s.Order }))
//
//	orders := engine.NewService("orders", "1")
//	err := workflow.Register(orders, &workflow.Store{DB: db}, PlaceOrder)
//
// Its steps are Invoke (a command), Emit (an event), Step (a local
// function), Sleep (a durable timer) and Await (an event, with a deadline);
// OnFailure registers a compensation. A run is a row of workflow_runs
// (migration 8); each step it finished is a row of workflow_steps.
//
// PlaceOrder.Start(ctx, in) stores a run and returns its id;
// PlaceOrder.Invoke(ctx, in) waits for its output. Both cross the
// transport: the workflow's service handles two internal commands,
// "wf-<name>-start" and "wf-<name>-wait", so any engine — another
// service, the HTTP gateway, the CLI — starts a workflow knowing only its
// declaration. An HTTP endpoint routes PlaceOrder.StartCommand()
// (httpgateway.Route(gw, http.MethodPost, "/orders", PlaceOrder.StartCommand())),
// and `switchboard workflow start orders.v1.place '{…}' --bridge URL`
// (StartByName) needs only the name. Start with RunID(id) is idempotent:
// the same id again is the same run; the id of another workflow's run is a
// 409. A run id is scoped to the tenant that started the run (Meta's
// TenantID): another tenant's start with that id is the same 409, and its
// wait is a 404, neither saying whose run it is.
//
// # Execution: replay
//
// The runner of each instance (started by Register, run by the engine
// between its Start and Stop) claims runnable runs of the workflows
// registered on it. A claimed run's function runs from the start with the
// run's recorded history: a step whose position (seq) is recorded returns
// its recorded result or error at once, without doing anything; the first
// step not recorded does its work, then records its outcome — one
// statement, one commit per step — and the function goes on. A workflow
// function must therefore be deterministic: the same input and the same
// step results make the same steps, in the same order. Time, randomness
// and I/O belong in steps (Step records what they returned).
//
// The history is checked: the step recorded at a position must have the
// kind and name (command topic, event name, step name, "sleep",
// "<event>/<key>") the code now reaches there, and the code must not end
// before the history does. Otherwise the run is stopped (status "stopped",
// ErrNondeterministic, a message naming the position, the recorded step
// and the code's), with nothing more done and no compensation; `switchboard
// workflow retry` resumes it after a fixed deploy.
//
// # Versioning
//
// A changed workflow (steps added, removed or reordered) is deployed under a
// new version: New("orders", "2", "place", …) on service orders v2, which
// runs beside v1. Start new runs on v2; keep v1 registered until its runs
// have ended (`switchboard workflow list --workflow orders.v1.place
// --status running`). Changes that keep the steps — a step's body, a
// command's implementation — need no new version.
//
// # Guarantees
//
//   - A run survives any process: after a crash (SIGKILL) at any point,
//     another instance — or the same one restarted — resumes it from its last
//     recorded step once its lease has expired (Store.LeaseTTL, 30 s), or at
//     once after a graceful stop, which gives the run back. This holds on the
//     in-process transport too: the state, timers included, is in
//     PostgreSQL.
//   - A recorded step is never executed again.
//   - The step being executed when the process died is executed again. Its
//     message carries an id derived from the run and the step
//     (engine.WithMessageID), the same on every attempt and in every
//     instance, so a participant whose handler uses outbox.Inbox runs it
//     once and answers a resend with its stored reply: with an inbox, each
//     step's effect happens once. Without one, a command step is
//     at-least-once. A local Step's function is at-least-once: make its
//     effects idempotent.
//   - A run is executed by one runner at a time, as far as what is
//     recorded: a claim takes a lease with a fencing token (fence+1), and
//     every checkpoint is one statement that renews the lease and records
//     the step only if the run's fence is still the runner's. A runner
//     paused past its lease (GC, a frozen VM) may attempt its step's effect
//     while another runner holds the run (the inbox deduplicates it); its
//     checkpoint is refused, and it stops without recording or running
//     anything more.
//   - Compensations run in reverse order of registration, each once, as
//     recorded steps (kind "compensate"), retried with Store.StepRetry; one
//     that still fails is sent fire-and-forget with the same message id, so
//     that the participant's engine retries it and dead-letters it, and is
//     recorded as sent (its error's details say "sent": true). If it cannot
//     even be sent, the run is stopped (reason "compensation_failed").
//   - A Sleep fires once, after its due time: within milliseconds of it when
//     a runner is up (measured across a restart, 50 runs: p99 under 10 ms;
//     70 ms under the race detector).
//
// # Failure and retries
//
// A step's permanent error — an *engine.Error with a 4xx code (but 408 and
// 429), a local step's error marked Permanent — fails the step at once. Any
// other error (a timeout, an unreachable or unavailable service, no handler
// (a participant absent during a deploy comes back), an open circuit,
// a 5xx, a local step's plain error) is retried within the run, with the
// same message id, up to Store.StepRetry's attempts (by default 100,
// waiting 100 ms doubling to 10 s: about a quarter of an hour), then fails
// the step. The default outlasts a caller's open circuit and a participant's
// restart: with 5 attempts (1.5 s of waiting), the crash test saw 5 % of
// its runs fail and compensate on circuit_open errors while workers were
// killed. While a step is retried its run keeps its runner's slot
// (Store.Concurrency). A failed step's error is recorded, and the step returns it —
// as an *engine.Error (a local step's plain error as code 500, reason
// "step_failed", with its message), the same on every replay. The attempts
// are recorded on the step.
//
// When the workflow function returns an error, the compensations run and
// the run ends "failed" with the error as data: an *engine.Error as it is,
// any other error — a local step's plain error included, whose text stays
// in the step's record for `switchboard workflow show` — as a 500 that leaks
// nothing (the original is logged, as the engine does for handlers). A panic in the workflow function is a
// failure too (500, logged with its stack). Invoke returns the run's error.
//
// # Bounds
//
// A run records at most MaxSteps (10,000) steps, compensations aside: a
// run whose code reaches a step past it is stopped with ErrTooManySteps,
// since every claim reads a run's whole history and replays it. A process
// over unbounded input (a stream, a long list) starts a run per part.
//
// # Cancellation
//
// `switchboard workflow cancel` sets the run's cancel_requested and wakes
// it. The runner checks the flag at each step boundary (each checkpoint
// returns it; a Sleep of a second or less reads it when it ends; a step
// being retried reads it between its attempts, and then fails with its
// last error, unless that was a timeout), and at a sleep or an await it is
// woken from: that step returns ErrCancelled, as does every later one; the
// compensations run and the run ends "cancelled", also when the workflow
// function returns the error of the step that saw the cancel. A cancel
// seen at the last step's checkpoint cancels the run too; one that comes
// after it is too late (the run ends as it would have).
//
// # Tracing
//
// The work of each step executed (not replayed) has an OpenTelemetry span,
// "workflow <kind> <name>", with the workflow, the run id, the step's seq,
// kind, name and attempts; it is a child of the trace of the call that
// started the run (its traceparent is kept with the run) and the parent of
// the messages the step sends. The spans come from OpenTelemetry's global
// provider, the engine's default.
//
// # Sleep and Await
//
// A Sleep of more than a second records its step with its due time and
// gives the run back (no lease, wake_at = due) in the same statement; the
// run is claimed again at its due time and the replayed Sleep returns. A
// shorter one waits in the process, holding the run. Timers are the run's
// wake_at: one per run, read by the same claim that takes the lease, so no
// timer message can be lost, on any transport.
//
// Await records its step with its deadline first (result empty), so that
// the deadline is the same on every replay, then looks for its event: the
// events of the types a workflow declares with Correlate are stored by
// (event, key) in workflow_signals by a subscription of the workflow's
// service ("wf-<event>"), whether a run waits for them yet or not. Found:
// the step is completed with the payload. Past the deadline: completed with
// ErrAwaitTimeout. Otherwise the run is given back with awaiting_event,
// awaiting_key and wake_at = deadline; the event's handler wakes it.
// Storing an event and suspending an await take the same transaction lock
// (pg_advisory_xact_lock of event and key), so that an event stored while
// the run suspends is seen by one side or the other (a single statement on
// each side could miss it under read committed). Several Awaits of one
// (event, key) get the first such event. Stored events are purged after
// Store.SignalRetention (7 days) by the runner, hourly.
//
// # The runner
//
// It claims up to Store.Concurrency runs (16) with one statement (FOR
// UPDATE SKIP LOCKED: runners of every instance share the runs), which
// also returns the delay until the next run it could claim; it sleeps until
// then, a notification of migration 8's trigger (a run made runnable within
// a second: started, woken, given back), a local start, or PollInterval
// (1 s). It takes its free slots first, without waiting, and claims as
// many runs, so that each run it claims is executed at once. A run being
// executed renews its lease every LeaseTTL/3; a run whose renewal is
// refused, or fails for 2/3 LeaseTTL, is cancelled. A lease runs from the
// claim statement's start: a claim slower than LeaseTTL/3 renews the
// leases it took before executing their runs, and leaves those another
// runner took meanwhile. When the engine stops, runs being executed finish
// their current step and are given back, wake_at now, so that another
// instance continues them at once. A step that has not ended after
// LeaseTTL/3, or after the engine's DrainTimeout less a tenth of it (at
// least 50 ms, left for giving the runs back: Stop waits DrainTimeout for
// the runner), whichever is shorter, has its context cancelled.
//
// A run started on an instance with a free slot is inserted already
// claimed by it and executed at once (no notification, claim or history
// read); otherwise it waits for a runner's claim.
//
// Database work per step: one round trip (the checkpoint, an autocommit
// statement), plus a lease renewal every LeaseTTL/3 of a long step (a
// Sleep of a second or less: one more, reading the cancellation when it
// ends; a retried step: one more per retry). Per run,
// besides its steps: the start's insert and the end; a run that is
// claimed (it waited for a slot, slept, awaited, or was resumed) adds a
// claim and a history read, each one statement for up to Concurrency
// runs. Awaits cost a few more (see above). Measured (BenchmarkRuns, three
// local steps): 5.3 round trips per run.
//
// # Decisions
//
//   - The step's outgoing message is not written to the outbox in the
//     checkpoint's transaction: it is sent through the transport with its
//     deterministic id before the checkpoint, and sent again (same id) if the
//     checkpoint did not happen. The participant's inbox makes that once,
//     with one commit per step and no relay hop, on every transport.
//   - A workflow function whose execution must stop (its run suspended,
//     its lease lost, the engine stopping, the run stopped) is ended with
//     runtime.Goexit from inside the step that decided it, so that no code of
//     the function runs after it; its deferred functions run, and a step they
//     call then does nothing and returns an error: a step in a deferred
//     function runs only when the function returns. Steps must be called
//     from the workflow function's goroutine.
//   - Await records one step row: created with its deadline and no result,
//     completed when resolved. A pending await is one whose result and error
//     are both empty.
//   - A Sleep is recorded with the name "sleep": a changed duration is not
//     a nondeterminism (the recorded due time stands).
//   - A stopped run (nondeterminism, a compensation that could not be
//     sent) ends Invoke with its error; `retry` may resume it.
//   - Due times are on the database's clock: the runner reads it at each
//     claim.
//
// The admin functions (List, Show, Cancel, Retry) read and change the same
// tables for `switchboard workflow`.
//
// # Testing
//
// Package workflowtest runs a workflow in a unit test without a database
// or a broker: its commands are stubbed on an in-process engine, its run
// is kept in memory, and its clock is fake, moving only when the run waits,
// so that a Sleep of 15 minutes, an Await's deadline of 48 hours and a
// retry's backoff take no time. The execution is this package's — replay
// after a suspension, retries, compensations in reverse order — through
// the two seams it keeps its run and reads its time by (PostgreSQL and the
// real clock at run time). What needs the database (leases, cancellation,
// a changed history, crashes) is proven by this package's own tests.
package workflow
