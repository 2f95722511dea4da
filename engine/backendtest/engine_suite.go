package backendtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/engine"
)

// In and Out are the payloads of the suite's commands and events.
type In struct {
	N    int    `json:"n"`    // a number, echoed in Out.N
	From string `json:"from"` // who sent it, echoed in Out.From
}

// Out is the suite's result type.
type Out struct {
	N    int    `json:"n"`    // In.N, or an event's number
	From string `json:"from"` // In.From
	By   string `json:"by"`   // which of the suite's engines handled the command
}

// contracts are the suite's contracts for one test, under unique names so
// durable leftovers of earlier runs never interfere.
type contracts struct {
	svc    string
	work   *engine.Command[In, Out]
	fail   *engine.Command[In, Out]
	panics *engine.Command[In, Out]
	event  *engine.Event[Out]
}

func newContracts() contracts {
	svc := bridgetest.Unique("svc")
	return contracts{
		svc:    svc,
		work:   engine.NewCommand[In, Out](svc, "1", "work"),
		fail:   engine.NewCommand[In, Out](svc, "1", "fail"),
		panics: engine.NewCommand[In, Out](svc, "1", "panics"),
		event:  engine.NewEvent[Out](svc + ".happened"),
	}
}

// service returns an instance of the suite's service named by, counting
// handled commands in handled (by payload N).
func (c contracts) service(by string, handled *sync.Map, delay time.Duration) *engine.Service {
	s := engine.NewService(c.svc, "1")
	engine.Handle(s, c.work, func(ctx context.Context, in In) (Out, error) {
		if delay > 0 {
			time.Sleep(delay)
		}
		if handled != nil {
			v, _ := handled.LoadOrStore(in.N, new(atomic.Int32))
			v.(*atomic.Int32).Add(1)
		}
		return Out{N: in.N, From: in.From, By: by}, nil
	})
	engine.Handle(s, c.fail, func(ctx context.Context, in In) (Out, error) {
		return Out{}, &engine.Error{Code: 422, Message: fmt.Sprintf("refused %d", in.N), Details: map[string]any{"n": float64(in.N)}}
	})
	engine.Handle(s, c.panics, func(ctx context.Context, in In) (Out, error) {
		panic("boom")
	})
	return s
}

// subscriber returns a service subscribing to the suite's event, counting
// deliveries by payload N; failFirst makes the first delivery of each event
// fail (to prove redelivery).
func (c contracts) subscriber(name string, seen *sync.Map, failFirst bool) *engine.Service {
	s := engine.NewService(name, "1")
	var failed sync.Map
	engine.Subscribe(s, c.event, func(ctx context.Context, ev Out) error {
		if failFirst {
			if _, already := failed.LoadOrStore(ev.N, true); !already {
				return errors.New("transient failure, please redeliver")
			}
		}
		v, _ := seen.LoadOrStore(ev.N, new(atomic.Int32))
		v.(*atomic.Int32).Add(1)
		return nil
	})
	return s
}

func startEngine(t *testing.T, h bridgetest.Harness, services ...*engine.Service) *engine.Engine {
	t.Helper()
	return startEngineWith(t, h, engine.Config{}, services...)
}

// startEngineWith is startEngine with cfg's non-zero DrainTimeout.
func startEngineWith(t *testing.T, h bridgetest.Harness, cfg engine.Config, services ...*engine.Service) *engine.Engine {
	t.Helper()
	drain := h.WaitLimit()
	if cfg.DrainTimeout > 0 {
		drain = cfg.DrainTimeout
	}
	e, err := engine.New(engine.Config{
		SharedBridge: h.Connect(t),
		Logger:       slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		CallTimeout:  2 * h.WaitLimit(),
		DrainTimeout: drain,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Register(services...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.WaitLimit())
	defer cancel()
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	return e
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func count(m *sync.Map) (distinct, total int, dups []int) {
	m.Range(func(k, v any) bool {
		distinct++
		n := int(v.(*atomic.Int32).Load())
		total += n
		if n > 1 {
			dups = append(dups, k.(int))
		}
		return true
	})
	return
}

// RunEngine runs the engine-level conformance suite on the backend, each
// case of the package documentation a named subtest.
func RunEngine(t *testing.T, h bridgetest.Harness) {
	for _, c := range engineCases {
		if c.outage && h.Outage == nil {
			continue
		}
		t.Run(c.name, func(t *testing.T) { c.run(t, h) })
	}
}

// engineCase is one named case of the suite.
type engineCase struct {
	name   string
	outage bool // runs only when the Harness has an Outage
	run    func(t *testing.T, h bridgetest.Harness)
}

// engineCases are RunEngine's cases, in order; the package documentation
// lists their names (TestDocListsTheCases keeps the two the same).
var engineCases = []engineCase{
	{name: "CommandRoundTrip", run: func(t *testing.T, h bridgetest.Harness) {
		c := newContracts()
		startEngine(t, h, c.service("server", nil, 0))
		client := startEngine(t, h)
		out, err := c.work.Invoke(engine.WithEngine(t.Context(), client), In{N: 7, From: "client"})
		if err != nil || out != (Out{N: 7, From: "client", By: "server"}) {
			t.Fatalf("round trip: %+v %v", out, err)
		}
	}},
	{name: "ErrorsCrossTheWire", run: func(t *testing.T, h bridgetest.Harness) {
		c := newContracts()
		startEngine(t, h, c.service("server", nil, 0))
		ctx := engine.WithEngine(t.Context(), startEngine(t, h))
		_, err := c.fail.Invoke(ctx, In{N: 3})
		var e *engine.Error
		if !errors.As(err, &e) || e.Code != 422 || e.Message != "refused 3" || e.Details["n"] != 3 {
			t.Errorf("handled error: %#v", err)
		}
		if _, err := c.panics.Invoke(ctx, In{}); !errors.Is(err, engine.ErrInternal) || strings.Contains(err.Error(), "boom") {
			t.Errorf("panic: %v", err)
		}
		if _, err := c.work.Invoke(ctx, In{N: 1}); err != nil {
			t.Errorf("after a panic: %v", err)
		}
	}},
	{name: "CompetingConsumers", run: func(t *testing.T, h bridgetest.Harness) {
		c := newContracts()
		var handled sync.Map
		startEngine(t, h, c.service("a", &handled, 0))
		startEngine(t, h, c.service("b", &handled, 0))
		ctx := engine.WithEngine(t.Context(), startEngine(t, h))
		const n = 60
		by := map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				out, err := c.work.Invoke(ctx, In{N: i})
				if err != nil {
					t.Errorf("call %d: %v", i, err)
					return
				}
				mu.Lock()
				by[out.By]++
				mu.Unlock()
			})
		}
		wg.Wait()
		distinct, total, dups := count(&handled)
		if distinct != n || total != n {
			t.Errorf("handled %d distinct commands %d times (duplicates %v), want %d once each", distinct, total, dups, n)
		}
		t.Logf("instances handled: %v", by)
	}},
	{name: "EventFanOut", run: func(t *testing.T, h bridgetest.Harness) {
		c := newContracts()
		var seenA, seenB sync.Map
		nameA, nameB := bridgetest.Unique("subA"), bridgetest.Unique("subB")
		startEngine(t, h, c.subscriber(nameA, &seenA, false))
		startEngine(t, h, c.subscriber(nameA, &seenA, false)) // a second instance of A competes
		startEngine(t, h, c.subscriber(nameB, &seenB, false))
		ctx := engine.WithEngine(t.Context(), startEngine(t, h))
		const n = 40
		for i := range n {
			if err := c.event.Emit(ctx, Out{N: i}); err != nil {
				t.Fatal(err)
			}
		}
		bridgetest.WaitFor(t, 2*h.WaitLimit(), "every event in both services", func() bool {
			a, _, _ := count(&seenA)
			b, _, _ := count(&seenB)
			return a == n && b == n
		})
		time.Sleep(300 * time.Millisecond)
		for name, m := range map[string]*sync.Map{"A": &seenA, "B": &seenB} {
			if distinct, total, dups := count(m); distinct != n || total != n {
				t.Errorf("service %s: %d distinct, %d deliveries (duplicates %v), want %d once each", name, distinct, total, dups, n)
			}
		}
	}},
	{name: "ReplyGoesToTheRightCaller", run: func(t *testing.T, h bridgetest.Harness) {
		c := newContracts()
		startEngine(t, h, c.service("server", nil, 0))
		var wg sync.WaitGroup
		for caller := range 3 {
			ctx := engine.WithEngine(t.Context(), startEngine(t, h))
			wg.Go(func() {
				for i := range 20 {
					from := fmt.Sprintf("caller%d", caller)
					out, err := c.work.Invoke(ctx, In{N: i, From: from})
					if err != nil || out.N != i || out.From != from {
						t.Errorf("%s call %d got %+v, %v", from, i, out, err)
					}
				}
			})
		}
		wg.Wait()
	}},
	{name: "RedeliveryAfterHandlerError", run: func(t *testing.T, h bridgetest.Harness) {
		c := newContracts()
		var seen sync.Map
		startEngine(t, h, c.subscriber(bridgetest.Unique("flaky"), &seen, true))
		ctx := engine.WithEngine(t.Context(), startEngine(t, h))
		const n = 10
		for i := range n {
			if err := c.event.Emit(ctx, Out{N: i}); err != nil {
				t.Fatal(err)
			}
		}
		bridgetest.WaitFor(t, 2*h.WaitLimit(), "every failed event redelivered and handled", func() bool {
			d, _, _ := count(&seen)
			return d == n
		})
	}},
	{name: "GracefulShutdownLosesNothing", run: func(t *testing.T, h bridgetest.Harness) {
		c := newContracts()
		var handled sync.Map
		first := startEngine(t, h, c.service("first", &handled, 20*time.Millisecond))
		ctx := engine.WithEngine(t.Context(), startEngine(t, h))
		const n = 40
		errs := make(chan error, n)
		for i := range n {
			go func() {
				_, err := c.work.Invoke(ctx, In{N: i})
				errs <- err
			}()
		}
		bridgetest.WaitFor(t, h.WaitLimit(), "some commands handled", func() bool { d, _, _ := count(&handled); return d >= 5 })
		// Without GroupOutlivesMembers the new instance must be up before
		// the old one stops, as in a rolling restart; with it, after.
		overlap := !h.Connect(t).Capabilities().GroupOutlivesMembers
		if overlap {
			startEngine(t, h, c.service("second", &handled, 0))
		}
		if err := first.Stop(context.Background()); err != nil { // drains in-flight handlers
			t.Errorf("Stop: %v", err)
		}
		if !overlap {
			startEngine(t, h, c.service("second", &handled, 0)) // picks up the rest
		}
		for range n {
			if err := <-errs; err != nil {
				t.Errorf("call failed across a graceful restart: %v", err)
			}
		}
		if distinct, total, dups := count(&handled); distinct != n || total != n {
			t.Errorf("handled %d distinct, %d total (duplicates %v), want %d once each", distinct, total, dups, n)
		}
	}},
	{name: "StopAnswersCallsItsHandlersFinish", run: testStopAnswers},
	{name: "StopAnswersCallsCompletedPastTheDeadline", run: testStopAnswersPastTheDeadline},
	{name: "NoHandlerStartsAfterStop", run: testNoStartAfterStop},
	{name: "StartWithEndedContext", run: testStartCancelled},
	{name: "SurvivesOutage", outage: true, run: testEngineOutage},
}

func testEngineOutage(t *testing.T, h bridgetest.Harness) {
	c := newContracts()
	var seen sync.Map
	sub := startEngine(t, h, c.subscriber(bridgetest.Unique("sub"), &seen, false), c.service("server", nil, 0))
	client := startEngine(t, h)
	ctx := engine.WithEngine(t.Context(), client)
	emit := func(from, to int) {
		for i := from; i < to; i++ {
			deadline := time.Now().Add(2 * h.WaitLimit())
			for {
				err := c.event.Emit(ctx, Out{N: i})
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("emit %d: %v", i, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	emit(0, 50)
	restore := h.Outage(t)
	bridgetest.WaitFor(t, h.WaitLimit(), "Health to report the outage", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return sub.Health(ctx) != nil
	})
	restore()
	bridgetest.WaitFor(t, 3*h.WaitLimit(), "Health to recover", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return sub.Health(ctx) == nil && client.Health(ctx) == nil
	})
	emit(50, 100)
	bridgetest.WaitFor(t, 3*h.WaitLimit(), "every event emitted around the outage", func() bool {
		d, _, _ := count(&seen)
		return d == 100
	})
	deadline := time.Now().Add(3 * h.WaitLimit())
	for { // commands work again (the first call after a reconnect may fail)
		_, err := c.work.Invoke(ctx, In{N: 1}, engine.CallTimeout(h.WaitLimit()))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("command after the outage: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ChaosEvents is how many events Run's chaos test sends.
const ChaosEvents = 10_000

// Run runs the engine half of the conformance suite on one backend: the
// cases of RunEngine, then RunChaos with ChaosEvents events. The bridge half
// is bridgetest.Run; a backend's TestConformance runs both.
func Run(t *testing.T, h bridgetest.Harness) {
	t.Run("Engine", func(t *testing.T) { RunEngine(t, h) })
	t.Run("Chaos", func(t *testing.T) { RunChaos(t, h, ChaosEvents) })
}
