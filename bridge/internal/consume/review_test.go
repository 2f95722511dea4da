package consume_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge/internal/consume"
)

// Review: New's doc says open's context "ends when that subscription stops
// (Close, Abandon, ...)", and Abandon "returns at once". Subscribe holds
// s.mu while open runs, and markClosed needs s.mu to close s.stopping, so
// neither Close nor Abandon can end an open that waits for its context
// (MQTT's connect waits for the broker until it does; the engine subscribes
// with context.WithoutCancel).
func TestReviewCloseEndsAnOpenInProgress(t *testing.T) {
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

// Review: Delivery.Deadline says "a message no handler took by then is not
// handed out". A prefetched message whose lease ran out while it waited is
// still given to handle, whose select between `r.out <- m` and an already
// fired timer picks at random: with a reader waiting, about half the time
// the expired message goes to a handler (and its slot is then freed at
// once, so the handler runs beside the next message and its verdict is
// dropped).
func TestReviewExpiredPrefetchedMessageIsNotHandedOut(t *testing.T) {
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

// Review: Config.Prefetch says "no heartbeat before they are handed out",
// but dispatch heartbeats the messages that wait (commit 68edec3 says so
// too): the doc comment lies. This test documents the behaviour.
func TestReviewPrefetchedMessagesAreHeartbeated(t *testing.T) {
	q := newQueue("a", "b")
	_, out := subscribe(t, consume.Config{Spec: spec(1), Prefetch: 1, HeartbeatEvery: 10 * time.Millisecond}, q)
	a := receive(t, out)
	time.Sleep(100 * time.Millisecond)
	var beatsB int
	q.snapshot(func(q *queue) { beatsB = q.beats["b"] })
	a.Ack()
	receive(t, out).Ack()
	if beatsB == 0 {
		t.Fatal("b was not heartbeated while waiting")
	}
	t.Logf("b, prefetched, heartbeated %d times before it was handed out (Config.Prefetch's doc says it is not)", beatsB)
}
