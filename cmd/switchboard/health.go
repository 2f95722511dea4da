package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/services/health"
)

// runHealth is `switchboard health`: it opens the bridge within
// --connect-timeout, then runs its health check within --check-timeout.
// It prints "ok" and returns nil, or returns the failure (exit status 1).
func runHealth(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("health", "health [--bridge URL] [--connect-timeout D] [--check-timeout D]")
	var (
		raw                   string
		connect, checkTimeout time.Duration
	)
	c.fs.StringVar(&raw, "bridge", "", "bridge `URL` to check (default $"+envBridge+")")
	connectTimeoutFlag(c.fs, &connect, "the bridge")
	c.fs.DurationVar(&checkTimeout, "check-timeout", health.DefaultCheckTimeout, "bound on the bridge's health check once it is open")
	if err := c.parseNoArgs(args); err != nil {
		return err
	}
	if err := validateConnectTimeout(c, connect); err != nil {
		return err
	}
	if checkTimeout <= 0 {
		return c.usageErr("--check-timeout: must be positive")
	}
	rawURL, err := bridgeURL(c, raw)
	if err != nil {
		return err
	}
	b, err := openBridge(ctx, rawURL, connect)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer b.Close()
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	if err := b.Health(cctx); err != nil {
		return fmt.Errorf("health: %s bridge at %s: %w", b.Name(), bridge.Redact(rawURL), err)
	}
	_, err = fmt.Fprintf(stdout, "ok: %s bridge at %s\n", b.Name(), bridge.Redact(rawURL))
	return err
}
