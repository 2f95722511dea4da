package workflow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/middleware"
)

// tracer is the tracer of steps' spans: OpenTelemetry's global provider's,
// read at each step (the engine's default provider too).
func tracer() trace.Tracer { return otel.GetTracerProvider().Tracer(middleware.TracerName) }

// Step kinds, as recorded.
const (
	kindInvoke     = "invoke"
	kindEmit       = "emit"
	kindStep       = "step"
	kindSleep      = "sleep"
	kindAwait      = "await"
	kindCompensate = "compensate"
)

// haltReason is why an execution ended before its run did.
type haltReason int

const (
	notHalted     haltReason = iota
	haltSuspended            // the run waits (Sleep, Await): given back with its wake time
	haltLeaseLost            // another runner has the run: record nothing more
	haltStopping             // the engine stops: give the run back
	haltStopped              // the run was stopped for an operator (recorded)
	haltFailed               // the database failed: give the run back
)

// shortSleep is the longest Sleep that waits in the process, holding the
// run, rather than giving it back.
const shortSleep = time.Second

// execution is one execution of a claimed run: the workflow function
// replayed over the run's history, then its new steps.
type execution struct {
	r      *runner
	def    *definition
	c      *claimed
	wf     *runContext
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger
	skew   time.Duration // the database's clock minus ours
	// next is the seq of the next step.
	next            int
	cancelRequested bool
	cancelled       bool // ErrCancelled was given: compensate, end cancelled
	compensating    bool
	comps           []compensation
	lost            atomic.Bool
	halt            haltReason
	haltErr         error
}

// compensation is what OnFailure registered.
type compensation struct {
	name   string
	invoke func(ctx context.Context) error
	send   func(ctx context.Context) error
}

// runContext is the Context a workflow function receives.
type runContext struct {
	context.Context
	x *execution
}

// RunID returns the run's id.
func (c *runContext) RunID() string { return c.x.c.id }

// Context is what a workflow function receives: the context of the run
// (it carries the engine and the Meta captured at Start, and is cancelled
// when the run's lease is lost or the engine's drain runs out) and the
// run's id. Steps take it: Invoke, Emit, Step, Sleep, Await, OnFailure.
// Call them from the workflow function's goroutine only, one at a time.
type Context interface {
	context.Context
	RunID() string
}

func (x *execution) now() time.Time { return x.r.clock.now().Add(x.skew) }

// messageIDs derives the message ids of steps.
var messageIDs = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/switchboard-go/switchboard/workflow"))

// messageID is the id of the message step seq of run id sends: the same
// on every attempt, in every instance.
func messageID(id string, seq int) string {
	return uuid.NewSHA1(messageIDs, []byte(id+"/"+strconv.Itoa(seq))).String()
}

// execute runs a claimed run until it ends, suspends, or is given back.
func (r *runner) execute(parent context.Context, c *claimed) {
	d := r.defs[c.workflow]
	var m runMeta
	_ = json.Unmarshal(c.metadata, &m) // written by start; a bad one loses only tracing
	ctx := engine.WithMeta(parent, engine.Meta{CorrelationID: m.CorrelationID, Traceparent: m.Traceparent, Tracestate: m.Tracestate, PrincipalID: m.PrincipalID, TenantID: m.TenantID})
	if m.Traceparent != "" { // the steps' spans join the trace of the Start
		ctx = middleware.Extract(ctx, message.Metadata{envelope.KeyTraceparent: m.Traceparent, envelope.KeyTracestate: m.Tracestate})
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	x := &execution{
		r: r, def: d, c: c, ctx: ctx, cancel: cancel,
		log:             r.st.log.With("workflow", d.id, "run_id", c.id),
		skew:            c.dbNow.Sub(c.localNow),
		next:            1,
		cancelRequested: c.cancelRequested,
	}
	x.wf = &runContext{Context: ctx, x: x}
	stopRenew, renewed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(renewed)
		x.renew(stopRenew)
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if v := recover(); v != nil { // a bug of ours: the run is given back
				x.log.Error("workflow: executor panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				x.halt = haltFailed
			}
		}()
		x.body()
	}()
	<-done
	close(stopRenew)
	<-renewed
	switch x.halt {
	case haltStopping:
		r.runs.release(c.id, c.fence, 0)
	case haltFailed:
		x.log.Warn("workflow: run given back", "err", x.haltErr)
		r.runs.release(c.id, c.fence, r.st.pollInterval)
	case haltLeaseLost:
		x.log.Warn("workflow: lease lost: another runner has the run; this one stopped without recording more")
	}
}

// renew renews the lease every LeaseTTL/3 until stop is closed. When the
// lease is lost (another runner took the run) or could not be renewed for
// 2/3 LeaseTTL, the run's context is cancelled.
func (x *execution) renew(stop <-chan struct{}) {
	ttl := x.r.st.leaseTTL
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), ttl/3)
		err := x.r.runs.renew(ctx, x.c)
		cancel()
		if errors.Is(err, errLeaseLost) {
			x.lost.Store(true)
			x.cancel()
			return
		}
		if err == nil {
			last = time.Now()
			continue
		}
		if time.Since(last) > 2*ttl/3 {
			x.log.Error("workflow: the lease could not be renewed: the run stops here", "err", err)
			x.lost.Store(true)
			x.cancel()
			return
		}
	}
}

// stop halts the execution: the workflow function's goroutine ends here.
// errHalted is what a step returns when called after the execution ended
// (from a deferred function of the workflow).
var errHalted = errors.New("workflow: the run's execution has ended (the run was given back, stopped or taken by another runner): a step called then, from a deferred function, does nothing")

func (x *execution) stop(reason haltReason, err error) {
	x.halt, x.haltErr = reason, err
	runtime.Goexit()
}

// interrupted halts the execution if the run's context ended (lease lost,
// drain over) or the engine stops.
func (x *execution) interrupted() {
	switch {
	case x.lost.Load():
		x.stop(haltLeaseLost, nil)
	case x.ctx.Err() != nil, x.r.stopping.Load():
		x.stop(haltStopping, nil)
	}
}

// body runs the workflow function, then what its outcome requires.
func (x *execution) body() {
	if x.c.gap != 0 {
		x.stopRun(&engine.Error{Code: http.StatusConflict, Reason: "history_gap",
			Message: fmt.Sprintf("workflow %s, run %s: step %d is missing from the history, steps after it are recorded", x.def.id, x.c.id, x.c.gap)})
	}
	out, err := x.call()
	if err == nil && x.next <= len(x.c.history) {
		x.nondeterministic(x.next, "", "the end of the workflow")
	}
	if x.cancelRequested {
		// A cancel seen at the last checkpoint (or the claim) and not by a
		// later step, there being none, or the function having returned
		// that step's error: the run is cancelled all the same.
		x.cancelled = true
	}
	if err == nil && !x.cancelled {
		x.finish(statusCompleted, out, nil)
		return
	}
	status, we := statusFailed, x.runError(err)
	if x.cancelled {
		status, we = statusCancelled, &engine.Error{Code: ErrCancelled.Code, Reason: ErrCancelled.Reason, Message: "run " + x.c.id + " was cancelled"}
	}
	x.compensate()
	x.finish(status, nil, we)
}

// call runs the workflow function; a panic is its failure.
func (x *execution) call() (out []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			x.log.Error("workflow: the workflow function panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			err = errPanicked
		}
	}()
	return x.def.run(x, x.c.input)
}

var errPanicked = errors.New("workflow: the workflow function panicked")

// runError is the run's error as data: the workflow's *engine.Error, or a
// 500 that leaks nothing (the original is logged).
func (x *execution) runError(err error) *engine.Error {
	var we *engine.Error
	if errors.As(err, &we) && we.Reason != reasonStepFailed {
		return we
	}
	// A plain error, or a local step's (whose message is the function's
	// own error text, kept in the step's record for operators): the caller
	// gets no internals, as from a handler's plain error.
	if !errors.Is(err, errPanicked) {
		x.log.Error("workflow: run failed", "err", err)
	}
	return &engine.Error{Code: http.StatusInternalServerError, Reason: "internal", Message: "internal error", Details: map[string]any{"run_id": x.c.id}}
}

// reasonStepFailed is the reason of a local step's plain error.
const reasonStepFailed = "step_failed"

// finish records the run's end.
func (x *execution) finish(status string, out []byte, we *engine.Error) {
	x.check(x.r.runs.finish(x.ctx, x.c, status, out, we), "recording the end of the run")
}

// check halts the execution when the run store failed: lease lost, or
// the database failed (given back, unless the run's context ended or the
// engine stops).
func (x *execution) check(err error, doing string) {
	if errors.Is(err, errLeaseLost) {
		x.stop(haltLeaseLost, nil)
	}
	if err != nil {
		x.interrupted()
		x.stop(haltFailed, fmt.Errorf("%s: %w", doing, err))
	}
}

// stopRun stops the run for an operator, with its reason.
func (x *execution) stopRun(we *engine.Error) {
	x.log.Error("workflow: run stopped", "err", we)
	x.check(x.r.runs.stop(x.ctx, x.c, we), "recording the stop of the run")
	x.stop(haltStopped, nil)
}

// nondeterministic stops the run: the code no longer matches its history
// at seq.
func (x *execution) nondeterministic(seq int, kind, name string) {
	rec := x.c.history[seq-1]
	code := kind + " " + strconv.Quote(name)
	if kind == "" {
		code = name
	}
	x.stopRun(&engine.Error{
		Code:   ErrNondeterministic.Code,
		Reason: ErrNondeterministic.Reason,
		Message: fmt.Sprintf("workflow %s, run %s: step %d is recorded as %s %q but the code now reaches %s (deploy a changed workflow under a new version)",
			x.def.id, x.c.id, seq, rec.kind, rec.name, code),
		Details: map[string]any{"seq": seq, "recorded_kind": rec.kind, "recorded_name": rec.name, "code_kind": kind, "code_name": name},
	})
}

// begin starts a step of kind and name: it returns its seq and, when the
// step is recorded, its record. On a new step it first checks the run:
// the engine stopping or the lease lost halt the execution, a requested
// cancellation is ErrCancelled.
func (x *execution) begin(kind, name string) (int, *stepRecord, error) {
	if x.halt != notHalted {
		// A deferred function of the workflow, run by the Goexit that
		// ended the execution: its step must neither act nor record.
		return 0, nil, errHalted
	}
	if x.cancelled && !x.compensating {
		return 0, nil, x.cancelledError()
	}
	seq := x.next
	if seq <= len(x.c.history) {
		rec := &x.c.history[seq-1]
		if rec.kind == kindCompensate && kind != kindCompensate {
			// The run was cancelled here: it compensates again from here.
			x.cancelled = true
			return 0, nil, x.cancelledError()
		}
		if rec.kind != kind || rec.name != name {
			x.nondeterministic(seq, kind, name)
		}
		x.next++
		return seq, rec, nil
	}
	x.interrupted()
	if x.cancelRequested && !x.compensating {
		x.cancelled = true
		return 0, nil, x.cancelledError()
	}
	if seq > MaxSteps && !x.compensating {
		x.stopRun(&engine.Error{Code: ErrTooManySteps.Code, Reason: ErrTooManySteps.Reason,
			Message: fmt.Sprintf("workflow %s, run %s: the code reaches step %d, past MaxSteps (%d): a workflow that loops over its input should start a new run for each part", x.def.id, x.c.id, seq, MaxSteps),
			Details: map[string]any{"seq": seq}})
	}
	x.next++
	return seq, nil, nil
}

// MaxSteps bounds a run's history: a run whose code reaches a step past it
// (compensations aside) is stopped with ErrTooManySteps. Every claim
// reads a run's whole history and replays it, so a run that loops over its
// input without bound would cost more at each wake.
const MaxSteps = 10_000

func (x *execution) cancelledError() *engine.Error {
	return &engine.Error{Code: ErrCancelled.Code, Reason: ErrCancelled.Reason, Message: "run " + x.c.id + " was cancelled"}
}

// replay returns a recorded step's outcome: its error, or its result
// decoded into out.
func (x *execution) replay(rec *stepRecord, out any) error {
	if rec.err != nil {
		return rec.err
	}
	if rec.result == nil || out == nil {
		return nil
	}
	if err := json.Unmarshal(rec.result, out); err != nil {
		x.stopRun(&engine.Error{
			Code: ErrNondeterministic.Code, Reason: ErrNondeterministic.Reason,
			Message: fmt.Sprintf("workflow %s, run %s: the recorded result of step %d (%s %q) does not decode into %T: %v", x.def.id, x.c.id, rec.seq, rec.kind, rec.name, out, err),
			Details: map[string]any{"seq": rec.seq},
		})
	}
	return nil
}

// attempt runs the work of new step seq with the retry policy
// (StepRetry), in a span of its own (child of the run's trace, parent of
// the messages it sends). It returns the attempts made and the last error;
// it halts the execution when the run's context ends or the engine stops
// between attempts.
func (x *execution) attempt(seq int, kind, name string, local bool, work func(ctx context.Context) error) (attempts int, err error) {
	ctx, span := tracer().Start(x.ctx, "workflow "+kind+" "+name, trace.WithAttributes(
		attribute.String("workflow.name", x.def.id),
		attribute.String("workflow.run_id", x.c.id),
		attribute.Int("workflow.step.seq", seq),
		attribute.String("workflow.step.kind", kind),
		attribute.String("workflow.step.name", name),
	))
	defer func() { // also when the execution halts here
		span.SetAttributes(attribute.Int("workflow.step.attempts", attempts))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	b := x.r.st.retry.NewBackOff()
	for attempts = 1; ; attempts++ {
		err = work(ctx)
		if err == nil {
			return attempts, nil
		}
		if x.ctx.Err() != nil {
			x.interrupted()
		}
		if permanent(err, local) {
			return attempts, err
		}
		wait := b.NextBackOff()
		if wait == backoff.Stop {
			return attempts, err
		}
		x.log.Warn("workflow: step failed; retrying", "attempt", attempts, "wait", wait, "err", err)
		x.r.clock.wait(x.ctx, x.r.halt, wait)
		x.interrupted()
		if !x.compensating && !timedOut(err, local) {
			// A cancel that came since the step began ends its retries: the
			// step fails with its last error (recorded), the run is
			// cancelled at this boundary. Not after a timeout: the
			// participant may have acted, and only a later attempt's reply
			// (its inbox's) says so, and lets the workflow register the
			// step's compensation.
			cancel, cerr := x.r.runs.cancelRequested(x.ctx, x.c)
			x.check(cerr, fmt.Sprintf("reading the cancellation while retrying step %d", seq))
			if cancel {
				x.cancelRequested = true
				return attempts, err
			}
		}
	}
}

// timedOut reports whether err, a command's, left its effect unknown: the
// call timed out (504).
func timedOut(err error, local bool) bool {
	var we *engine.Error
	return !local && errors.As(err, &we) && we.Code == http.StatusGatewayTimeout
}

// permanent reports whether retrying err cannot help.
func permanent(err error, local bool) bool {
	var p *permanentError
	if errors.As(err, &p) {
		return true
	}
	var we *engine.Error
	if errors.As(err, &we) {
		// ErrNoHandler (503) is retried too: a participant absent during a
		// deploy or a restart comes back.
		return we.Permanent()
	}
	return !local // a call that failed before the wire (encoding): the same again
}

// stepError is a failed step's error as recorded (and returned, the same
// on replay).
func stepError(err error) *engine.Error {
	var we *engine.Error
	if errors.As(err, &we) {
		return we
	}
	return &engine.Error{Code: http.StatusInternalServerError, Reason: reasonStepFailed, Message: err.Error()}
}

func errorJSON(we *engine.Error) any {
	if we == nil {
		return nil
	}
	b, err := json.Marshal(we)
	if err != nil {
		b, _ = json.Marshal(&engine.Error{Code: we.Code, Reason: we.Reason, Message: we.Message})
	}
	if bytes.Contains(b, []byte(`\u0000`)) {
		// jsonb cannot hold \u0000 (a message quoting an input's NUL):
		// the checkpoint would fail at every attempt, for ever.
		var v any
		if json.Unmarshal(b, &v) == nil {
			b, _ = json.Marshal(withoutNUL(v))
		}
	}
	return string(b)
}

// withoutNUL returns v, decoded JSON, with each NUL of its strings and
// keys replaced by U+FFFD.
func withoutNUL(v any) any {
	switch v := v.(type) {
	case string:
		return strings.ReplaceAll(v, "\x00", "\uFFFD")
	case []any:
		for i := range v {
			v[i] = withoutNUL(v[i])
		}
		return v
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[strings.ReplaceAll(k, "\x00", "\uFFFD")] = withoutNUL(x)
		}
		return out
	}
	return v
}

// storable reports whether s can be stored as PostgreSQL text: UTF-8
// without NUL.
func storable(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// record checkpoints step seq (and renews the lease) in one statement; it
// halts the execution when the lease is lost.
func (x *execution) record(seq int, kind, name string, result []byte, we *engine.Error, attempts int, due *time.Time, started time.Time) {
	cancel, err := x.r.runs.checkpoint(x.ctx, x.c, stepRecord{seq: seq, kind: kind, name: name, result: result, err: we, attempts: attempts, dueAt: due}, started)
	x.check(err, fmt.Sprintf("recording step %d", seq))
	x.cancelRequested = cancel
}

// settle records a new step's outcome and returns the error the workflow
// gets (the recorded one, as a replay would return it).
func (x *execution) settle(seq int, kind, name string, started time.Time, attempts int, result any, err error) error {
	var b []byte
	if err == nil && result != nil {
		var merr error
		if b, merr = json.Marshal(result); merr != nil {
			err = Permanent(fmt.Errorf("the result of step %d (%s %q) is not JSON-serialisable: %w", seq, kind, name, merr))
		}
	}
	if err != nil {
		we := stepError(err)
		x.record(seq, kind, name, nil, we, attempts, nil, started)
		return we
	}
	x.record(seq, kind, name, b, nil, attempts, nil, started)
	return nil
}

// compensate runs the compensations registered so far, last first, each
// as a recorded step.
func (x *execution) compensate() {
	x.compensating = true
	for i := len(x.comps) - 1; i >= 0; i-- {
		comp := x.comps[i]
		seq, rec, _ := x.begin(kindCompensate, comp.name)
		if rec != nil {
			continue
		}
		started := x.now()
		id := messageID(x.c.id, seq)
		attempts, err := x.attempt(seq, kindCompensate, comp.name, false, func(ctx context.Context) error {
			return comp.invoke(engine.WithMessageID(ctx, id))
		})
		if err == nil {
			x.record(seq, kindCompensate, comp.name, nil, nil, attempts, nil, started)
			continue
		}
		// Still failing: the participant's engine retries it and
		// dead-letters it; it is recorded as sent.
		we := stepError(err)
		if serr := comp.send(engine.WithMessageID(x.ctx, id)); serr != nil {
			x.interrupted()
			x.stopRun(&engine.Error{
				Code: http.StatusInternalServerError, Reason: "compensation_failed",
				Message: fmt.Sprintf("workflow %s, run %s: compensation %s (step %d) failed (%v) and could not be sent (%v)", x.def.id, x.c.id, comp.name, seq, err, serr),
			})
		}
		sent := &engine.Error{Code: we.Code, Reason: we.Reason, Message: we.Message, Details: map[string]any{}}
		for k, v := range we.Details {
			sent.Details[k] = v
		}
		sent.Details["sent"] = true // last: the participant's own details do not decide it
		x.record(seq, kindCompensate, comp.name, nil, sent, attempts, nil, started)
	}
}

// park gives the run back until due (a Sleep woken early).
func (x *execution) park(due time.Time) {
	x.check(x.r.runs.park(x.ctx, x.c, due), "suspending the run")
	x.stop(haltSuspended, nil)
}
