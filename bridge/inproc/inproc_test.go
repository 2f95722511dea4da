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
