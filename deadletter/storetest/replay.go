package storetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/middleware"
)

// refailingPublisher publishes, then writes a new failure of the message
// to the store before returning: the replayed message failed again before
// Replay's delete ran, the window the delete must not close over.
type refailingPublisher struct {
	message.Publisher
	s   deadletter.Store
	rec deadletter.Record
}

func (p refailingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	again := p.rec
	again.Error, again.LastFailedAt = "failed again after the replay", time.Now().UTC().Truncate(time.Millisecond)
	_, err := p.s.Put(context.Background(), again)
	return err
}

// replayKeepsAFailureWrittenBeforeTheDelete checks the interleaving that
// lost re-failures: publish, new failure stored, then Replay's delete.
func replayKeepsAFailureWrittenBeforeTheDelete(t *testing.T, s deadletter.Store, rec deadletter.Record) {
	ctx := context.Background()
	id, err := s.Put(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := deadletter.Replay(ctx, s, refailingPublisher{Publisher: discard{}, s: s, rec: rec}, id); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	recs, _, err := s.List(ctx, deadletter.Filter{Service: rec.Service, Topic: rec.Topic})
	if err != nil {
		t.Fatal(err)
	}
	var kept []deadletter.Record
	for _, r := range recs {
		if r.MessageID == rec.MessageID {
			kept = append(kept, r)
		}
	}
	if len(kept) != 1 || kept[0].Error != "failed again after the replay" {
		t.Fatalf("after a failure stored between publish and delete: %d records %+v; want the new failure kept", len(kept), kept)
	}
	_ = deleteAll(ctx, s, kept)
}

// discard is a publisher that accepts everything.
type discard struct{}

func (discard) Publish(string, ...*message.Message) error { return nil }
func (discard) Close() error                              { return nil }

// refailing is a service whose handler fails permanently every time; it
// counts the calls per message (by payload N) and names the call in the
// error, so a record shows which failure it holds.
type refailing struct {
	mu    sync.Mutex
	calls map[int]int
}

type job struct {
	N int `json:"n"`
}

// startRefailing runs an engine on an in-process bus whose one service
// dead-letters into s every message it receives, emits n messages and waits
// until the n records are stored. It returns the bus's publisher, the
// service's name and the handler.
func startRefailing(t *testing.T, s deadletter.Store, svc string, n int) (message.Publisher, *refailing) {
	t.Helper()
	ev := engine.NewEvent[job](svc + ".refail")
	h := &refailing{calls: map[int]int{}}
	service := engine.NewService(svc, "1")
	engine.Subscribe(service, ev, func(_ context.Context, j job) error {
		h.mu.Lock()
		h.calls[j.N]++
		k := h.calls[j.N]
		h.mu.Unlock()
		return middleware.Permanent(fmt.Errorf("failure #%d of job %d", k, j.N))
	})
	bus := inproc.New()
	e, err := engine.New(engine.Config{
		SharedBridge: bus,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Reliability: engine.Reliability{
			DeadLetters: s,
			Retry:       middleware.Retry{MaxAttempts: 1},
			Breaker:     middleware.BreakerPolicy{Disabled: true}, // every call fails: do not pause
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Register(service); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(context.Background()); _ = bus.Close() })
	for i := range n {
		if err := ev.Emit(engine.WithEngine(t.Context(), e), job{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, s, svc, n, "#1")
	return bus.Publisher(), h
}

// waitFor waits until the store holds exactly n records of svc, each with
// a failure whose error contains marker.
func waitFor(t *testing.T, s deadletter.Store, svc string, n int, marker string) []deadletter.Record {
	t.Helper()
	var recs []deadletter.Record
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		recs = all(t, s, deadletter.Filter{Service: svc + ".v1"})
		ok := len(recs) == n
		for _, r := range recs {
			ok = ok && strings.Contains(r.Error, marker)
		}
		if ok {
			return recs
		}
		if time.Now().After(deadline) {
			with := 0
			for _, r := range recs {
				if strings.Contains(r.Error, marker) {
					with++
				}
			}
			t.Fatalf("%d records of %s, %d of them with %q; want %d, every one with it", len(recs), svc, with, marker, n)
		}
	}
}

// all lists every record matching f.
func all(t *testing.T, s deadletter.Store, f deadletter.Filter) []deadletter.Record {
	t.Helper()
	var out []deadletter.Record
	f.Limit = 500
	for range 1000 {
		page, next, err := s.List(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page...)
		if next == "" {
			return out
		}
		f.After = next
	}
	t.Fatal("List does not stop paging")
	return nil
}

func deleteAll(ctx context.Context, s deadletter.Store, recs []deadletter.Record) error {
	var errs []error
	for _, r := range recs {
		if err := s.Delete(ctx, r.ID, r.Version); err != nil && !errors.Is(err, deadletter.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// replayedMessagesThatFailAgainAreKept replays many records whose handler
// fails again at once: each must end back in the store, holding its newest
// failure.
func replayedMessagesThatFailAgainAreKept(t *testing.T, s deadletter.Store, svc string) {
	const n = 200
	pub, _ := startRefailing(t, s, svc, n)
	for _, r := range all(t, s, deadletter.Filter{Service: svc + ".v1"}) {
		if err := deadletter.Replay(context.Background(), s, pub, r.ID); err != nil {
			t.Fatalf("Replay: %v", err)
		}
	}
	recs := waitFor(t, s, svc, n, "#2")
	if err := deleteAll(context.Background(), s, recs); err != nil {
		t.Fatal(err)
	}
}

// replayAllEnds replays, with ReplayAll, records whose handler keeps
// failing: it must replay each record once and stop.
func replayAllEnds(t *testing.T, s deadletter.Store, svc string) {
	const n = 100
	pub, h := startRefailing(t, s, svc, n)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	got, err := deadletter.ReplayAll(ctx, s, pub, deadletter.Filter{Service: svc + ".v1", Limit: 7})
	if err != nil || got != (deadletter.ReplayCounts{Replayed: n}) {
		t.Fatalf("ReplayAll = %+v, %v; want %d replayed (once each), no error", got, err, n)
	}
	recs := waitFor(t, s, svc, n, "#2")
	h.mu.Lock()
	for i := range n {
		if h.calls[i] != 2 {
			t.Errorf("job %d handled %d times, want 2 (the original and one replay)", i, h.calls[i])
		}
	}
	h.mu.Unlock()
	if err := deleteAll(context.Background(), s, recs); err != nil {
		t.Fatal(err)
	}
}

var errNoRoute = errors.New("no route to this topic")

// scriptedPublisher fails the publishes to failTopic and, when it publishes
// message trigger, deletes the record victim (someone else's delete).
type scriptedPublisher struct {
	discard
	s         deadletter.Store
	failTopic string
	trigger   string
	victim    deadletter.Record
}

func (p scriptedPublisher) Publish(topic string, msgs ...*message.Message) error {
	if topic == p.failTopic {
		return errNoRoute
	}
	for _, m := range msgs {
		if m.UUID == p.trigger {
			return p.s.Delete(context.Background(), p.victim.ID, p.victim.Version)
		}
	}
	return nil
}

// replayAllCounts checks ReplayAll's counts: one replayed, one whose
// publish fails (kept, and the others still replayed), one gone before its
// turn.
func replayAllCounts(t *testing.T, s deadletter.Store, recs [3]deadletter.Record) {
	ctx := context.Background()
	recs[1].Topic += ".unrouted"
	for i := range recs {
		id, err := s.Put(ctx, recs[i])
		if err != nil {
			t.Fatal(err)
		}
		recs[i].ID, recs[i].Version = id, 1
	}
	pub := scriptedPublisher{s: s, failTopic: recs[1].Topic, trigger: recs[0].MessageID, victim: recs[2]}
	got, err := deadletter.ReplayAll(ctx, s, pub, deadletter.Filter{Service: recs[0].Service})
	if want := (deadletter.ReplayCounts{Replayed: 1, Failed: 1, Gone: 1}); got != want || !errors.Is(err, errNoRoute) {
		t.Errorf("ReplayAll = %+v, %v; want %+v and the publish error", got, err, want)
	}
	left := all(t, s, deadletter.Filter{Service: recs[0].Service})
	if len(left) != 1 || left[0].ID != recs[1].ID {
		t.Errorf("left %+v, want the record whose publish failed", left)
	}
	if err := deleteAll(ctx, s, left); err != nil {
		t.Fatal(err)
	}
}
