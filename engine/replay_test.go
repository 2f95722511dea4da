package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/deadletter/pgstore"
	"github.com/switchboard-go/switchboard/deadletter/storetest"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/middleware"
	"github.com/switchboard-go/switchboard/migrations"
)

// The replay guarantees of package deadletter with a real handler failing
// again, on every Store: what deadletter/storetest (which imports no
// engine) cannot run.

// deadLetterStores runs test once per Store implementation: in memory and
// in PostgreSQL (a fresh schema, dropped when the test ends).
func deadLetterStores(t *testing.T, test func(t *testing.T, s deadletter.Store)) {
	t.Run("Memory", func(t *testing.T) { test(t, deadletter.NewMemory()) })
	t.Run("Postgres", func(t *testing.T) {
		db := testenv.PostgresDB(t)
		schema := testenv.Schema(t, db)
		if _, err := migrations.Up(t.Context(), db, migrations.Config{Schema: schema}); err != nil {
			t.Fatal(err)
		}
		s, err := pgstore.New(db, schema)
		if err != nil {
			t.Fatal(err)
		}
		test(t, s)
	})
}

// Replaying many records whose handler fails again at once: each must end
// back in the store, holding its newest failure.
func TestReplayedMessagesThatFailAgainAreKept(t *testing.T) {
	deadLetterStores(t, func(t *testing.T, s deadletter.Store) {
		const n = 200
		svc := uniqueName("refail")
		pub, _ := startRefailing(t, s, svc, n)
		for _, r := range storetest.ListAll(t, s, deadletter.Filter{Service: svc + ".v1"}) {
			if err := deadletter.Replay(context.Background(), s, pub, r.ID); err != nil {
				t.Fatalf("Replay: %v", err)
			}
		}
		recs := waitForDeadLetters(t, s, svc, n, "#2")
		if err := storetest.DeleteAll(context.Background(), s, recs); err != nil {
			t.Fatal(err)
		}
	})
}

// ReplayAll of records whose handler keeps failing replays each record
// once and stops.
func TestReplayAllReplaysEachRecordOnce(t *testing.T) {
	deadLetterStores(t, func(t *testing.T, s deadletter.Store) {
		const n = 100
		svc := uniqueName("replayall")
		pub, h := startRefailing(t, s, svc, n)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		got, err := deadletter.ReplayAll(ctx, s, pub, deadletter.Filter{Service: svc + ".v1", Limit: 7})
		if err != nil || got != (deadletter.ReplayCounts{Replayed: n}) {
			t.Fatalf("ReplayAll = %+v, %v; want %d replayed (once each), no error", got, err, n)
		}
		recs := waitForDeadLetters(t, s, svc, n, "#2")
		h.mu.Lock()
		for i := range n {
			if h.calls[i] != 2 {
				t.Errorf("job %d handled %d times, want 2 (the original and one replay)", i, h.calls[i])
			}
		}
		h.mu.Unlock()
		if err := storetest.DeleteAll(context.Background(), s, recs); err != nil {
			t.Fatal(err)
		}
	})
}

// refailing is a service whose handler fails permanently every time; it
// counts the calls per message (by payload Count) and names the call in
// the error, so a record shows which failure it holds.
type refailing struct {
	mu    sync.Mutex
	calls map[int]int
}

// startRefailing runs an engine on an in-process bus whose one service
// dead-letters into s every message it receives, emits n messages and
// waits until the n records are stored. It returns the bus's publisher and
// the handler.
func startRefailing(t *testing.T, s deadletter.Store, svc string, n int) (message.Publisher, *refailing) {
	t.Helper()
	ev := engine.NewEvent[EchoIn](svc + ".refail")
	h := &refailing{calls: map[int]int{}}
	service := engine.NewService(svc, "1")
	engine.Subscribe(service, ev, func(_ context.Context, j EchoIn) error {
		h.mu.Lock()
		h.calls[j.Count]++
		k := h.calls[j.Count]
		h.mu.Unlock()
		return middleware.Permanent(fmt.Errorf("failure #%d of job %d", k, j.Count))
	})
	bus := inproc.New()
	t.Cleanup(func() { _ = bus.Close() }) // after the engine's Stop
	e, _ := start(t, bus, engine.Config{
		Logger: slog.New(slog.DiscardHandler),
		Reliability: engine.Reliability{
			DeadLetters: s,
			Retry:       middleware.Retry{MaxAttempts: 1},
			Breaker:     middleware.BreakerPolicy{Disabled: true}, // every call fails: do not pause
		},
	}, service)
	for i := range n {
		if err := ev.Emit(engine.WithEngine(t.Context(), e), EchoIn{Count: i}); err != nil {
			t.Fatal(err)
		}
	}
	waitForDeadLetters(t, s, svc, n, "#1")
	return bus.Publisher(), h
}

// waitForDeadLetters waits until the store holds exactly n records of svc,
// each with a failure whose error contains marker.
func waitForDeadLetters(t *testing.T, s deadletter.Store, svc string, n int, marker string) []deadletter.Record {
	t.Helper()
	var recs []deadletter.Record
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		recs = storetest.ListAll(t, s, deadletter.Filter{Service: svc + ".v1"})
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
