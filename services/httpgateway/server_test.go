package httpgateway_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
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
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- httpgateway.Serve(ctx, eng, srv, ln, httpgateway.ServeOptions{
			Drainers: []httpgateway.Drainer{gw}, DrainDelay: 300 * time.Millisecond,
			OnReady: func() { close(ready) }, Logger: slog.New(slog.DiscardHandler),
		})
	}()
	<-ready
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
