package engine

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/internal/envelope"
)

func memMsg(kind string) *message.Message {
	m := message.NewMessage(envelope.NewID(), []byte(`{}`))
	m.Metadata.Set(envelope.KeyKind, kind)
	return m
}

// The in-memory scheduler refuses a message past its limit, and takes one
// again once a place is free.
func TestMemSchedulerLimit(t *testing.T) {
	t.Parallel()
	s := newMemScheduler(2, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	at := time.Now().Add(time.Hour)
	first := memMsg(envelope.KindEvent)
	for _, m := range []*message.Message{first, memMsg(envelope.KindEvent)} {
		if err := s.Schedule(ctx, "t", m, at); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Schedule(ctx, "t", memMsg(envelope.KindEvent), at); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Schedule past the limit: %v, want ErrUnavailable", err)
	}
	if err := s.Schedule(ctx, "t", first, at); err == nil {
		t.Fatal("the same id scheduled twice")
	}
	if err := s.Cancel(ctx, first.UUID); err != nil {
		t.Fatal(err)
	}
	if err := s.Schedule(ctx, "t", memMsg(envelope.KindEvent), at); err != nil {
		t.Fatalf("Schedule after a Cancel freed a place: %v", err)
	}
}

// After random schedules, cancels and reschedules, the heap hands out
// exactly the messages left, in due order.
func TestMemSchedulerOrder(t *testing.T) {
	t.Parallel()
	s := newMemScheduler(maxMemScheduled, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	base := time.Now()
	want := map[string]time.Time{}
	var ids []string
	for range 5000 {
		switch op := rand.IntN(4); {
		case op < 2 || len(ids) == 0:
			m := memMsg(envelope.KindEvent)
			at := base.Add(time.Duration(rand.IntN(1e6)) * time.Millisecond)
			if err := s.Schedule(ctx, "t", m, at); err != nil {
				t.Fatal(err)
			}
			want[m.UUID] = at
			ids = append(ids, m.UUID)
		case op == 2:
			id := ids[rand.IntN(len(ids))]
			err := s.Cancel(ctx, id)
			if _, ok := want[id]; ok != (err == nil) {
				t.Fatalf("Cancel %s: %v (pending: %v)", id, err, ok)
			}
			delete(want, id)
		default:
			id := ids[rand.IntN(len(ids))]
			at := base.Add(time.Duration(rand.IntN(1e6)) * time.Millisecond)
			err := s.Reschedule(ctx, id, at)
			if _, ok := want[id]; ok != (err == nil) {
				t.Fatalf("Reschedule %s: %v (pending: %v)", id, err, ok)
			}
			if err == nil {
				want[id] = at
			}
		}
	}
	var last time.Time
	got := 0
	for {
		due, _ := s.takeDue(base.Add(time.Hour))
		if len(due) == 0 {
			break
		}
		for _, en := range due {
			if en.at.Before(last) || !en.at.Equal(want[en.id]) {
				t.Fatalf("%s due %v after %v, want %v", en.id, en.at, last, want[en.id])
			}
			last = en.at
			got++
		}
	}
	if got != len(want) {
		t.Errorf("handed out %d, want %d", got, len(want))
	}
}

// failingPublisher fails every publish with err.
type failingPublisher struct{ err error }

func (p failingPublisher) Publish(string, ...*message.Message) error { return p.err }
func (p failingPublisher) Close() error                              { return nil }

// A message whose publish fails is kept and due again after a backoff; an
// event nobody subscribes to is done with.
func TestMemSchedulerPublishFailure(t *testing.T) {
	t.Parallel()
	s := newMemScheduler(10, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	ev, cmd := memMsg(envelope.KindEvent), memMsg(envelope.KindCommand)
	for _, m := range []*message.Message{ev, cmd} {
		if err := s.Schedule(ctx, "t", m, time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	due, _ := s.takeDue(time.Now())
	for _, en := range due {
		s.publish(failingPublisher{bridge.ErrNoSubscriber}, en)
	}
	if _, ok := s.byID[ev.UUID]; ok {
		t.Error("an event with no subscriber was kept")
	}
	en, ok := s.byID[cmd.UUID]
	if !ok {
		t.Fatal("a command that could not be published was dropped")
	}
	if wait := time.Until(en.at); en.attempts != 1 || wait <= 0 || wait > memRetryFirst {
		t.Errorf("attempt %d due in %s, want attempt 1 due within %s", en.attempts, wait, memRetryFirst)
	}
	if err := s.Cancel(ctx, cmd.UUID); err != nil {
		t.Errorf("Cancel of a message waiting to be published again: %v", err)
	}
}

// A message the bridge refuses for what it is (too large, refused) is
// not retried: every attempt would fail the same way, for ever. It is
// dropped and logged at error level, as the outbox relay parks such a row.
func TestMemSchedulerDropsWhatCanNeverBePublished(t *testing.T) {
	t.Parallel()
	for _, perr := range []error{bridge.ErrTooLarge, bridge.ErrRefused} {
		var logs bytes.Buffer
		s := newMemScheduler(10, slog.New(slog.NewTextHandler(&logs, nil)))
		m := memMsg(envelope.KindCommand)
		if err := s.Schedule(context.Background(), "t", m, time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		due, _ := s.takeDue(time.Now())
		for _, en := range due {
			s.publish(failingPublisher{perr}, en)
		}
		if _, ok := s.byID[m.UUID]; ok || len(s.heap) != 0 {
			t.Errorf("%v: the message is kept to be retried", perr)
		}
		if !strings.Contains(logs.String(), "level=ERROR") {
			t.Errorf("%v: dropped without an error log:\n%s", perr, logs.String())
		}
	}
}

// Once Run has returned (Stop began), the in-memory scheduler publishes
// nothing more: a Schedule then (a handler finishing during the drain) is
// refused rather than accepted and lost, and Run says how many messages
// it leaves unpublished.
func TestMemSchedulerAfterRun(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	s := newMemScheduler(10, slog.New(slog.NewTextHandler(&logs, nil)))
	b := inproc.New()
	defer b.Close()
	if err := s.Schedule(context.Background(), "t", memMsg(envelope.KindEvent), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, b) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "pending=1") {
		t.Errorf("Run returned leaving 1 message unpublished without logging it; logs: %q", logs.String())
	}
	err := s.Schedule(context.Background(), "t", memMsg(envelope.KindEvent), time.Now())
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Schedule after Run returned = %v, want ErrUnavailable (it would never be published)", err)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use (a log's output).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
