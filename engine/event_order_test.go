package engine_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
)

type Numbered struct {
	N int `json:"n"`
}

var numbered = engine.NewEvent[Numbered]("order.numbered")

// In process, events reach a subscription of Concurrency 1 (the default) in
// the order they were emitted, whether a handler is free to take one
// directly or it waits in the group's queue behind others: handlers that
// take their time now and then make both roads alternate.
func TestInProcessEventsKeepEmitOrder(t *testing.T) {
	const n = 400
	var mu sync.Mutex
	seen := map[string][]int{}
	var services []*engine.Service
	for _, name := range []string{"ordera", "orderb"} {
		s := engine.NewService(name, "1")
		engine.Subscribe(s, numbered, func(_ context.Context, ev Numbered) error {
			if ev.N%7 == 0 {
				time.Sleep(time.Millisecond) // a queue builds behind it
			}
			mu.Lock()
			defer mu.Unlock()
			seen[name] = append(seen[name], ev.N)
			return nil
		})
		services = append(services, s)
	}
	e, err := engine.New(engine.Config{SharedBridge: inproc.New(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Register(services...); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer e.Stop(context.Background())
	ctx := engine.WithEngine(t.Context(), e)
	for i := range n {
		if err := numbered.Emit(ctx, Numbered{N: i}); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			time.Sleep(5 * time.Millisecond) // the queues empty: the direct road again
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		done := len(seen["ordera"]) == n && len(seen["orderb"]) == n
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %d and %d of %d events handled", len(seen["ordera"]), len(seen["orderb"]), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for name, got := range seen {
		for i, v := range got {
			if v != i {
				t.Fatalf("%s: event %d handled in place %d: %v", name, v, i, got[max(0, i-5):min(len(got), i+5)])
			}
		}
	}
}
