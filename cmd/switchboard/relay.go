package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/outbox"
)

// runRelay is `switchboard relay`: it forwards the outbox of --db to the
// bridge until interrupted. Several relays may run; one leads.
func runRelay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("relay", "relay [--db URL] [--schema NAME] [--bridge URL] [--connect-timeout D] [--batch N] [--poll D] [--lease D] [--retention D]")
	var (
		d         dbFlags
		raw       string
		batch     int
		poll      time.Duration
		lease     time.Duration
		retention = daysDuration(time.Hour)
	)
	d.register(c.fs)
	c.fs.StringVar(&raw, "bridge", "", "bridge `URL` to forward to (default $"+envBridge+"; a postgres:// URL keeps PostgreSQL as the broker)")
	bridgeToo(c.fs)
	c.fs.IntVar(&batch, "batch", outbox.DefaultBatchSize, "forward at most `N` rows per round")
	c.fs.DurationVar(&poll, "poll", outbox.DefaultPollInterval, "sweep interval when no notification arrives")
	c.fs.DurationVar(&lease, "lease", outbox.DefaultLeaseTTL, "leadership lease: a frozen leader is replaced within 4/3 of it plus 1s, a killed one at once")
	c.fs.Var(&retention, "retention", "keep forwarded rows this `duration` (0 deletes them at once; days like 7d allowed)")
	if err := c.parseNoArgs(args); err != nil {
		return err
	}
	if lease < 300*time.Millisecond {
		return c.usageErr("--lease: want at least 300ms")
	}
	keep := time.Duration(retention)
	if keep == 0 {
		keep = -1 // Relay: negative deletes at once
	}
	db, err := d.open(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := migrations.Up(ctx, db, migrations.Config{Schema: d.schema}); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	rawURL, err := bridgeURL(c, raw)
	if err != nil {
		return err
	}
	b, err := openBridge(ctx, rawURL, d.connectTimeout)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	defer b.Close()
	dbURL := d.url
	if dbURL == "" {
		dbURL = os.Getenv(envDB)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	fmt.Fprintf(stdout, "relaying %s.outbox to the %s bridge at %s\n", d.schema, b.Name(), bridge.Redact(rawURL))
	return outbox.Relay{DatabaseURL: dbURL, Schema: d.schema, Target: b, BatchSize: batch, PollInterval: poll, LeaseTTL: lease, Retention: keep, Logger: log}.Run(ctx)
}
