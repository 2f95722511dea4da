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
	c := newCommand("relay", "relay [--db URL] [--schema NAME] [--bridge URL] [--batch N] [--poll D] [--retention D]")
	var (
		d         dbFlags
		raw       string
		batch     int
		poll      time.Duration
		retention string
	)
	d.register(c.fs)
	c.fs.StringVar(&raw, "bridge", "", "bridge `URL` to forward to (default $"+envBridge+"; a postgres:// URL keeps PostgreSQL as the broker)")
	c.fs.IntVar(&batch, "batch", outbox.DefaultBatchSize, "rows forwarded per round")
	c.fs.DurationVar(&poll, "poll", outbox.DefaultPollInterval, "sweep interval when no notification arrives")
	c.fs.StringVar(&retention, "retention", "1h", "keep forwarded rows this long (\"0\" deletes them at once; days like 7d allowed)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return c.usageErr("relay: unexpected argument %q", pos[0])
	}
	keep, err := parseDurationDays(retention)
	if err != nil {
		return c.usageErr("--retention: %v", err)
	}
	if keep == 0 {
		keep = -1 // Relay: negative deletes at once
	}
	db, err := d.open(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := migrations.Up(ctx, db, migrations.Options{Schema: d.schema}); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	rawURL, err := bridgeURL(c, raw)
	if err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, 15*time.Second)
	b, err := bridge.Open(octx, rawURL)
	cancel()
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
	return outbox.Relay{DB: dbURL, Schema: d.schema, Target: b, BatchSize: batch, PollInterval: poll, Retention: keep, Logger: log}.Run(ctx)
}

// runOutbox is `switchboard outbox stats`.
func runOutbox(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("outbox", "outbox stats [--db URL] [--schema NAME] [--json]")
	var (
		d      dbFlags
		asJSON bool
	)
	d.register(c.fs)
	c.fs.BoolVar(&asJSON, "json", false, "print JSON")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || pos[0] != "stats" {
		return c.usageErr("outbox: want 'outbox stats'")
	}
	db, err := d.open(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	s, err := outbox.ReadStats(ctx, db, d.schema)
	if err != nil {
		return err
	}
	if asJSON {
		_, err = fmt.Fprintf(stdout, "{\"backlog\":%d,\"oldest_age_seconds\":%.3f}\n", s.Backlog, s.OldestAge.Seconds())
		return err
	}
	_, err = fmt.Fprintf(stdout, "backlog: %d rows\noldest:  %s\n", s.Backlog, s.OldestAge.Round(time.Millisecond))
	return err
}
