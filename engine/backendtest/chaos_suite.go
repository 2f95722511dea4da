package backendtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/engine"
)

// ChaosEvent is the payload of the chaos run.
type ChaosEvent struct {
	N      int  `json:"n"`      // the event's number in the run
	Poison bool `json:"poison"` // the handler fails it for good: it must be dead-lettered
}

// RunChaos sends n events through a handler that fails transiently 20 % of
// the time and permanently for 1 % of the payloads (the poison ones), with
// one outage of the backend in the middle when the harness has one. Every
// non-poison event's effect must be recorded and every poison event must be
// in the dead-letter store with the right reason: none missing.
func RunChaos(t *testing.T, h bridgetest.Harness, n int) {
	name := bridgetest.Unique("chaos")
	ev := engine.NewEvent[ChaosEvent](name + ".tick")
	var effects sync.Map    // N → count
	var poisonSeen sync.Map // N → deliveries of a poison event
	var transient, handled atomic.Int64
	svc := engine.NewService(name, "1")
	engine.Subscribe(svc, ev, func(ctx context.Context, e ChaosEvent) error {
		handled.Add(1)
		if e.Poison {
			v, _ := poisonSeen.LoadOrStore(e.N, new(atomic.Int32))
			v.(*atomic.Int32).Add(1)
			return engine.Invalid("n", fmt.Sprintf("poison payload %d", e.N))
		}
		if rand.IntN(5) == 0 {
			transient.Add(1)
			return errors.New("transient failure")
		}
		v, _ := effects.LoadOrStore(e.N, new(atomic.Int32))
		v.(*atomic.Int32).Add(1)
		return nil
	}, engine.Concurrency(8))

	store := deadletter.NewMemory()
	rel := engine.Reliability{
		Retry:         engine.Retry{MaxAttempts: 3, Backoff: engine.Backoff{InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond}},
		Redelivery:    engine.Backoff{InitialInterval: 20 * time.Millisecond, MaxInterval: 500 * time.Millisecond},
		MaxDeliveries: 20,
		DeadLetters:   store,
		Breaker:       engine.BreakerPolicy{Disabled: true}, // 20 % failures must not pause the run
	}
	newEngine := func(services ...*engine.Service) *engine.Engine {
		e, err := engine.New(engine.Config{
			SharedBridge: h.Connect(t),
			Logger:       slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelError})),
			Reliability:  rel,
			DrainTimeout: h.WaitLimit(),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Register(services...); err != nil {
			t.Fatal(err)
		}
		if err := e.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.Stop(context.Background()) })
		return e
	}
	consumer := newEngine(svc)
	producer := newEngine()
	ctx := engine.WithEngine(t.Context(), producer)

	poison := 0
	emit := func(from, to int) {
		for i := from; i < to; i++ {
			p := i%100 == 42
			if p {
				poison++
			}
			deadline := time.Now().Add(3 * h.WaitLimit())
			for {
				err := ev.Emit(ctx, ChaosEvent{N: i, Poison: p})
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("emit %d: %v", i, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	if h.Outage == nil {
		emit(0, n)
	} else {
		emit(0, n/2)
		restore := h.Outage(t)
		bridgetest.WaitFor(t, h.WaitLimit(), "the outage to show in Health", func() bool {
			hctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return consumer.Health(hctx) != nil
		})
		restore()
		emit(n/2, n)
	}
	want := n - poison
	bridgetest.WaitFor(t, 10*h.WaitLimit()+time.Duration(n)*time.Millisecond, fmt.Sprintf("%d effects and %d dead letters", want, poison), func() bool {
		d, _, _ := count(&effects)
		recs, _, _ := store.List(context.Background(), deadletter.Filter{Limit: n})
		return d == want && len(recs) >= poison
	})
	time.Sleep(200 * time.Millisecond) // a late extra dead letter would show now
	recs, _, err := store.List(context.Background(), deadletter.Filter{Limit: n})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		// A poison event is dead-lettered at its first delivery (attempts
		// 1). One delivered again after the outage (its acknowledgement
		// lost with the broker: at-least-once) updates its record with the
		// delivery's count: at most the deliveries the handler saw.
		var seen int32
		var n int
		if i := strings.LastIndex(r.Error, "poison payload"); i >= 0 {
			if _, err := fmt.Sscanf(r.Error[i:], "poison payload %d", &n); err == nil {
				if v, ok := poisonSeen.Load(n); ok {
					seen = v.(*atomic.Int32).Load()
				}
			}
		}
		if r.ErrorKind != deadletter.KindPermanent || !strings.Contains(r.Error, "poison payload") || r.Attempts < 1 || int32(r.Attempts) > seen || r.Handler != name+".tick" {
			t.Errorf("unexpected dead letter: kind %s, attempts %d (its event delivered %d times), handler %s, error %q", r.ErrorKind, r.Attempts, seen, r.Handler, r.Error)
		}
	}
	distinct, total, _ := count(&effects)
	if len(recs) != poison || distinct != want {
		t.Errorf("effects %d (want %d), dead letters %d (want %d)", distinct, want, len(recs), poison)
	}
	t.Logf("chaos: %d events, %d effects (%d duplicate deliveries after the outage), %d poison dead-lettered, %d transient failures, %d handler calls",
		n, distinct, total-distinct, len(recs), transient.Load(), handled.Load())
}
