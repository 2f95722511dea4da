package httpgateway_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/services/httpgateway"
)

// Serve drains in order: new requests get 503 while an in-flight one
// completes, then the listener closes, then the engine stops.
func TestServeDrainsInOrder(t *testing.T) {
	eng := newEngine(t)
	gw := httpgateway.New(httpgateway.Config{Engine: eng, Logger: slog.New(slog.DiscardHandler)})
	routes(gw)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	srv := httpgateway.NewServer(ln.Addr().String(), gw)
	if srv.ReadHeaderTimeout == 0 || srv.ReadTimeout == 0 || srv.WriteTimeout <= httpgateway.DefaultCallTimeout || srv.IdleTimeout == 0 {
		t.Errorf("NewServer leaves a timeout unset: %+v", srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- httpgateway.Serve(ctx, eng, srv, ln, 300*time.Millisecond, gw)
	}()
	<-eng.Ready()
	slow := make(chan reply, 1)
	go func() { slow <- do(t, "POST", url+"/slow", `{"millis": 250}`) }()
	for gw.Stats().InFlight == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel() // SIGTERM
	time.Sleep(20 * time.Millisecond)
	r := do(t, "POST", url+"/public/echo", `{"name":"x"}`)
	if p := r.problem(t); r.status != http.StatusServiceUnavailable || p.Reason != "draining" {
		t.Errorf("new request while draining: %d %+v", r.status, p)
	}
	if eng.State() != engine.StateRunning {
		t.Errorf("the engine stopped before the HTTP drain: %s", eng.State())
	}
	if r := <-slow; r.status != http.StatusOK {
		t.Errorf("in-flight request: %d %s", r.status, r.body)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(engine.DefaultDrainTimeout):
		t.Fatal("Serve did not return")
	}
	if eng.State() != engine.StateStopped {
		t.Errorf("engine %s after Serve", eng.State())
	}
	if _, err := http.Get(url + "/openapi.json"); err == nil {
		t.Error("the listener is still open")
	}
}

// Serve bounds the HTTP drain with the engine's DrainTimeout, the one
// setting for both drains: with a short one, a request that would run for
// 10 s is cut after it, and Serve returns long before the default drain
// timeout would have let it.
func TestServeDrainsWithinTheEnginesDrainTimeout(t *testing.T) {
	const drain = 250 * time.Millisecond
	eng := newEngineWith(t, engine.Config{DrainTimeout: drain})
	if got := eng.DrainTimeout(); got != drain {
		t.Fatalf("Engine.DrainTimeout() = %s, want %s", got, drain)
	}
	gw := httpgateway.New(httpgateway.Config{Engine: eng, Logger: slog.New(slog.DiscardHandler)})
	httpgateway.Route(gw, http.MethodPost, "/sleep", Slow, httpgateway.Public(), httpgateway.CallTimeout(time.Minute))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- httpgateway.Serve(ctx, eng, httpgateway.NewServer(ln.Addr().String(), gw), ln, 0, gw) }()
	<-eng.Ready()

	cut := make(chan error, 1)
	go func() {
		resp, err := http.Post("http://"+ln.Addr().String()+"/sleep", "application/json", strings.NewReader(`{"millis": 10000}`))
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				err = fmt.Errorf("answered %d", resp.StatusCode)
			}
		}
		cut <- err
	}()
	for gw.Stats().InFlight == 0 {
		time.Sleep(time.Millisecond)
	}
	began := time.Now()
	cancel() // SIGTERM
	select {
	case err := <-done:
		took := time.Since(began)
		if err == nil || !strings.Contains(err.Error(), "drain timeout ("+drain.String()+")") {
			t.Errorf("Serve: %v, want the in-flight request cut at the engine's drain timeout", err)
		}
		// The HTTP drain (drain), then the engine's (drain) and the handler's
		// return; far below engine.DefaultDrainTimeout.
		if took < drain || took > engine.DefaultDrainTimeout/3 {
			t.Errorf("Serve returned %s after the cancel, want about 2 × %s", took, drain)
		}
	case <-time.After(engine.DefaultDrainTimeout):
		t.Fatal("Serve did not return within the default drain timeout")
	}
	if err := <-cut; err == nil {
		t.Error("the 10 s request was not cut")
	}
	if eng.State() != engine.StateStopped {
		t.Errorf("engine %s after Serve", eng.State())
	}
}
