package workflow

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow/internal/kit"
)

// The machinery of package workflowtest (see package kit): a sim executes
// runs with the runner's execution — replay, retries, compensations — and
// keeps them in memory (it is their runStore) with a fake clock (it is
// their clock).
func init() {
	kit.NewSim = func(cfg kit.Config) kit.Sim { return &sim{cfg: cfg, at: cfg.Start} }
}

type sim struct {
	cfg kit.Config
	// mu guards what follows: stubs signal and read the clock while a run
	// executes.
	mu      sync.Mutex
	at      time.Time // the clock
	runs    int       // how many runs were started: their ids
	signals []simSignal
	def     *definition // the run's workflow
	run     *simRun     // the run executing, or the last one
}

type simSignal struct {
	event, messageID string
	payload          []byte
}

// simRun is a run as the store keeps it.
type simRun struct {
	id            string
	status        string
	output        []byte
	err           *engine.Error
	steps         []StepRecord
	parked        bool // given back until wake (Sleep, Await)
	wake          time.Time
	awaitingEvent string
	awaitingKey   string
	tooMany       bool
}

var errSimNotWorkflow = errors.New("workflowtest: not a workflow (a *workflow.Workflow)")

// Run executes the run as the runner does: claimed, executed until it
// ends or is given back; a run given back until a wake time (a Sleep, an
// Await) is claimed again at once, the clock moved to that time.
func (s *sim) Run(ctx context.Context, wf any, input []byte) ([]byte, *engine.Error, error) {
	w, ok := wf.(Registrable)
	if !ok || w == nil || reflect.ValueOf(w).IsNil() {
		return nil, nil, errSimNotWorkflow
	}
	d := w.definition()
	if err := d.checkInput(input); err != nil {
		return nil, stepError(err), nil
	}
	st := (&Store{Logger: s.cfg.Logger}).settings()
	r := &runner{st: st, runs: s, clock: s, defs: map[string]*definition{d.id: d}, names: []string{d.id}, halt: make(chan struct{})}
	s.mu.Lock()
	s.runs++
	run := &simRun{id: fmt.Sprintf("run-%d", s.runs), status: statusRunning}
	s.def, s.run = d, run
	s.mu.Unlock()
	for claims := 0; ; claims++ {
		s.mu.Lock()
		if claims > s.cfg.MaxWaits {
			s.mu.Unlock()
			return nil, nil, kit.ErrTooManySteps
		}
		c := &claimed{id: run.id, workflow: d.id, input: input, fence: 1, dbNow: s.at, localNow: s.at}
		for _, rec := range run.steps {
			sr := stepRecord{seq: rec.Seq, kind: rec.Kind, name: rec.Name, result: rec.Result, err: rec.Error, attempts: rec.Attempts, dueAt: rec.DueAt}
			sr.pending = sr.kind == kindAwait && sr.result == nil && sr.err == nil
			c.history = append(c.history, sr)
		}
		run.parked = false
		s.mu.Unlock()

		r.execute(ctx, c)

		s.mu.Lock()
		switch {
		case run.status == statusCompleted:
			s.mu.Unlock()
			return run.output, nil, nil
		case run.status != statusRunning:
			s.mu.Unlock()
			return nil, run.err, nil
		case run.tooMany:
			s.mu.Unlock()
			return nil, nil, kit.ErrTooManySteps
		case ctx.Err() != nil:
			s.mu.Unlock()
			return nil, nil, fmt.Errorf("workflowtest: run %s stopped: %w", run.id, ctx.Err())
		case !run.parked:
			s.mu.Unlock()
			return nil, nil, fmt.Errorf("workflowtest: run %s was given back by its execution (see the log)", run.id)
		}
		if run.awaitingEvent != "" && s.signalLocked(run.awaitingEvent, run.awaitingKey) != nil {
			run.wake = s.at // the event came: the signal's handler wakes the run
		}
		if run.wake.After(s.at) {
			s.at = run.wake
		}
		s.mu.Unlock()
	}
}

func (s *sim) Signal(event string, payload []byte, messageID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sg := range s.signals {
		if sg.event == event && sg.messageID == messageID {
			return
		}
	}
	s.signals = append(s.signals, simSignal{event: event, messageID: messageID, payload: slices.Clone(payload)})
}

func (s *sim) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.at
}

func (s *sim) Steps() any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.run == nil {
		return []StepRecord(nil)
	}
	return slices.Clone(s.run.steps)
}

// signalLocked returns the payload of the first event stored with that
// name whose key, by the run's Correlate function, is key; nil if none.
// As the runtime's subscription, an event whose key is empty or that does
// not decode is never a match.
func (s *sim) signalLocked(event, key string) []byte {
	c := s.def.correlations[event]
	if c == nil || key == "" {
		return nil
	}
	for _, sg := range s.signals {
		if sg.event != event {
			continue
		}
		if k, err := c.keyOf(sg.payload); err == nil && k == key {
			return sg.payload
		}
	}
	return nil
}

// The clock: it moves only when the run waits.

func (s *sim) wait(_ context.Context, _ <-chan struct{}, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d > 0 {
		s.at = s.at.Add(d)
	}
}

func (s *sim) now() time.Time { return s.Now() }

// The runStore: one run, in memory; its fence is always the execution's.

// addLocked records a new step, within MaxSteps.
func (s *sim) addLocked(st stepRecord, started time.Time) error {
	if len(s.run.steps) >= s.cfg.MaxSteps {
		s.run.tooMany = true
		return kit.ErrTooManySteps
	}
	s.run.steps = append(s.run.steps, StepRecord{
		Seq: st.seq, Kind: st.kind, Name: st.name, Result: slices.Clone(st.result), Error: st.err, Attempts: st.attempts,
		DueAt: st.dueAt, StartedAt: started, FinishedAt: s.at,
	})
	return nil
}

func (s *sim) checkpoint(_ context.Context, _ *claimed, st stepRecord, started time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return false, s.addLocked(st, started)
}

func (s *sim) suspend(_ context.Context, _ *claimed, st stepRecord, started time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.addLocked(st, started); err != nil {
		return err
	}
	s.run.parked, s.run.wake = true, *st.dueAt
	return nil
}

func (s *sim) resolve(_ context.Context, _ *claimed, seq int, payload []byte, we *engine.Error) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq < 1 || seq > len(s.run.steps) {
		return false, fmt.Errorf("workflowtest: no step %d to resolve", seq)
	}
	rec := &s.run.steps[seq-1]
	rec.Result, rec.Error, rec.FinishedAt = slices.Clone(payload), we, s.at
	s.run.awaitingEvent, s.run.awaitingKey = "", ""
	return false, nil
}

func (s *sim) park(_ context.Context, _ *claimed, due time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.run.parked, s.run.wake = true, due
	return nil
}

func (s *sim) signalFor(_ context.Context, event, key string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.signalLocked(event, key)
	return p, p != nil, nil
}

func (s *sim) parkAwaiting(_ context.Context, _ *claimed, due time.Time, event, key string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.signalLocked(event, key) != nil {
		return true, nil
	}
	s.run.parked, s.run.wake = true, due
	s.run.awaitingEvent, s.run.awaitingKey = event, key
	return false, nil
}

func (s *sim) finish(_ context.Context, _ *claimed, status string, out []byte, we *engine.Error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.run.status, s.run.output, s.run.err = status, slices.Clone(out), we
	return nil
}

func (s *sim) stop(_ context.Context, _ *claimed, we *engine.Error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.run.status, s.run.err = statusStopped, we
	return nil
}

func (s *sim) renew(context.Context, *claimed) error { return nil }

func (s *sim) cancelRequested(context.Context, *claimed) (bool, error) { return false, nil }

func (s *sim) release(string, int64, time.Duration) {}
