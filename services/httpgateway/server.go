package httpgateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/switchboard-go/switchboard/engine"
)

// Timeouts of the servers NewServer returns.
const (
	ServerReadHeaderTimeout = 5 * time.Second
	ServerReadTimeout       = 30 * time.Second
	ServerWriteTimeout      = DefaultCallTimeout + 5*time.Second
	ServerIdleTimeout       = 120 * time.Second
	ServerMaxHeaderBytes    = 64 << 10
)

// NewServer returns an http.Server for handler with every timeout set (a
// zero http.Server has none, so one slow client can hold a connection
// forever): ServerReadHeaderTimeout, ServerReadTimeout, ServerWriteTimeout
// (above DefaultCallTimeout, so a slow command still gets its 504 out),
// ServerIdleTimeout, and ServerMaxHeaderBytes.
func NewServer(addr string, handler http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           handler,
		ReadHeaderTimeout: ServerReadHeaderTimeout,
		ReadTimeout:       ServerReadTimeout,
		WriteTimeout:      ServerWriteTimeout,
		IdleTimeout:       ServerIdleTimeout,
		MaxHeaderBytes:    ServerMaxHeaderBytes,
	}
}

// Drainer refuses new work once shutdown begins while work already
// accepted completes. *Gateway and *health.Checker are Drainers.
type Drainer interface {
	Drain() // from now on, refuse new work
}

// Serve runs srv on ln in front of eng until ctx ends, then shuts both
// down in the order that loses nothing:
//
//  1. every drainer drains: the gateway answers new requests with a 503
//     problem, /readyz answers 503;
//  2. after drainDelay (time for load balancers to see /readyz fail and
//     stop sending requests; 0 for none), the listener closes and
//     in-flight requests complete (http.Server.Shutdown), within the
//     engine's DrainTimeout (engine.Config.DrainTimeout, see
//     Engine.DrainTimeout); the ones still running then are cut;
//  3. the engine stops (Engine.Stop): in-flight handlers finish and reply
//     within the same DrainTimeout, connections close. Serve waits up to
//     twice DrainTimeout for Stop: the drain, then as long again for the
//     handlers cancelled at its deadline to return.
//
// One setting, the engine's DrainTimeout, bounds both drains: set it in
// engine.Config. Serve starts eng when it is new; a program that announces
// readiness starts it first (ln already takes connections, which srv
// serves once Serve runs). Serve returns nil after a clean shutdown, or
// the errors met. Cancel ctx on SIGTERM, for instance with
// signal.NotifyContext.
func Serve(ctx context.Context, eng *engine.Engine, srv *http.Server, ln net.Listener, drainDelay time.Duration, drainers ...Drainer) error {
	if eng == nil {
		_ = ln.Close()
		return errors.New("httpgateway: Serve: nil engine")
	}
	drainTimeout := eng.DrainTimeout()
	if eng.State() == engine.StateNew {
		if err := eng.Start(ctx); err != nil {
			_ = ln.Close()
			return err
		}
	}
	conns := trackConns(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	var errs []error
	serving := true
	select {
	case <-ctx.Done():
	case err := <-served:
		serving = false
		errs = append(errs, fmt.Errorf("http server: %w", err))
	case <-eng.Done():
		errs = append(errs, errors.New("the engine stopped by itself"))
	}

	for _, d := range drainers {
		d.Drain()
	}
	drainBegan := time.Now()
	if serving {
		if drainDelay > 0 {
			time.Sleep(drainDelay)
		}
		// Shutdown closes idle keep-alive connections at once but waits 5 s
		// for connections that never sent a request (a client's spare
		// dials); those that stayed silent for the whole drain are closed
		// like idle ones.
		conns.closeSilentSince(drainBegan)
		sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		err := srv.Shutdown(sctx)
		cancel()
		if err != nil {
			_ = srv.Close()
			errs = append(errs, fmt.Errorf("in-flight requests did not finish within the drain timeout (%s): %w", drainTimeout, err))
		}
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("http server: %w", err))
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*drainTimeout)
	err := eng.Stop(sctx)
	cancel()
	if err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// connTracker follows the state of a server's connections.
type connTracker struct {
	mu    sync.Mutex
	conns map[net.Conn]connState
}

type connState struct {
	state http.ConnState
	since time.Time
}

// trackConns wraps srv.ConnState to follow srv's connections.
func trackConns(srv *http.Server) *connTracker {
	ct := &connTracker{conns: map[net.Conn]connState{}}
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		ct.mu.Lock()
		if s == http.StateClosed || s == http.StateHijacked {
			delete(ct.conns, c)
		} else {
			ct.conns[c] = connState{s, time.Now()}
		}
		ct.mu.Unlock()
		if prev != nil {
			prev(c, s)
		}
	}
	return ct
}

// closeSilentSince closes the connections that have sent no request since
// before t.
func (ct *connTracker) closeSilentSince(t time.Time) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	for c, st := range ct.conns {
		if st.state == http.StateNew && st.since.Before(t) {
			_ = c.Close()
		}
	}
}
