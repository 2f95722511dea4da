package backendtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/engine/internal/dispatch"
)

// drainScenario is one engine that both serves the suite's work command
// (at most concurrency at a time, each blocked until released) and calls
// it calls times.
type drainScenario struct {
	e        *engine.Engine
	entered  atomic.Int32
	release  chan struct{}
	results  chan error
	stopErr  chan error
	contract contracts
}

func startDrainScenario(t *testing.T, h bridgetest.Harness, cfg engine.Config, concurrency, calls int) *drainScenario {
	t.Helper()
	d := &drainScenario{release: make(chan struct{}), results: make(chan error, calls), stopErr: make(chan error, 1), contract: newContracts()}
	s := engine.NewService(d.contract.svc, "1")
	engine.Handle(s, d.contract.work, func(ctx context.Context, in In) (Out, error) {
		d.entered.Add(1)
		<-d.release // ignores ctx: the drain must wait for it
		return Out{N: in.N, By: "server"}, nil
	}, engine.Concurrency(concurrency))
	d.e = startEngineWith(t, h, cfg, s)
	ctx := engine.WithEngine(context.WithoutCancel(t.Context()), d.e)
	for i := range calls {
		go func() {
			out, err := d.contract.work.Invoke(ctx, In{N: i})
			if err == nil && out.N != i {
				err = errors.New("wrong reply")
			}
			d.results <- err
		}()
	}
	bridgetest.WaitFor(t, h.WaitLimit(), "the handlers to be busy", func() bool { return int(d.entered.Load()) == concurrency })
	return d
}

// stopThenRelease starts Stop and, once it is draining, lets the handlers
// in flight finish.
func (d *drainScenario) stopThenRelease(t *testing.T, h bridgetest.Harness) {
	t.Helper()
	go func() { d.stopErr <- d.e.Stop(context.Background()) }()
	bridgetest.WaitFor(t, h.WaitLimit(), "Stop to begin draining", func() bool { return d.e.State() >= engine.StateDraining })
	time.Sleep(100 * time.Millisecond) // let a message taken during the drain reach a handler
	close(d.release)
}

// Every handler that completes during a drain has its reply delivered to a
// caller on the same engine, which still waits for it: its work was done.
func testStopAnswers(t *testing.T, h bridgetest.Harness) {
	const n = 8
	d := startDrainScenario(t, h, engine.Config{}, n, n)
	d.stopThenRelease(t, h)
	for range n {
		if err := <-d.results; err != nil {
			t.Errorf("call whose handler completed during the drain: %v", err)
		}
	}
	if err := <-d.stopErr; err != nil {
		t.Errorf("Stop: %v", err)
	}
}

// A handler that ignores its context and completes past the drain
// deadline, while Stop waits for it, has done its work: its reply reaches
// its caller on the same engine too, or a caller that retries would
// repeat the work. (Replies published after the deadline used to race the
// closing of the reply subscription: on NATS and PostgreSQL about half
// were lost.)
func testStopAnswersPastTheDeadline(t *testing.T, h bridgetest.Harness) {
	const n, drain = 4, 300 * time.Millisecond
	d := startDrainScenario(t, h, engine.Config{DrainTimeout: drain}, n, n)
	go func() { d.stopErr <- d.e.Stop(context.Background()) }()
	time.Sleep(2 * drain) // past the drain deadline: contexts cancelled, ignored
	close(d.release)
	for range n {
		if err := <-d.results; err != nil {
			t.Errorf("call whose handler completed while Stop waited for it: %v", err)
		}
	}
	<-d.stopErr // reports the drain timeout
}

// Once Stop has begun, no handler starts: the messages still queued stay
// for another instance, and only their calls (which never started) fail,
// with ErrShuttingDown, while the started ones are answered.
func testNoStartAfterStop(t *testing.T, h bridgetest.Harness) {
	const concurrency, n = 4, 12
	d := startDrainScenario(t, h, engine.Config{DrainTimeout: 2 * time.Second}, concurrency, n)
	d.stopThenRelease(t, h)
	var ok, shuttingDown int
	for range n {
		switch err := <-d.results; {
		case err == nil:
			ok++
		case errors.Is(err, engine.ErrShuttingDown):
			shuttingDown++
		default:
			t.Errorf("call: %v", err)
		}
	}
	<-d.stopErr
	if started := int(d.entered.Load()); started != concurrency {
		t.Errorf("%d handlers started, want the %d in flight when Stop began", started, concurrency)
	}
	if ok != concurrency || shuttingDown != n-concurrency {
		t.Errorf("%d calls answered, %d ErrShuttingDown; want %d and %d", ok, shuttingDown, concurrency, n-concurrency)
	}
}

// A router started with a context that has ended (a SIGTERM while the
// service starts) stops at once and leaves no goroutine behind: Watermill
// subscribes its handlers inside Run, and a router closed before they are
// all subscribed used to wait its whole drain timeout for handlers that
// never start, then leave goroutines waiting for them for ever.
func testStartCancelled(t *testing.T, h bridgetest.Harness) {
	const drain = 10 * time.Second
	before := goleak.IgnoreCurrent()
	b := h.Connect(t)
	rt, err := dispatch.New(b, drain, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c := newContracts()
	for i, topic := range []string{c.work.String(), c.fail.String(), c.panics.String()} {
		spec := bridge.Spec{Topic: topic, Group: c.svc, Kind: bridge.Command, Concurrency: 2}
		if err := rt.Handle(t.Context(), fmt.Sprintf("h%d", i), spec, func(*message.Message) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	began := time.Now()
	_ = rt.Start(ctx) // nil or ctx's error: both are fine
	err = rt.Close()
	if took := time.Since(began); took > drain/2 {
		t.Errorf("Start and Close with an ended context took %s (the drain timeout is %s): %v", took, drain, err)
	}
	_ = b.Close()
	if err := goleak.Find(before); err != nil {
		t.Errorf("goroutines left after Close: %v", err)
	}
}
