package inproc_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/engine/backendtest"
)

func TestConformance(t *testing.T) {
	bus := bridgetest.Unique("bus") // one shared bus per test run
	h := bridgetest.Harness{
		URL:  "gochannel://" + bus,
		Wait: 5 * time.Second,
	}
	t.Run("Bridge", func(t *testing.T) { bridgetest.Run(t, h) })
	backendtest.Run(t, h)
}

// The URL takes no parameters; nack_delay, which it took before, is
// refused by name (bridge.DefaultNackDelay is the one default).
func TestBadURL(t *testing.T) {
	for u, name := range map[string]string{
		"gochannel://?nack_delay=1s":        "nack_delay",
		"gochannel://bus?connect_timeout=1": "connect_timeout",
		"gochannel://?colour=blue":          "colour",
	} {
		b, err := bridge.Open(t.Context(), u)
		if err == nil {
			_ = b.Close()
			t.Errorf("Open(%q) succeeded", u)
			continue
		}
		if !errors.Is(err, bridge.ErrBadURL) || !strings.Contains(err.Error(), "unknown parameter "+name) {
			t.Errorf("Open(%q): %v, want ErrBadURL naming %s", u, err, name)
		}
	}
}

// A message nacked without a delay of its own comes back after
// bridge.DefaultNackDelay, not at once; one that asks for a delay gets it.
func TestNackDelay(t *testing.T) {
	t.Parallel()
	bus := inproc.New()
	t.Cleanup(func() { _ = bus.Close() })
	_, ch, first := holding(t, bus, commands, "x")
	nacked := time.Now()
	first.Nack() // no delay of its own
	second := bridgetest.Receive(t, ch, bridge.DefaultNackDelay+5*time.Second)
	if waited := time.Since(nacked); waited < bridge.DefaultNackDelay-50*time.Millisecond {
		t.Errorf("plain nack redelivered after %s, want bridge.DefaultNackDelay (%s)", waited, bridge.DefaultNackDelay)
	}

	second.Metadata.Set(bridge.NackDelayKey, "10ms")
	nacked = time.Now()
	second.Nack()
	bridgetest.Receive(t, ch, 5*time.Second).Ack()
	if waited := time.Since(nacked); waited > bridge.DefaultNackDelay/2 {
		t.Errorf("nack asking for 10ms redelivered after %s", waited)
	}
}

// holding subscribes to spec on bus, publishes payloads and receives the
// first of them, which the caller then holds (neither acked nor nacked).
func holding(t *testing.T, bus bridge.Bridge, spec bridge.Spec, payloads ...string) (message.Subscriber, <-chan *message.Message, *message.Message) {
	t.Helper()
	ch, sub := bridgetest.Subscribe(t, bus, spec)
	bridgetest.Publish(t, bus, spec.Topic, payloads...)
	return sub, ch, bridgetest.Receive(t, ch, 5*time.Second)
}

// closing is a subscriber's Close running in the background: its result
// arrives on the channel.
type closing <-chan error

func closeInBackground(sub message.Subscriber) closing {
	closed := make(chan error, 1)
	go func() { closed <- sub.Close() }()
	return closed
}

// waits fails the test if Close has returned already.
func (c closing) waits(t *testing.T) {
	t.Helper()
	select {
	case err := <-c:
		t.Fatalf("Close returned (%v) while a message was still held", err)
	default:
	}
}

// returnsAfter fails the test unless Close returns nil within 5 s of what.
func (c closing) returnsAfter(t *testing.T, what string) {
	t.Helper()
	select {
	case err := <-c:
		if err != nil {
			t.Errorf("Close = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Close still waits, 5 s after %s", what)
	}
}

var commands = bridge.Spec{Topic: "t", Group: "g", Kind: bridge.Command, Concurrency: 1}

// A closing subscriber delivers nothing more, even to a worker that just
// settled a message while more are queued. (A worker used to pick between
// the next delivery and the stop at random.)
func TestClosingSubscriberTakesNothingMore(t *testing.T) {
	t.Parallel()
	for round := range 20 {
		bus := inproc.New()
		sub, ch, first := holding(t, bus, commands, "first", "second")
		closed := closeInBackground(sub)
		time.Sleep(10 * time.Millisecond) // Close has begun: it waits for first's verdict
		first.Ack()
		if m, ok := <-ch; ok {
			m.Ack()
			t.Fatalf("round %d: a closing subscriber delivered %q", round, m.Payload)
		}
		<-closed
		_ = bus.Close()
	}
}

// A subscriber's Close has no time limit of its own: it waits for the
// verdict on a message its handler holds, however long, and the message
// goes to no other member of the group meanwhile; an ack ends the wait and
// the message for good. (Close used to give up after a fixed bound and
// queue the message again while its handler still ran: a duplicate.)
func TestCloseWaitsForTheVerdict(t *testing.T) {
	t.Parallel()
	bus := inproc.New()
	defer bus.Close()
	sub, ch, held := holding(t, bus, commands, "held")
	other, _ := bridgetest.Subscribe(t, bus, commands)
	closed := closeInBackground(sub)
	bridgetest.ExpectNothing(t, other, 300*time.Millisecond)
	closed.waits(t)
	held.Ack()
	closed.returnsAfter(t, "the held message was acked")
	if _, ok := <-ch; ok {
		t.Error("the channel of a closed subscriber is still open")
	}
	if _, err := sub.Subscribe(t.Context(), commands.Topic); !errors.Is(err, bridge.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
	bridgetest.ExpectNothing(t, other, 200*time.Millisecond)
}

// Closing the bus ends a subscriber's Close that waits for a verdict: the
// held message is dropped with the bus.
func TestBusCloseEndsAWaitingClose(t *testing.T) {
	t.Parallel()
	bus := inproc.New()
	sub, ch, held := holding(t, bus, commands, "held")
	defer held.Ack()
	closed := closeInBackground(sub)
	time.Sleep(50 * time.Millisecond)
	closed.waits(t)
	_ = bus.Close()
	closed.returnsAfter(t, "the bus closed")
	if _, ok := <-ch; ok {
		t.Error("a message delivered after the bus closed")
	}
}

// Closing the bus ends its subscriptions at once, even while a handler
// holds a message (dropped with the queues). The subscription used to wait
// for that message's verdict for ever.
func TestBusCloseEndsSubscriptionsHoldingMessages(t *testing.T) {
	t.Parallel()
	bus := inproc.New()
	sub, ch, held := holding(t, bus, commands, "held")
	defer held.Ack()
	_ = bus.Close()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("a message delivered after the bus closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the subscription outlived its bus")
	}
	if err := sub.Close(); err != nil {
		t.Errorf("Close after the bus closed: %v", err)
	}
}

// Two engines on one gochannel:// bus are two instances of a service: one
// stopping while its handler runs (for less than DrainTimeout, respecting
// its context) finishes the handler, its Stop returns nil, and the other
// never gets the event. With a subscriber close bound shorter than the
// handler, the event went back to the queue while the handler ran, the
// other instance handled it too, and Stop failed.
func TestStopWhileHandlingIsNoDuplicate(t *testing.T) {
	t.Parallel()
	const work = 300 * time.Millisecond
	url := "gochannel://" + bridgetest.Unique("stop")
	ev := engine.NewEvent[string](bridgetest.Unique("svc") + ".happened")
	var handled atomic.Int32
	by := make(chan *engine.Engine, 2)
	start := func() *engine.Engine {
		eng, err := engine.New(engine.Config{Bridge: url, DrainTimeout: 10 * time.Second, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		svc := engine.NewService("consumer", "1")
		engine.Subscribe(svc, ev, func(ctx context.Context, _ string) error {
			handled.Add(1)
			by <- eng
			select {
			case <-time.After(work):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err := eng.Register(svc); err != nil {
			t.Fatal(err)
		}
		if err := eng.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = eng.Stop(context.Background()) })
		return eng
	}
	a, _ := start(), start()
	if err := ev.Emit(engine.WithEngine(t.Context(), a), "once"); err != nil {
		t.Fatal(err)
	}
	var handling *engine.Engine
	select {
	case handling = <-by:
	case <-time.After(5 * time.Second):
		t.Fatal("the event was not delivered")
	}
	if err := handling.Stop(context.Background()); err != nil {
		t.Errorf("Stop while the handler ran (shorter than DrainTimeout): %v", err)
	}
	time.Sleep(work) // time for a duplicate to show
	if n := handled.Load(); n != 1 {
		t.Errorf("the event was handled %d times, want once", n)
	}
}
