// Package app is the shared main of the example processes: it opens the
// bridge named by $SWITCHBOARD_BRIDGE, runs the given services until SIGINT
// or SIGTERM, drains, and exits. It prints "ready" on stdout once every
// handler is subscribed, so scripts and tests know when to start calling.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	_ "github.com/switchboard-go/switchboard/bridge/all" // every backend
	"github.com/switchboard-go/switchboard/engine"
)

// Main runs services in a process named name and exits.
func Main(name string, services ...*engine.Service) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("process", name)
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
