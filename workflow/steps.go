package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow/internal/kit"
)

// Errors of workflow runs, for errors.Is (matched by code and reason, as
// the engine's sentinels are).
var (
	// ErrAwaitTimeout: an Await's deadline passed before its event came
	// (504, reason "await_timeout").
	ErrAwaitTimeout = &engine.Error{Code: http.StatusGatewayTimeout, Reason: "await_timeout", Message: "await timed out"}
	// ErrCancelled: the run was cancelled (switchboard workflow cancel):
	// the step that sees it returns it, later steps too, and the run's
	// compensations run (409, reason "cancelled").
	ErrCancelled = &engine.Error{Code: http.StatusConflict, Reason: "cancelled", Message: "run cancelled"}
	// ErrNondeterministic: the code no longer matches the run's recorded
	// history; the run is stopped with this error, naming the step (409,
	// reason "nondeterministic").
	// ErrTooManySteps: the run's code reached a step past MaxSteps; the run
	// is stopped (422, reason "too_many_steps").
	ErrTooManySteps     = kit.ErrTooManySteps
	ErrNondeterministic = &engine.Error{Code: http.StatusConflict, Reason: "nondeterministic", Message: "the workflow's code does not match the run's history"}
)

// errNotWorkflow is returned by a step given a Context that is not a
// workflow function's.
var errNotWorkflow = errors.New("workflow: the Context is not a workflow run's: give steps the Context the workflow function received")

func execOf(wf Context) (*execution, error) {
	c, ok := wf.(*runContext)
	if !ok || c == nil {
		return nil, errNotWorkflow
	}
	return c.x, nil
}

// permanentError marks a local step's error as permanent.
type permanentError struct{ err error }

func (p *permanentError) Error() string { return p.err.Error() }
func (p *permanentError) Unwrap() error { return p.err }

// Permanent marks err, returned by a local Step's function, as permanent:
// the step fails at once instead of being retried. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// Invoke is a step that calls command c with in and returns its result. Its
// message has an id derived from the run and the step, the same on every
// attempt and after any restart, so a participant using outbox.Inbox runs
// it once. A transient failure (timeout, unreachable, 5xx) is retried
// (Store.StepRetry); the error returned is the one recorded (an
// *engine.Error), which a replay returns too.
func Invoke[In, Out any](wf Context, c *engine.Command[In, Out], in In) (Out, error) {
	return step(wf, kindInvoke, c.String(), false, true, func(ctx context.Context, id string) (Out, error) {
		return c.Invoke(engine.WithMessageID(ctx, id), in)
	})
}

// Emit is a step that emits ev with payload, with a message id derived
// from the run and the step (see Invoke).
func Emit[T any](wf Context, ev *engine.Event[T], payload T) error {
	_, err := step(wf, kindEmit, ev.String(), false, false, func(ctx context.Context, id string) (struct{}, error) {
		return struct{}{}, ev.Emit(engine.WithMessageID(ctx, id), payload)
	})
	return err
}

// Step is a local step: fn runs in this process and its result (JSON) is
// recorded; a replay returns the recorded result without running fn. An
// error is retried (Store.StepRetry) unless marked Permanent or an
// *engine.Error that is permanent; the error returned is the recorded one,
// an *engine.Error (code 500, reason "step_failed", fn's message, for a
// plain error). fn may run more than once if the process dies before its
// result is recorded: make its effects idempotent.
func Step[T any](wf Context, name string, fn func(ctx context.Context) (T, error)) (T, error) {
	return step(wf, kindStep, name, true, true, func(ctx context.Context, _ string) (T, error) { return fn(ctx) })
}

// step is what Invoke, Emit and Step share: on a replay, the recorded
// outcome; else work, given the step's message id (none for a local step)
// and retried (attempt), then its outcome recorded (its result too when
// keep).
func step[T any](wf Context, kind, name string, local, keep bool, work func(ctx context.Context, id string) (T, error)) (T, error) {
	var out T
	x, err := execOf(wf)
	if err != nil {
		return out, err
	}
	if !storable(name) {
		return out, &engine.Error{Code: http.StatusInternalServerError, Reason: "invalid_step_name",
			Message: fmt.Sprintf("workflow %s: a step's name is not UTF-8 text without NUL", x.def.id)}
	}
	var into any // where a replay decodes the recorded result
	if keep {
		into = &out
	}
	seq, rec, err := x.begin(kind, name)
	if err != nil || rec != nil {
		if rec != nil {
			err = x.replay(rec, into)
		}
		return out, err
	}
	started := x.now()
	var id string
	if !local { // a local step sends no message
		id = messageID(x.c.id, seq)
	}
	attempts, err := x.attempt(seq, kind, name, local, func(ctx context.Context) error {
		var err error
		out, err = work(ctx, id)
		return err
	})
	var result any
	if keep {
		result = out
	}
	return out, x.settle(seq, kind, name, started, attempts, result, err)
}

// Sleep is a durable timer: the run continues d after the step began, on
// whichever instance holds it then. A sleep of more than a second gives
// the run back (no process holds it meanwhile) until its due time; a
// shorter one waits in this process.
func Sleep(wf Context, d time.Duration) error {
	x, err := execOf(wf)
	if err != nil {
		return err
	}
	seq, rec, err := x.begin(kindSleep, "sleep")
	if err != nil {
		return err
	}
	if rec != nil {
		if rec.dueAt == nil || !x.now().Before(*rec.dueAt) {
			return nil
		}
		if x.cancelRequested { // woken early to be cancelled
			x.cancelled = true
			return x.cancelledError()
		}
		x.park(*rec.dueAt) // woken early: wait on
	}
	started := x.now()
	due := started.Add(max(d, 0))
	if d > shortSleep {
		x.suspend(seq, due, started)
	}
	x.record(seq, kindSleep, "sleep", nil, nil, 1, &due, started)
	if wait := due.Sub(x.now()); wait > 0 {
		x.r.clock.wait(x.ctx, nil, wait)
		if x.ctx.Err() != nil {
			x.interrupted()
		}
		// A cancel that came while the run waited here is seen now, at
		// the boundary, not by the next step's checkpoint after its work.
		cancel, err := x.r.runs.cancelRequested(x.ctx, x.c)
		x.check(err, fmt.Sprintf("reading the cancellation after sleep step %d", seq))
		x.cancelRequested = x.cancelRequested || cancel // the kit's store reads none
	}
	return nil
}

// suspend records the sleep step seq and gives the run back until due, in
// one statement.
func (x *execution) suspend(seq int, due, started time.Time) {
	s := stepRecord{seq: seq, kind: kindSleep, name: "sleep", attempts: 1, dueAt: &due}
	x.check(x.r.runs.suspend(x.ctx, x.c, s, started), fmt.Sprintf("recording sleep step %d", seq))
	x.stop(haltSuspended, nil)
}

// Await is a step that waits for event ev whose key (see Correlate) is key,
// at most timeout after the step began, and returns its payload: the first
// such event stored, even one that came before the run reached the Await.
// After the deadline it returns an error matching ErrAwaitTimeout. While it
// waits, no process holds the run. The workflow must declare ev with
// Correlate, or Await fails with a permanent error naming the event; a key
// longer than 1,024 bytes, or that is not UTF-8 text without NUL (keys are
// stored as text, and indexed), fails it with a 422, reason
// "invalid_await_key" (an event with such a key is not kept).
func Await[T any](wf Context, ev *engine.Event[T], key string, timeout time.Duration) (T, error) {
	var out T
	x, err := execOf(wf)
	if err != nil {
		return out, err
	}
	event := ev.String()
	if x.def.correlations[event] == nil {
		return out, &engine.Error{Code: http.StatusInternalServerError, Reason: "not_correlated",
			Message: fmt.Sprintf("workflow %s awaits event %s without declaring it (workflow.Correlate)", x.def.id, event)}
	}
	if !validKey(key) {
		return out, &engine.Error{Code: http.StatusUnprocessableEntity, Reason: "invalid_await_key",
			Message: fmt.Sprintf("workflow %s awaits event %s with a key of %d bytes: want at most %d bytes of UTF-8 text without NUL", x.def.id, event, len(key), maxKeyLen)}
	}
	name := event + "/" + key
	seq, rec, err := x.begin(kindAwait, name)
	if err != nil {
		return out, err
	}
	if rec == nil {
		started := x.now()
		due := started.Add(max(timeout, 0))
		x.record(seq, kindAwait, name, nil, nil, 1, &due, started)
		rec = &stepRecord{seq: seq, kind: kindAwait, name: name, dueAt: &due, pending: true}
	}
	if !rec.pending {
		return out, x.replay(rec, &out)
	}
	for range 2 { // a signal found while parking is read on the second round
		payload, found, err := x.r.runs.signalFor(x.ctx, event, key)
		if err != nil {
			x.interrupted()
			x.stop(haltFailed, fmt.Errorf("reading signals: %w", err))
		}
		if found {
			x.resolve(seq, payload, nil)
			if err := json.Unmarshal(payload, &out); err != nil {
				return out, stepError(Permanent(fmt.Errorf("event %s does not decode into %T: %w", event, out, err)))
			}
			return out, nil
		}
		if !x.now().Before(*rec.dueAt) {
			we := &engine.Error{Code: ErrAwaitTimeout.Code, Reason: ErrAwaitTimeout.Reason,
				Message: fmt.Sprintf("no event %s with key %q before %s", event, key, rec.dueAt.UTC().Format(time.RFC3339Nano))}
			x.resolve(seq, nil, we)
			return out, we
		}
		if x.cancelRequested {
			x.cancelled = true
			return out, x.cancelledError()
		}
		x.parkAwaiting(*rec.dueAt, event, key)
	}
	x.stop(haltFailed, errors.New("await: a signal was seen and then not found"))
	return out, nil
}

// maxKeyLen bounds an Await's key: keys are indexed with their event
// (workflow_runs_awaiting, workflow_signals' primary key), and a B-tree
// entry holds about 2.7 kB.
const maxKeyLen = 1024

// validKey reports whether key can be awaited: stored as text, and
// indexed.
func validKey(key string) bool { return len(key) <= maxKeyLen && storable(key) }

// resolve records the outcome of the await at seq.
func (x *execution) resolve(seq int, payload []byte, we *engine.Error) {
	cancel, err := x.r.runs.resolve(x.ctx, x.c, seq, payload, we)
	x.check(err, fmt.Sprintf("recording await step %d", seq))
	x.cancelRequested = cancel
}

// parkAwaiting gives the run back until the event comes or due, unless the
// event is stored already (it returns then). On PostgreSQL it takes the
// lock the signal's handler takes, so that an event stored meanwhile is
// seen here or wakes the run.
func (x *execution) parkAwaiting(due time.Time, event, key string) {
	found, err := x.r.runs.parkAwaiting(x.ctx, x.c, due, event, key)
	x.check(err, "suspending the await")
	if found {
		return // it came: read it
	}
	x.stop(haltSuspended, nil)
}

// OnFailure registers a compensation: if the run fails or is cancelled
// later, c is invoked with in, after the compensations registered after
// this one (reverse order), each once, as a recorded step retried with
// Store.StepRetry; one that still fails is sent fire-and-forget with the
// same message id, so that the participant's engine retries it and
// dead-letters it. Register it right after the step it compensates
// succeeded.
func OnFailure[In, Out any](wf Context, c *engine.Command[In, Out], in In) {
	x, err := execOf(wf)
	if err != nil {
		return
	}
	x.comps = append(x.comps, compensation{
		name: c.String(),
		invoke: func(ctx context.Context) error {
			_, err := c.Invoke(ctx, in)
			return err
		},
		send: func(ctx context.Context) error { return c.Send(ctx, in) },
	})
}
