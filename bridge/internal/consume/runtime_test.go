package consume_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/consume"
)

// Close and Abandon end a Subscribe whose open is still waiting (for a
// broker that does not answer; the engine subscribes with a context that
// never ends): open's context ends with the stop, and neither waits for
// the open to give up first.
func TestCloseEndsAnOpenInProgress(t *testing.T) {
	opening := make(chan struct{})
	s, err := consume.New(consume.Config{Spec: spec(1), Backend: "test", Logger: slog.New(slog.DiscardHandler)},
		func(ctx context.Context) (consume.Source, error) {
			close(opening)
			<-ctx.Done() // a broker that does not answer
			return nil, ctx.Err()
		})
	if err != nil {
		t.Fatal(err)
	}
	subscribed := make(chan struct{})
	go func() {
		defer close(subscribed)
		_, _ = s.Subscribe(context.Background(), "t")
	}()
	<-opening
	abandoned := make(chan struct{})
	go func() { s.Abandon(); close(abandoned) }()
	select {
	case <-abandoned:
	case <-time.After(2 * time.Second):
		t.Error("Abandon did not return within 2s while Subscribe's open waits for its context")
	}
	closed := make(chan struct{})
	go func() { _ = s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not return within 2s while Subscribe's open waits for its context (goroutines left blocked)")
	}
	<-subscribed
}

// deadlineQueue delivers its messages, each with the deadline set for it.
type deadlineQueue struct {
	*queue
	deadlines map[string]time.Time
}

func (q deadlineQueue) Fetch(ctx context.Context, n int, deliver func(consume.Delivery)) error {
	return q.queue.Fetch(ctx, n, func(d consume.Delivery) {
		d.Deadline = q.deadlines[d.Ref.(string)]
		deliver(d)
	})
}

// A message fetched ahead whose Deadline passed while it waited is not
// handed to a handler: the broker has made it visible to other members.
func TestExpiredPrefetchedMessageIsNotHandedOut(t *testing.T) {
	handedOut := 0
	for range 20 {
		q := newQueue("a", "b")
		dq := deadlineQueue{q, map[string]time.Time{"b": time.Now().Add(50 * time.Millisecond)}}
		s, err := consume.New(consume.Config{Spec: spec(1), Backend: "test", Logger: slog.New(slog.DiscardHandler), Prefetch: 1},
			func(context.Context) (consume.Source, error) { return dq, nil })
		if err != nil {
			t.Fatal(err)
		}
		out, err := s.Subscribe(t.Context(), "t")
		if err != nil {
			t.Fatal(err)
		}
		a := receive(t, out)
		time.Sleep(100 * time.Millisecond) // b's lease runs out while it waits
		a.Ack()
		select {
		case m := <-out:
			handedOut++
			m.Ack()
		case <-time.After(200 * time.Millisecond):
		}
		s.Abandon()
		_ = s.Close()
	}
	if handedOut > 0 {
		t.Errorf("a message whose deadline had passed before a slot freed was handed out %d times in 20 runs, want 0", handedOut)
	}
}

// countlessQueue delivers with no delivery count (Count 0) and a
// DeliveryKey a publisher forged into the message.
type countlessQueue struct{ *queue }

func (q countlessQueue) Fetch(ctx context.Context, n int, deliver func(consume.Delivery)) error {
	return q.queue.Fetch(ctx, n, func(d consume.Delivery) {
		d.Count = 0
		d.Msg.Metadata.Set(bridge.DeliveryKey, "1")
		deliver(d)
	})
}

// A delivery count the backend cannot tell is absent, never one the
// publisher wrote: a forged "1" on every delivery would keep a failing
// message below the engine's MaxDeliveries for ever.
func TestForgedDeliveryCountIsRemoved(t *testing.T) {
	q := countlessQueue{newQueue("a")}
	s, err := consume.New(consume.Config{Spec: spec(1), Backend: "test", Logger: slog.New(slog.DiscardHandler)},
		func(context.Context) (consume.Source, error) { return q, nil })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Subscribe(t.Context(), "t")
	if err != nil {
		t.Fatal(err)
	}
	m := receive(t, out)
	m.Ack()
	if v, ok := m.Metadata[bridge.DeliveryKey]; ok {
		t.Fatalf("DeliveryKey = %q on a delivery without a count, want none", v)
	}
}

// forgedDelayQueue delivers messages whose publisher wrote a nack delay.
type forgedDelayQueue struct{ *queue }

func (q forgedDelayQueue) Fetch(ctx context.Context, n int, deliver func(consume.Delivery)) error {
	return q.queue.Fetch(ctx, n, func(d consume.Delivery) {
		d.Msg.Metadata.Set(bridge.NackDelayKey, "0s")
		deliver(d)
	})
}

// A nack delay written by the publisher is not honoured: a handler that
// nacks without a delay of its own waits bridge.DefaultNackDelay, not the
// forged "0s" that would redeliver a failing message in a hot loop.
func TestForgedNackDelayIsRemoved(t *testing.T) {
	q := forgedDelayQueue{newQueue("a")}
	s, err := consume.New(consume.Config{Spec: spec(1), Backend: "test", Logger: slog.New(slog.DiscardHandler)},
		func(context.Context) (consume.Source, error) { return q, nil })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Subscribe(t.Context(), "t")
	if err != nil {
		t.Fatal(err)
	}
	receive(t, out).Nack()
	eventually(t, "the nack", func() bool {
		var n int
		q.snapshot(func(q *queue) { n = len(q.nacks) })
		return n == 1
	})
	q.snapshot(func(q *queue) {
		if q.nacks["a"] != bridge.DefaultNackDelay {
			t.Errorf("nack delay %s, want %s (the forged 0s ignored)", q.nacks["a"], bridge.DefaultNackDelay)
		}
	})
}
