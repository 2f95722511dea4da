package inproc_test

import (
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

func TestBadURL(t *testing.T) {
	for _, u := range []string{"gochannel://?nack_delay=soon", "gochannel://?colour=blue"} {
		if _, err := bridge.Open(t.Context(), u); err == nil {
			t.Errorf("Open(%q) succeeded", u)
		}
	}
	_ = inproc.DefaultNackDelay
}

// A closing subscriber delivers nothing more, even to a worker that just
// settled a message while more are queued. (A worker used to pick between
// the next delivery and the stop at random.)
func TestClosingSubscriberTakesNothingMore(t *testing.T) {
	for round := range 20 {
		bus := inproc.New(inproc.Options{})
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
