package inproc_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/bridge/inproc"
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
		if !errors.Is(err, bridge.ErrBadURL) || !strings.Contains(err.Error(), `"`+name+`"`) {
			t.Errorf("Open(%q): %v, want ErrBadURL naming %s", u, err, name)
		}
	}
}

// A message nacked without a delay of its own comes back after
// bridge.DefaultNackDelay, not at once; one that asks for a delay gets it.
func TestNackDelay(t *testing.T) {
	bus := inproc.New()
	t.Cleanup(func() { _ = bus.Close() })
	spec := bridge.Spec{Topic: "t", Group: "g", Kind: bridge.Command, Concurrency: 1}
	ch, _ := bridgetest.Subscribe(t, bus, spec)
	bridgetest.Publish(t, bus, spec.Topic, "x")

	first := bridgetest.Receive(t, ch, 5*time.Second)
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

// A closing subscriber delivers nothing more, even to a worker that just
// settled a message while more are queued. (A worker used to pick between
// the next delivery and the stop at random.)
func TestClosingSubscriberTakesNothingMore(t *testing.T) {
	for round := range 20 {
		bus := inproc.New()
		spec := bridge.Spec{Topic: "t", Group: "g", Kind: bridge.Command, Concurrency: 1}
		sub, err := bus.Subscriber(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := sub.Subscribe(t.Context(), spec.Topic)
		if err != nil {
			t.Fatal(err)
		}
		bridgetest.Publish(t, bus, spec.Topic, "first", "second")
		first := <-ch
		closed := make(chan struct{})
		go func() { _ = sub.Close(); close(closed) }()
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

// A handler that never settles its message cannot hold Close for ever:
// past CloseTimeout, Close puts the message back in its group's queue and
// returns ErrUnsettled naming it; a verdict given later changes nothing.
// (Close used to wait for the verdict without a bound.)
func TestCloseIsBoundedByCloseTimeout(t *testing.T) {
	const bound = 100 * time.Millisecond
	bus := inproc.NewWithCloseTimeout(bound)
	defer bus.Close()
	spec := bridge.Spec{Topic: "t", Group: "g", Kind: bridge.Command, Concurrency: 1}
	sub, err := bus.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(t.Context(), spec.Topic)
	if err != nil {
		t.Fatal(err)
	}
	bridgetest.Publish(t, bus, spec.Topic, "held")
	held := bridgetest.Receive(t, ch, 5*time.Second) // and never settled
	began := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- sub.Close() }()
	select {
	case err := <-closed:
		if took := time.Since(began); took < bound {
			t.Errorf("Close returned after %s, before its bound %s", took, bound)
		}
		if !errors.Is(err, inproc.ErrUnsettled) || !strings.Contains(err.Error(), held.UUID) {
			t.Errorf("Close = %v, want ErrUnsettled naming %s", err, held.UUID)
		}
	case <-time.After(5 * time.Second):
		held.Ack() // let the test end
		t.Fatal("Close still waits, 5 s after its bound, for a message never settled")
	}
	if _, ok := <-ch; ok {
		t.Error("the channel of a closed subscriber is still open")
	}
	if _, err := sub.Subscribe(t.Context(), spec.Topic); !errors.Is(err, bridge.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
	// The message is back in the group's queue, for the next member.
	again, _ := bridgetest.Subscribe(t, bus, spec)
	m := bridgetest.Receive(t, again, 5*time.Second)
	if m.UUID != held.UUID || m.Metadata.Get(bridge.DeliveryKey) != "2" {
		t.Errorf("next member got %s (delivery %s), want %s, delivery 2", m.UUID, m.Metadata.Get(bridge.DeliveryKey), held.UUID)
	}
	held.Nack() // too late: ignored
	m.Ack()
	bridgetest.ExpectNothing(t, again, 200*time.Millisecond)
}

// Closing the bus ends its subscriptions at once, even while a handler
// holds a message (dropped with the queues). The subscription used to wait
// for that message's verdict for ever.
func TestBusCloseEndsSubscriptionsHoldingMessages(t *testing.T) {
	bus := inproc.New()
	spec := bridge.Spec{Topic: "t", Group: "g", Kind: bridge.Command, Concurrency: 1}
	sub, err := bus.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(t.Context(), spec.Topic)
	if err != nil {
		t.Fatal(err)
	}
	bridgetest.Publish(t, bus, spec.Topic, "held")
	held := bridgetest.Receive(t, ch, 5*time.Second)
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
