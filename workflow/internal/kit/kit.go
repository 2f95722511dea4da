// Package kit connects package workflowtest to the unexported machinery of
// package workflow (its executions, their replay, retries and
// compensations) without widening workflow's API: package workflow sets
// NewSim in its init, and workflowtest, which imports workflow (so that
// init has run), calls it. Being internal, only packages under workflow/
// can import it. It is the pattern of grpc-go's internal package: a
// function variable set by the package that owns the machinery.
package kit

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/switchboard-go/switchboard/engine"
)

// Config configures a Sim.
type Config struct {
	// Start is the fake clock's time at first.
	Start time.Time
	// MaxSteps is how many steps a run may record, and MaxWaits how many
	// times it may be given back (a Sleep, an Await that waits) and
	// executed again, before it is stopped with ErrTooManySteps.
	MaxSteps, MaxWaits int
	// Logger receives the runs' logs.
	Logger *slog.Logger
}

// ErrTooManySteps: a run recorded Config.MaxSteps steps, or waited
// Config.MaxWaits times, and wanted more. It is workflow.ErrTooManySteps,
// defined here for the package cycle's sake (errors.Is matches the runtime's
// error by code and reason).
var ErrTooManySteps = &engine.Error{Code: http.StatusUnprocessableEntity, Reason: "too_many_steps", Message: "the run made too many steps or waits (does the workflow loop for ever?)"}

// Sim executes workflow runs in memory, with a fake clock that moves only
// when a run waits (a Sleep, an Await's deadline, a retry's backoff). It is
// safe for concurrent use: stubs call Signal and Now while a run executes.
type Sim interface {
	// Run executes a run of wf (a *workflow.Workflow) with input (its
	// JSON) until it ends, and returns its output, or its error as data
	// (runErr: a failed, cancelled or stopped run, or an input its
	// workflow refuses). ctx must carry the engine its steps use
	// (engine.WithEngine); cancelling it stops the run (err). err is also
	// ErrTooManySteps, or a run given back by its execution (a bug: see
	// the log).
	Run(ctx context.Context, wf any, input []byte) (output []byte, runErr *engine.Error, err error)
	// Signal stores an event (its JSON payload) as the subscription of a
	// workflow's service stores the events it correlates: an Await of the
	// event with the key the workflow's Correlate function gives it
	// returns it. The same event and message id again is ignored.
	Signal(event string, payload []byte, messageID string)
	// Now returns the fake clock's time.
	Now() time.Time
	// Steps returns the recorded steps of the last run, a
	// []workflow.StepRecord (typed any: this package cannot import
	// workflow).
	Steps() any
}

// NewSim returns a Sim; package workflow sets it in its init.
var NewSim func(cfg Config) Sim
