// Command edge runs the example user and email services in one small
// process against a local NATS server — a leaf node of the central cluster
// in production, so the services keep working while the uplink is down and
// the broker forwards messages when it is back — or a local MQTT broker
// (Mosquitto, bridged to the central one). The service code is the same as
// in every other deployment model.
//
//	SWITCHBOARD_BRIDGE=nats://127.0.0.1:4222 PORT=8081 go run ./examples/edge
//	SWITCHBOARD_BRIDGE=mqtt://127.0.0.1:1883 PORT=8081 go run ./examples/edge
//	curl localhost:8081/readyz
//
// Small on purpose: it links the NATS and MQTT backends only (not bridge/all), runs
// no gateway, and handles at most 4 messages per command at once. It
// serves /healthz and /readyz on $PORT (default 8080): /readyz fails while
// the local broker is unreachable. SWITCHBOARD_BRIDGE defaults to
// nats://127.0.0.1:4222. On SIGTERM, /readyz fails for $DRAIN_DELAY (1s),
// then the engine drains: in-flight handlers finish and reply, the rest
// stays in the broker for the next instance.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	_ "github.com/switchboard-go/switchboard/bridge/mqtt" // the two backends linked in
	_ "github.com/switchboard-go/switchboard/bridge/nats"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/examples/services/email"
	"github.com/switchboard-go/switchboard/examples/services/user"
	"github.com/switchboard-go/switchboard/services/health"
	"github.com/switchboard-go/switchboard/services/httpgateway"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("process", "edge")
	if err := run(log); err != nil {
		log.Error("stopped with an error", "err", err)
		os.Exit(1)
	}
	log.Info("stopped")
}

func run(log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }() // a second signal ends the process at once

	delay := time.Second
	if v := os.Getenv("DRAIN_DELAY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("$DRAIN_DELAY=%q is not a duration", v)
		}
		delay = d
	}
	eng, err := engine.New(engine.Config{
		Bridge:             getenv("SWITCHBOARD_BRIDGE", "nats://127.0.0.1:4222"),
		Logger:             log,
		CommandConcurrency: 4,
	})
	if err != nil {
		return err
	}
	users, mail := user.New(user.NewStore()), email.New(&email.Outbox{})
	if err := eng.Register(users, mail); err != nil {
		return err
	}
	chk := health.New(health.Config{Engine: eng, Logger: log})
	ln, err := net.Listen("tcp", ":"+getenv("PORT", "8080"))
	if err != nil {
		return err
	}
	if err := eng.Start(ctx); err != nil {
		_ = ln.Close()
		return err
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	fmt.Println("ready")
	log.Info("ready", "addr", ln.Addr().String(), "bridge", eng.Bridge().Name())
	return httpgateway.Serve(ctx, eng, httpgateway.NewServer(ln.Addr().String(), chk), ln, delay, chk)
}

func getenv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
