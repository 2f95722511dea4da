package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
)

// runHealth is `switchboard health`: it opens the bridge and runs its
// health check, both within --timeout. It prints "ok" and returns nil, or
// returns the failure (exit status 1).
func runHealth(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("health", "health [--bridge URL] [--timeout DURATION]")
	var (
		raw     string
		timeout time.Duration
	)
	c.fs.StringVar(&raw, "bridge", "", "bridge `URL` to check (default $"+envBridge+")")
	c.fs.DurationVar(&timeout, "timeout", 10*time.Second, "bound on opening the bridge and on the check together")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return c.usageErr("health: unexpected argument %q", pos[0])
	}
	if timeout <= 0 {
		return c.usageErr("--timeout: must be positive")
	}
	rawURL, err := bridgeURL(c, raw)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	b, err := bridge.Open(ctx, rawURL)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer b.Close()
	if err := b.Health(ctx); err != nil {
		return fmt.Errorf("health: %s bridge at %s: %w", b.Name(), bridge.Redact(rawURL), err)
	}
	_, err = fmt.Fprintf(stdout, "ok: %s bridge at %s\n", b.Name(), bridge.Redact(rawURL))
	return err
}
