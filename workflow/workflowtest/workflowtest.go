package workflowtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/router"
	"github.com/switchboard-go/switchboard/workflow"
	"github.com/switchboard-go/switchboard/workflow/internal/kit"
)

// The bounds of a run: one that would record more than MaxSteps steps, or
// wait (be given back by a long Sleep or an Await that waits, and executed
// again from its history) more than MaxWaits times, is stopped, and Run
// returns ErrTooManySteps. Each wait replays the run's history: 1,000
// waits of a run are half a million replayed steps.
const (
	MaxSteps = workflow.MaxSteps
	MaxWaits = 1_000
)

// ErrTooManySteps: the run recorded MaxSteps steps or waited MaxWaits
// times, and wanted more (does the workflow loop for ever?).
var ErrTooManySteps = workflow.ErrTooManySteps

// Env runs workflows for one test: the stubs of the commands they invoke,
// on an in-process engine of its own, the events they emit and receive,
// the steps of the last run, and the fake clock. Create it with New; use
// it from the test's goroutine (stubs may call Signal and Now).
type Env struct {
	t   testing.TB
	sim kit.Sim
	bus *bus

	// mu guards what follows.
	mu       sync.Mutex
	services map[string]*engine.Service // the stubs, by service id
	order    []*engine.Service
	stubbed  map[string]bool // the stubbed commands' topics
	eng      *engine.Engine  // started by the first Run
	emitted  map[string][][]byte
	missing  []string           // commands invoked that have no stub
	abort    context.CancelFunc // the run's, while one executes
}

// start is the fake clock's time when an Env is created.
var start = time.Date(2030, time.January, 1, 0, 0, 0, 0, time.UTC)

// New returns an Env for the test t: its clock reads 2030-01-01 00:00 UTC,
// and its engine is stopped when the test ends (t.Cleanup). Its logs (the
// engine's and the runs', warnings and errors) go to t.Log.
func New(t testing.TB) *Env {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e := &Env{
		t:        t,
		sim:      kit.NewSim(kit.Config{Start: start, MaxSteps: MaxSteps, MaxWaits: MaxWaits, Logger: log}),
		services: map[string]*engine.Service{},
		stubbed:  map[string]bool{},
		emitted:  map[string][][]byte{},
	}
	e.bus = &bus{Bridge: inproc.New(), env: e}
	t.Cleanup(func() {
		e.mu.Lock()
		eng := e.eng
		e.mu.Unlock()
		if eng != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := eng.Stop(ctx); err != nil {
				t.Errorf("workflowtest: stopping the engine: %v", err)
			}
		}
		_ = e.bus.Bridge.Close()
	})
	return e
}

// Stub answers command c with fn in env, standing in for the service that
// owns it: the workflow's Invoke calls it through the engine (its strict
// codec, its input's Validate), with the step's message id in its
// context's Meta. fn's error is the step's, retried when transient as at
// run time (count the calls to see it). Stub every command the workflow
// invokes, compensations included, before the first Run; a workflow that
// invokes a command without a stub fails the test, naming it.
func Stub[In, Out any](env *Env, c *engine.Command[In, Out], fn func(ctx context.Context, in In) (Out, error)) {
	env.t.Helper()
	env.mu.Lock()
	defer env.mu.Unlock()
	switch {
	case env.eng != nil:
		env.t.Fatalf("workflowtest: Stub(%s) after Run: stub every command before the first Run", c)
	case env.stubbed[c.String()]:
		env.t.Fatalf("workflowtest: %s is stubbed twice", c)
	}
	id := router.ServiceID(c.Service(), c.Version())
	svc := env.services[id]
	if svc == nil {
		svc = engine.NewService(c.Service(), c.Version())
		env.services[id] = svc
		env.order = append(env.order, svc)
	}
	engine.Handle(svc, c, fn)
	env.stubbed[c.String()] = true
}

// Signal makes event ev with payload arrive, as it arrives at run time
// through the subscription of the workflow's service: an Await of ev whose
// key is the one the workflow's Correlate function gives payload returns
// it, whether the run reached that Await yet or not. Call it before Run
// (an event that came first) or from a stub (an event that a command
// caused). Events the workflow or a stub emit arrive the same way: Signal
// is for the others.
func Signal[T any](env *Env, ev *engine.Event[T], payload T) {
	env.t.Helper()
	b, err := json.Marshal(payload)
	if err != nil {
		env.t.Errorf("workflowtest: Signal(%s): %v", ev, err)
		return
	}
	env.sim.Signal(ev.String(), b, uuid.NewString())
}

// Run executes a run of wf with input in, to its end: its output, or its
// error as Invoke returns it (an *engine.Error: the workflow's own for a
// failed run, ErrCancelled, ErrNondeterministic... and a 400 for an input
// the workflow refuses). Its steps are the runtime's, replay included: a
// long Sleep or a pending Await gives the run back and it is executed
// again from its history, the clock moved to its wake time at once; a
// retry's backoff moves the clock too. A run that would record more than
// MaxSteps steps or wait more than MaxWaits times ends with
// ErrTooManySteps. A command invoked without a
// stub fails the test (Fatal).
func Run[In, Out any](env *Env, wf *workflow.Workflow[In, Out], in In) (Out, error) {
	env.t.Helper()
	var out Out
	input, err := json.Marshal(in)
	if err != nil {
		return out, engine.Invalid("input", err.Error())
	}
	eng := env.engine()
	ctx, cancel := context.WithCancel(engine.WithEngine(context.Background(), eng))
	defer cancel()
	env.mu.Lock()
	env.abort = cancel
	env.mu.Unlock()
	output, runErr, err := env.sim.Run(ctx, wf, input)
	env.mu.Lock()
	env.abort = nil
	missing := env.missing
	env.mu.Unlock()
	if len(missing) > 0 {
		env.t.Fatalf("workflowtest: workflow %s invoked %s, which has no stub: add workflowtest.Stub(env, <command>, fn) before Run", wf, strings.Join(missing, ", "))
	}
	if err != nil {
		return out, fmt.Errorf("workflowtest: workflow %s: %w", wf, err)
	}
	if runErr != nil {
		return out, runErr
	}
	if err := json.Unmarshal(output, &out); err != nil {
		return out, fmt.Errorf("workflowtest: workflow %s: decoding the output: %w", wf, err)
	}
	return out, nil
}

// engine returns the env's engine, started with the stubs on first use.
func (e *Env) engine() *engine.Engine {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.eng != nil {
		return e.eng
	}
	log := slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// No caller-side breaker: it opens on real time, which a stub's
	// failures would make depend on the machine's speed.
	eng, err := engine.New(engine.Config{SharedBridge: e.bus, Logger: log,
		Reliability: engine.Reliability{CallBreaker: engine.BreakerPolicy{Disabled: true}}})
	if err == nil {
		err = eng.Register(e.order...)
	}
	if err == nil {
		err = eng.Start(context.Background())
	}
	if err != nil {
		e.t.Fatalf("workflowtest: starting the engine: %v", err)
	}
	e.eng = eng
	return eng
}

// Steps returns the steps the last run recorded, in order, as workflow.Show
// gives them (times on the fake clock).
func (e *Env) Steps() []workflow.StepRecord {
	steps, _ := e.sim.Steps().([]workflow.StepRecord)
	return steps
}

// Now returns the fake clock's time. It moves only when a run waits.
func (e *Env) Now() time.Time { return e.sim.Now() }

// Emitted returns the payloads of the events ev emitted so far in env (by
// its runs' Emit steps and by stubs), in order. Events made to arrive with
// Signal are not emitted.
func Emitted[T any](env *Env, ev *engine.Event[T]) []T {
	env.t.Helper()
	env.mu.Lock()
	raw := slices.Clone(env.emitted[ev.String()])
	env.mu.Unlock()
	out := make([]T, 0, len(raw))
	for _, b := range raw {
		var v T
		if err := json.Unmarshal(b, &v); err != nil {
			env.t.Fatalf("workflowtest: emitted %s does not decode into %T: %v", ev, v, err)
		}
		out = append(out, v)
	}
	return out
}

// bus is the env's in-process bus, through which it sees every message
// the engine publishes: an event is recorded and arrives (Signal); a
// command that nothing handles is a missing stub, and stops the run.
type bus struct {
	bridge.Bridge
	env *Env
}

func (b *bus) Publisher() message.Publisher { return publisher{b} }

type publisher struct{ b *bus }

func (p publisher) Publish(topic string, msgs ...*message.Message) error {
	e := p.b.env
	if name, ok := strings.CutPrefix(topic, router.EventTopic("")); ok {
		for _, m := range msgs { // before the bus owns them
			e.mu.Lock()
			e.emitted[name] = append(e.emitted[name], slices.Clone(m.Payload))
			e.mu.Unlock()
			e.sim.Signal(name, m.Payload, m.UUID)
		}
	}
	err := p.b.Bridge.Publisher().Publish(topic, msgs...)
	if errors.Is(err, bridge.ErrNoSubscriber) && !strings.HasPrefix(topic, router.EventTopic("")) && !strings.HasPrefix(topic, router.ReplyPrefix) {
		e.noStub(topic)
	}
	return err
}

func (publisher) Close() error { return nil }

// noStub notes a command invoked without a stub and stops the run.
func (e *Env) noStub(topic string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !slices.Contains(e.missing, topic) {
		e.missing = append(e.missing, topic)
	}
	if e.abort != nil {
		e.abort()
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
