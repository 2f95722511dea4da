package httpgateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	Drain()
}

// ServeOptions configures Serve. The zero value is valid.
type ServeOptions struct {
	// Drainers are drained first, when shutdown begins: the gateway answers
	// new requests with 503 and /readyz fails.
	Drainers []Drainer
	// DrainDelay keeps the listener open that long after draining began,
	// so that load balancers see /readyz fail and stop sending requests
	// before connections are refused. Default 0.
	DrainDelay time.Duration
	// ShutdownTimeout bounds the wait for in-flight requests; the ones
	// still running then are cut. Default engine.DefaultDrainTimeout.
	ShutdownTimeout time.Duration
	// StopTimeout bounds the engine's Stop. Default
	// engine.DefaultDrainTimeout + engine.DefaultConnectTimeout, the bound
	// engine.Run gives an engine with the default timeouts: set it when the
	// engine's Config.DrainTimeout is longer, or Stop is cut short.
	StopTimeout time.Duration
	// OnReady, if set, is called once the engine runs and srv accepts
	// connections.
	OnReady func()
	// Logger receives the shutdown steps. Default slog.Default().
	Logger *slog.Logger
}

// Serve runs an HTTP server in front of an engine until ctx ends, then
// shuts both down in the order that loses nothing:
//
//  1. every Drainer drains: new requests get a 503 problem, /readyz a 503;
//  2. after DrainDelay, the listener closes and in-flight requests
//     complete (http.Server.Shutdown, bounded by ShutdownTimeout);
//  3. the engine stops (Engine.Stop): in-flight handlers finish and reply,
//     connections close.
//
// eng is started first when it is new; it may be nil for a server without
// one. Serve returns nil after a clean shutdown, or the errors met.
// Cancel ctx on SIGTERM, for instance with signal.NotifyContext.
func Serve(ctx context.Context, eng *engine.Engine, srv *http.Server, ln net.Listener, opts ServeOptions) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = engine.DefaultDrainTimeout
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = engine.DefaultDrainTimeout + engine.DefaultConnectTimeout
	}
	if eng != nil && eng.State() == engine.StateNew {
		if err := eng.Start(ctx); err != nil {
			_ = ln.Close()
			return err
		}
	}
	conns := trackConns(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if opts.OnReady != nil {
		opts.OnReady()
	}

	var engineDone <-chan struct{}
	if eng != nil {
		engineDone = eng.Done()
	}
	var errs []error
	serving := true
	select {
	case <-ctx.Done():
	case err := <-served:
		serving = false
		errs = append(errs, fmt.Errorf("http server: %w", err))
	case <-engineDone:
		errs = append(errs, errors.New("the engine stopped by itself"))
	}

	for _, d := range opts.Drainers {
		d.Drain()
	}
	drainBegan := time.Now()
	if serving {
		log.Info("draining: new requests get 503", "delay", opts.DrainDelay)
		if opts.DrainDelay > 0 {
			time.Sleep(opts.DrainDelay)
		}
		// Shutdown closes idle keep-alive connections at once but waits 5 s
		// for connections that never sent a request (a client's spare
		// dials); those that stayed silent for the whole drain are closed
		// like idle ones.
		conns.closeSilentSince(drainBegan)
		sctx, cancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout)
		err := srv.Shutdown(sctx)
		cancel()
		if err != nil {
			_ = srv.Close()
			errs = append(errs, fmt.Errorf("in-flight requests did not finish within %s: %w", opts.ShutdownTimeout, err))
		}
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("http server: %w", err))
		}
		log.Info("http server stopped; stopping the engine")
	}
	if eng != nil {
		sctx, cancel := context.WithTimeout(context.Background(), opts.StopTimeout)
		err := eng.Stop(sctx)
		cancel()
		if err != nil {
			errs = append(errs, err)
		}
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
