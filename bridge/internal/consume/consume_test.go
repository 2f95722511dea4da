package consume_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/consume"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

// queue is an in-memory consume.Source recording every call.
type queue struct {
	mu       sync.Mutex
	msgs     []string
	fetchNs  []int
	acks     [][]string
	nacks    map[string]time.Duration
	released []string
	closed   bool
	fails    int           // Fetch calls left that fail
	ackGate  chan struct{} // when set, Ack waits for it
	beats    map[string]int
	wake     chan struct{}
}

func newQueue(msgs ...string) *queue {
	return &queue{msgs: msgs, nacks: map[string]time.Duration{}, beats: map[string]int{}, wake: make(chan struct{}, 1)}
}

func (q *queue) add(ids ...string) {
	q.mu.Lock()
	q.msgs = append(q.msgs, ids...)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) Fetch(ctx context.Context, n int, deliver func(consume.Delivery)) error {
	q.mu.Lock()
	q.fetchNs = append(q.fetchNs, n)
	if q.fails > 0 {
		q.fails--
		q.mu.Unlock()
		return errors.New("broker says no")
	}
	q.mu.Unlock()
	for {
		q.mu.Lock()
		k := min(n, len(q.msgs))
		got := q.msgs[:k:k]
		q.msgs = q.msgs[k:]
		q.mu.Unlock()
		if k > 0 {
			for i, id := range got {
				deliver(consume.Delivery{Msg: message.NewMessage(id, nil), Count: i + 1, Ref: id})
			}
			return nil
		}
		select {
		case <-q.wake:
		case <-ctx.Done():
			return nil
		case <-time.After(50 * time.Millisecond):
			return nil
		}
	}
}

func ids(ds []consume.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Ref.(string)
	}
	return out
}

func (q *queue) Ack(_ context.Context, ds []consume.Delivery) error {
	if q.ackGate != nil {
		<-q.ackGate
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.acks = append(q.acks, ids(ds))
	return nil
}

func (q *queue) Nack(_ context.Context, d consume.Delivery, delay time.Duration) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.nacks[d.Ref.(string)] = delay
	return nil
}

func (q *queue) Release(_ context.Context, ds []consume.Delivery) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.released = append(q.released, ids(ds)...)
	return nil
}

func (q *queue) Heartbeat(ds []consume.Delivery) []time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, d := range ds {
		q.beats[d.Ref.(string)]++
	}
	return make([]time.Time, len(ds))
}

func (q *queue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	return nil
}

func (q *queue) snapshot(f func(q *queue)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	f(q)
}

func spec(concurrency int) bridge.Spec {
	return bridge.Spec{Topic: "t", Group: "g", Kind: bridge.Command, Concurrency: concurrency}
}

func subscribe(t *testing.T, cfg consume.Config, q *queue) (*consume.Subscriber, <-chan *message.Message) {
	t.Helper()
	if cfg.Backend == "" {
		cfg.Backend = "test"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := consume.New(cfg, func(context.Context) (consume.Source, error) { return q, nil })
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Subscribe(t.Context(), "t")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Abandon(); _ = s.Close() })
	return s, out
}

func receive(t *testing.T, out <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m := <-out:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
		return nil
	}
}

func nothingWithin(t *testing.T, out <-chan *message.Message, d time.Duration) {
	t.Helper()
	select {
	case m := <-out:
		t.Fatalf("got %s, want nothing while every slot is taken", m.UUID)
	case <-time.After(d):
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A backlog is fetched in one request per free slots, never more in
// flight than Concurrency, and each message carries its delivery count.
func TestFetchesAsManyAsFreeSlots(t *testing.T) {
	t.Parallel()
	q := newQueue("a", "b", "c", "d", "e", "f")
	_, out := subscribe(t, consume.Config{Spec: spec(4)}, q)
	var held []*message.Message
	for range 4 {
		held = append(held, receive(t, out))
	}
	nothingWithin(t, out, 100*time.Millisecond)
	want := map[string]string{"a": "1", "b": "2", "c": "3", "d": "4"} // the source's Count
	for _, m := range held {
		if got := m.Metadata.Get(bridge.DeliveryKey); got != want[m.UUID] {
			t.Errorf("%s: DeliveryKey = %q, want %s", m.UUID, got, want[m.UUID])
		}
	}
	held[0].Ack()
	held[1].Ack()
	m5, m6 := receive(t, out), receive(t, out)
	q.snapshot(func(q *queue) {
		if q.fetchNs[0] != 4 {
			t.Errorf("first fetch asked for %d, want 4 (every slot free)", q.fetchNs[0])
		}
	})
	for _, m := range append(held[2:], m5, m6) {
		m.Ack()
	}
	eventually(t, "six acks", func() bool {
		n := 0
		q.snapshot(func(q *queue) {
			for _, b := range q.acks {
				n += len(b)
			}
		})
		return n == 6
	})
}

// Acks that arrive while one Ack call runs go together in the next call.
func TestAcksAreBatched(t *testing.T) {
	t.Parallel()
	q := newQueue("a", "b", "c", "d", "e")
	q.ackGate = make(chan struct{})
	_, out := subscribe(t, consume.Config{Spec: spec(5)}, q)
	var ms []*message.Message
	for range 5 {
		ms = append(ms, receive(t, out))
	}
	ms[0].Ack() // its Ack call blocks on the gate
	time.Sleep(50 * time.Millisecond)
	for _, m := range ms[1:] {
		m.Ack()
	}
	time.Sleep(50 * time.Millisecond)
	close(q.ackGate)
	eventually(t, "two ack calls", func() bool {
		var n int
		q.snapshot(func(q *queue) { n = len(q.acks) })
		return n == 2
	})
	q.snapshot(func(q *queue) {
		if len(q.acks[0]) != 1 || len(q.acks[1]) != 4 {
			t.Errorf("ack batches %v, want [a] then the other four in one call", q.acks)
		}
	})
}

// A nack passes the delay the message asks for, or bridge.DefaultNackDelay.
func TestNackPassesTheDelay(t *testing.T) {
	t.Parallel()
	q := newQueue("a", "b")
	_, out := subscribe(t, consume.Config{Spec: spec(2)}, q)
	a, b := receive(t, out), receive(t, out)
	if a.UUID != "a" {
		a, b = b, a
	}
	a.Metadata.Set(bridge.NackDelayKey, "250ms")
	a.Nack()
	b.Nack()
	eventually(t, "two nacks", func() bool {
		var n int
		q.snapshot(func(q *queue) { n = len(q.nacks) })
		return n == 2
	})
	q.snapshot(func(q *queue) {
		if q.nacks["a"] != 250*time.Millisecond || q.nacks["b"] != bridge.DefaultNackDelay {
			t.Errorf("nack delays %v, want a 250ms, b %s", q.nacks, bridge.DefaultNackDelay)
		}
	})
}

// Close waits for the verdict of a message a handler holds, acks it, and
// gives back at once what the source delivered after the stop.
func TestCloseWaitsForVerdictsAndReleasesTheRest(t *testing.T) {
	t.Parallel()
	q := newQueue("a")
	s, out := subscribe(t, consume.Config{Spec: spec(2)}, q)
	a := receive(t, out)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a handler held a message", err)
	case <-time.After(100 * time.Millisecond):
	}
	q.add("late") // fetched (if at all) after the stop: released, not handed out
	a.Ack()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for m := range out {
		t.Errorf("got %s after Close", m.UUID)
	}
	q.snapshot(func(q *queue) {
		if len(q.acks) != 1 || q.acks[0][0] != "a" || !q.closed {
			t.Errorf("acks %v, source closed %v: want [[a]] and closed", q.acks, q.closed)
		}
	})
	if _, err := s.Subscribe(t.Context(), "t"); !errors.Is(err, bridge.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
}

// A handler that never settles holds Close for CloseWait only; its message
// is then neither acked nor nacked (the broker redelivers it).
func TestCloseWaitBoundsClose(t *testing.T) {
	t.Parallel()
	q := newQueue("a")
	s, out := subscribe(t, consume.Config{Spec: spec(1), CloseWait: 100 * time.Millisecond}, q)
	receive(t, out)
	start := time.Now()
	err := s.Close()
	if err == nil || !strings.Contains(err.Error(), "still held") {
		t.Fatalf("Close: %v, want an error saying messages are still held", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %s, want about CloseWait", d)
	}
	q.snapshot(func(q *queue) {
		if len(q.acks)+len(q.nacks) != 0 {
			t.Errorf("abandoned message settled: acks %v nacks %v", q.acks, q.nacks)
		}
	})
}

// A held message gets heartbeats while its handler runs.
func TestHeartbeatsWhileHeld(t *testing.T) {
	t.Parallel()
	q := newQueue("a")
	_, out := subscribe(t, consume.Config{Spec: spec(1), HeartbeatEvery: 20 * time.Millisecond}, q)
	a := receive(t, out)
	eventually(t, "three heartbeats", func() bool {
		var n int
		q.snapshot(func(q *queue) { n = q.beats["a"] })
		return n >= 3
	})
	a.Ack()
}

// A failing Fetch is logged once as a warning, then its recovery, and
// retried after a backoff.
func TestFetchFailuresAreLoggedOnceAndRetried(t *testing.T) {
	t.Parallel()
	q := newQueue("a")
	q.fails = 3
	var buf testenv.LogBuffer
	_, out := subscribe(t, consume.Config{Spec: spec(1), Logger: slog.New(slog.NewTextHandler(&buf, nil))}, q)
	receive(t, out).Ack()
	eventually(t, "the recovery logged", func() bool { return strings.Contains(buf.String(), "works again") })
	log := buf.String()
	if n := strings.Count(log, "level=WARN"); n != 1 || !strings.Contains(log, "broker says no") {
		t.Errorf("want one warning with the error, got:\n%s", log)
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := consume.New(consume.Config{CloseWait: -1, HeartbeatEvery: -1, MaxAckBatch: -1}, nil)
	for _, want := range []string{"empty topic", "empty group", "Concurrency is 0", "empty Backend", "CloseWait", "HeartbeatEvery", "MaxAckBatch"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want it to mention %q", err, want)
		}
	}
}

func TestSubscribeRefusesAnotherTopic(t *testing.T) {
	t.Parallel()
	s, err := consume.New(consume.Config{Spec: spec(1), Backend: "test"}, func(context.Context) (consume.Source, error) { return newQueue(), nil })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Subscribe(t.Context(), "other"); err == nil {
		t.Fatal("Subscribe to another topic succeeded")
	}
	s2, err := consume.New(consume.Config{Spec: spec(1), Backend: "test"}, func(context.Context) (consume.Source, error) {
		return nil, fmt.Errorf("declaring: %w", bridge.ErrUnreachable)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.Subscribe(t.Context(), "t"); !errors.Is(err, bridge.ErrUnreachable) {
		t.Fatalf("Subscribe whose source cannot open: %v, want the open error", err)
	}
}

// The context open gets ends when the subscription stops, even while every
// slot is busy and Fetch is not running: a prefetching source gives back
// what it holds at once, not after the last verdict.
func TestOpenContextEndsWhenStopping(t *testing.T) {
	t.Parallel()
	q := newQueue("a")
	var openCtx context.Context
	s, err := consume.New(consume.Config{Spec: spec(1), Backend: "test"}, func(ctx context.Context) (consume.Source, error) {
		openCtx = ctx
		return q, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Subscribe(t.Context(), "t")
	if err != nil {
		t.Fatal(err)
	}
	a := receive(t, out) // the only slot is busy
	if openCtx.Err() != nil {
		t.Fatal("open's context ended before the stop")
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-openCtx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("open's context did not end when Close began")
	}
	a.Ack()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

// Past its Deadline a held message frees its slot unsettled, and a late
// verdict changes nothing.
func TestDeadlineFreesTheSlot(t *testing.T) {
	t.Parallel()
	q := &firstDeadlineQueue{queue: newQueue("a", "b"), deadline: time.Now().Add(150 * time.Millisecond)}
	s, err := consume.New(consume.Config{Spec: spec(1), Backend: "test", Logger: slog.New(slog.DiscardHandler)}, func(context.Context) (consume.Source, error) { return q, nil })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Subscribe(t.Context(), "t")
	if err != nil {
		t.Fatal(err)
	}
	a := receive(t, out) // held past its deadline: the only slot frees itself
	b := receive(t, out)
	a.Ack()
	b.Ack()
	eventually(t, "b acked", func() bool {
		var n int
		q.snapshot(func(q *queue) { n = len(q.acks) })
		return n == 1
	})
	time.Sleep(50 * time.Millisecond)
	q.snapshot(func(q *queue) {
		if len(q.acks) != 1 || len(q.acks[0]) != 1 || q.acks[0][0] != b.UUID {
			t.Errorf("acks %v, want only %s (%s's deadline had passed)", q.acks, b.UUID, a.UUID)
		}
	})
}

// firstDeadlineQueue gives the first message it delivers a deadline.
type firstDeadlineQueue struct {
	*queue
	deadline time.Time
	once     sync.Once
}

func (q *firstDeadlineQueue) Fetch(ctx context.Context, n int, deliver func(consume.Delivery)) error {
	return q.queue.Fetch(ctx, n, func(d consume.Delivery) {
		q.once.Do(func() { d.Deadline = q.deadline })
		deliver(d)
	})
}

// With Prefetch, a Concurrency-1 subscription fetches ahead but hands out
// one message at a time, in order; what it fetched ahead is released when
// it closes.
func TestPrefetchKeepsOrderAndReleasesOnClose(t *testing.T) {
	t.Parallel()
	q := newQueue("a", "b", "c", "d", "e", "f")
	s, out := subscribe(t, consume.Config{Spec: spec(1), Prefetch: 2}, q)
	for _, want := range []string{"a", "b", "c"} {
		m := receive(t, out)
		if m.UUID != want {
			t.Fatalf("got %s, want %s: order lost", m.UUID, want)
		}
		nothingWithin(t, out, 30*time.Millisecond) // one at a time
		m.Ack()
	}
	q.snapshot(func(q *queue) {
		if q.fetchNs[0] != 3 {
			t.Errorf("first fetch asked for %d, want 3 (Concurrency 1 + Prefetch 2)", q.fetchNs[0])
		}
	})
	held := receive(t, out) // d; e and f are fetched ahead
	eventually(t, "e and f fetched ahead", func() bool {
		var left int
		q.snapshot(func(q *queue) { left = len(q.msgs) })
		return left == 0
	})
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	eventually(t, "e and f released at the stop, before d's verdict", func() bool {
		var n int
		q.snapshot(func(q *queue) { n = len(q.released) })
		return n == 2
	})
	held.Ack()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

// Messages fetched ahead get heartbeats while they wait for a handler.
func TestHeartbeatsWhileWaiting(t *testing.T) {
	t.Parallel()
	q := newQueue("a", "b", "c")
	_, out := subscribe(t, consume.Config{Spec: spec(1), Prefetch: 2, HeartbeatEvery: 20 * time.Millisecond}, q)
	a := receive(t, out)
	eventually(t, "b and c, waiting, get heartbeats", func() bool {
		var nb, nc int
		q.snapshot(func(q *queue) { nb, nc = q.beats["b"], q.beats["c"] })
		return nb >= 2 && nc >= 2
	})
	a.Ack()
	receive(t, out).Ack()
	receive(t, out).Ack()
}
