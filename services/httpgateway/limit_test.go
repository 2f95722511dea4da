package httpgateway_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/middleware"
	"github.com/switchboard-go/switchboard/services/httpgateway"
)

// Hold's handler runs until the test lets it go.
var Hold = engine.NewCommand[Empty, Empty]("gate", "1", "hold")

// More concurrent requests than the limit: the limit is served, the rest
// get a 503 with Retry-After at once, and no more than the limit are ever
// in flight, in the gateway or in the handler.
func TestInFlightLimit(t *testing.T) {
	const limit, requests = 4, 24
	release := make(chan struct{})
	var (
		mu            sync.Mutex
		running, peak int // handlers running now, and at most
	)
	svc := engine.NewService("gate", "1")
	engine.Handle(svc, Hold, func(ctx context.Context, _ Empty) (Empty, error) {
		mu.Lock()
		running++
		peak = max(peak, running)
		mu.Unlock()
		defer func() {
			mu.Lock()
			running--
			mu.Unlock()
		}()
		select {
		case <-release:
		case <-ctx.Done():
		}
		return Empty{}, nil
	})
	bus := inproc.New()
	eng, err := engine.New(engine.Config{
		SharedBridge:       bus,
		Logger:             slog.New(slog.DiscardHandler),
		CommandConcurrency: 4 * requests, // the engine would run every request at once
		Reliability:        engine.Reliability{CallBreaker: middleware.BreakerPolicy{Disabled: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Register(svc); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = eng.Stop(context.Background())
		_ = bus.Close()
	})
	gw := httpgateway.New(httpgateway.Config{Engine: eng, MaxInFlight: limit, Logger: slog.New(slog.DiscardHandler)})
	httpgateway.Route(gw, http.MethodPost, "/hold", Hold, httpgateway.Public())
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)

	type result struct {
		reply
		err error
	}
	results := make(chan result, requests)
	for range requests {
		go func() {
			req, _ := http.NewRequest("POST", srv.URL+"/hold", strings.NewReader(`{}`))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				results <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			results <- result{reply{resp.StatusCode, resp.Header, b}, err}
		}()
	}
	// Until every request is held by the handler or answered.
	var got []result
	maxInFlight := int64(0)
	held := func() int {
		mu.Lock()
		defer mu.Unlock()
		return running
	}
	for held()+len(got) < requests {
		select {
		case r := <-results:
			got = append(got, r)
		case <-time.After(time.Millisecond):
		}
		maxInFlight = max(maxInFlight, gw.Stats().InFlight)
	}
	close(release)
	for len(got) < requests {
		got = append(got, <-results)
	}
	served, refused := 0, 0
	for _, r := range got {
		switch {
		case r.err != nil:
			t.Errorf("request failed: %v", r.err)
		case r.status == http.StatusOK:
			served++
		case r.status == http.StatusServiceUnavailable:
			refused++
			if p := r.problem(t); p.Reason != "overloaded" || r.header.Get("Retry-After") == "" {
				t.Errorf("refusal %+v, Retry-After %q", p, r.header.Get("Retry-After"))
			}
		default:
			t.Errorf("status %d: %s", r.status, r.body)
		}
	}
	if served != limit || refused != requests-limit {
		t.Errorf("served %d and refused %d of %d requests, want %d and %d", served, refused, requests, limit, requests-limit)
	}
	mu.Lock()
	defer mu.Unlock()
	if peak > limit || maxInFlight > limit {
		t.Errorf("in flight: up to %d in the handler, %d in the gateway; the limit is %d", peak, maxInFlight, limit)
	}
	if st := gw.Stats(); st.InFlight != 0 || st.Rejected != uint64(refused) {
		t.Errorf("stats %+v after the burst", st)
	}
}
