// Package app is the shared main of the example processes: it opens the
// bridge named by $SWITCHBOARD_BRIDGE, runs the given services until SIGINT
// or SIGTERM, drains, and exits. It prints "ready" on stdout once every
// handler is subscribed, so scripts and tests know when to start calling.
//
// Serve is the same for processes that answer HTTP (examples/serverless,
// and Main when $PORT is set): /healthz and /readyz, and the HTTP gateway
// when there is one, on $PORT (default 8080). It prints "listening on
// <addr>" before "ready", and on exit "stopped: served=N rejected=M" (the
// gateway's counters). On SIGTERM it drains in the order that loses
// nothing (see httpgateway.Serve): /readyz and new gateway requests answer
// 503 for $DRAIN_DELAY (default 1s, so load balancers notice), in-flight
// requests complete, then the engine drains and stops.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	_ "github.com/switchboard-go/switchboard/bridge/all" // every backend
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/services/health"
	"github.com/switchboard-go/switchboard/services/httpgateway"
)

// DefaultPort is the port Serve listens on without $PORT.
const DefaultPort = "8080"

// DefaultDrainDelay is how long Serve answers 503 after SIGTERM before it
// stops accepting connections, without $DRAIN_DELAY.
const DefaultDrainDelay = time.Second

// processStart approximates when the process started (package init runs
// before main).
var processStart = time.Now()

// Main runs services in a process named name and exits. With $PORT set, it
// runs them with Serve instead, which adds /healthz and /readyz on that
// port.
func Main(name string, services ...*engine.Service) {
	if os.Getenv("PORT") != "" {
		Serve(Options{Name: name, Services: services})
		return
	}
	log := newLogger(name)
	eng, err := engine.New(engine.Config{Bridge: os.Getenv("SWITCHBOARD_BRIDGE"), Logger: log, HandleSignals: true})
	if err != nil {
		log.Error("cannot start", "err", err)
		os.Exit(1)
	}
	if err := eng.Register(services...); err != nil {
		log.Error("cannot register", "err", err)
		os.Exit(1)
	}
	go func() {
		select {
		case <-eng.Ready():
			fmt.Println("ready")
			log.Info("ready", "bridge", eng.Bridge().Name())
		case <-eng.Done():
		}
	}()
	if err := eng.Run(context.Background()); err != nil {
		log.Error("stopped with an error", "err", err)
		os.Exit(1)
	}
	log.Info("stopped")
}

// Options is what Serve runs.
type Options struct {
	// Name names the process in its logs.
	Name string
	// Services run in the process.
	Services []*engine.Service
	// Gateway, when set, builds the HTTP gateway served at "/" next to the
	// health endpoints, once the engine exists.
	Gateway func(eng *engine.Engine, log *slog.Logger) *httpgateway.Gateway
}

// Serve runs o's services and an HTTP server in one process until SIGINT
// or SIGTERM, drains, and exits (1 on an error).
func Serve(o Options) {
	log := newLogger(o.Name)
	if err := serve(context.Background(), o, log, os.Stdout); err != nil {
		log.Error("stopped with an error", "err", err)
		os.Exit(1)
	}
	log.Info("stopped")
}

func serve(ctx context.Context, o Options, log *slog.Logger, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }() // a second signal ends the process at once

	delay := DefaultDrainDelay
	if v := os.Getenv("DRAIN_DELAY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("$DRAIN_DELAY=%q is not a duration", v)
		}
		delay = d
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = DefaultPort
	}

	eng, err := engine.New(engine.Config{Bridge: os.Getenv("SWITCHBOARD_BRIDGE"), Logger: log})
	if err != nil {
		return err
	}
	if err := eng.Register(o.Services...); err != nil {
		return err
	}
	chk := health.New(health.Config{Engine: eng, Logger: log})
	mux := http.NewServeMux()
	mux.Handle("/healthz", chk)
	mux.Handle("/readyz", chk)
	drainers := []httpgateway.Drainer{chk}
	var gw *httpgateway.Gateway
	if o.Gateway != nil {
		gw = o.Gateway(eng, log)
		mux.Handle("/", gw)
		drainers = append(drainers, gw)
	}

	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return fmt.Errorf("listening on port %s: %w", port, err)
	}
	if err := eng.Start(ctx); err != nil {
		_ = ln.Close()
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return fmt.Errorf("interrupted while starting: %w", err)
		}
		return err
	}
	fmt.Fprintf(stdout, "listening on %s\n", ln.Addr())
	fmt.Fprintln(stdout, "ready")
	log.Info("ready", "addr", ln.Addr().String(), "bridge", eng.Bridge().Name(), "since_process_start", time.Since(processStart).Round(time.Microsecond))
	err = httpgateway.Serve(ctx, eng, httpgateway.NewServer(ln.Addr().String(), mux), ln, delay, drainers...)
	if gw != nil {
		st := gw.Stats()
		fmt.Fprintf(stdout, "stopped: served=%d rejected=%d\n", st.Served, st.Rejected)
	}
	return err
}

func newLogger(name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("process", name)
}
