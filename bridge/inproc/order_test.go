package inproc_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
)

// A member that stops while holding a message no handler took gives it back
// at the head of the group's queue: a Concurrency-1 subscription (an event
// subscription by default, in order) keeps its order across members.
func TestReleaseKeepsOrder(t *testing.T) {
	bus := inproc.New()
	defer bus.Close()
	spec := bridge.Spec{Topic: "t", Group: "g", Kind: bridge.Event, Concurrency: 1}
	first, err := bus.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Subscribe(context.Background(), "t"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"1", "2", "3", "4"} {
		if err := bus.Publisher().Publish("t", message.NewMessage(id, nil)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // "1" fetched, waiting for a reader that never comes
	// A second member keeps the group (and its queue) while the first closes.
	second, err := bus.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil { // releases "1"
		t.Fatal(err)
	}
	out, err := second.Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	var got []string
	for range 4 {
		select {
		case m := <-out:
			got = append(got, m.UUID)
			m.Ack()
		case <-time.After(2 * time.Second):
			t.Fatalf("got %v, then nothing", got)
		}
	}
	if got[0] != "1" {
		t.Fatalf("order after a release: %v, want [1 2 3 4]", got)
	}
}
