package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/outbox"
)

// runRelay is `switchboard relay`: it forwards the outbox of --db to the
// bridge until interrupted. Several relays may run; one leads.
func runRelay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("relay", "relay [--db URL] [--schema NAME] [--bridge URL] [--batch N] [--poll D] [--lease D] [--retention D]")
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
	c.fs.IntVar(&batch, "batch", outbox.DefaultBatchSize, "forward at most `N` rows per round")
	c.fs.DurationVar(&poll, "poll", outbox.DefaultPollInterval, "sweep interval when no notification arrives")
	c.fs.DurationVar(&lease, "lease", outbox.DefaultLeaseTTL, "leadership lease: a frozen leader is replaced within 4/3 of it plus 1s, a killed one at once")
	c.fs.Var(&retention, "retention", "keep forwarded rows this `duration` (0 deletes them at once; days like 7d allowed)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return c.usageErr("relay: unexpected argument %q", pos[0])
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
	return outbox.Relay{DatabaseURL: dbURL, Schema: d.schema, Target: b, BatchSize: batch, PollInterval: poll, LeaseTTL: lease, Retention: keep, Logger: log}.Run(ctx)
}

// runOutbox is `switchboard outbox stats|failed|retry|discard`.
func runOutbox(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("outbox", "outbox stats|failed|retry [ID...]|discard ID... [--db URL] [--schema NAME] [--json] [--limit N] [--all]")
	var (
		d      dbFlags
		asJSON bool
		limit  int
		all    bool
	)
	d.register(c.fs)
	c.fs.BoolVar(&asJSON, "json", false, "print JSON (stats, failed)")
	c.fs.IntVar(&limit, "limit", 100, fmt.Sprintf("failed: list `N` rows at most (up to %d)", outbox.MaxListed))
	c.fs.BoolVar(&all, "all", false, "retry: every parked or waiting row (discard has no --all)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return c.usageErr("outbox: want 'outbox stats', 'outbox failed', 'outbox retry ID...|--all' or 'outbox discard ID...'")
	}
	var ids []int64
	switch verb := pos[0]; {
	case verb == "retry" || verb == "discard":
		switch {
		case verb == "discard" && (all || len(pos) == 1):
			return c.usageErr("outbox discard: give the ids of the rows to delete (there is no --all)")
		case verb == "retry" && all == (len(pos) > 1):
			return c.usageErr("outbox retry: give row ids or --all, not both")
		}
		for _, a := range pos[1:] {
			id, err := strconv.ParseInt(a, 10, 64)
			if err != nil || id <= 0 {
				return c.usageErr("outbox %s: %q is not a row id", verb, a)
			}
			ids = append(ids, id)
		}
	case verb != "stats" && verb != "failed":
		return c.usageErr("outbox: unknown subcommand %q", verb)
	case len(pos) > 1:
		return c.usageErr("outbox %s: unexpected argument %q", verb, pos[1])
	}
	if limit <= 0 || limit > outbox.MaxListed {
		return c.usageErr("--limit: want 1 to %d", outbox.MaxListed)
	}
	db, err := d.open(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	switch pos[0] {
	case "retry":
		retry := func() (int64, error) { return outbox.Retry(ctx, db, d.schema, ids...) }
		if all {
			retry = func() (int64, error) { return outbox.RetryAll(ctx, db, d.schema) }
		}
		n, err := retry()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%d row(s) to be forwarded at the relay's next round\n", n)
		return err
	case "discard":
		n, err := outbox.Discard(ctx, db, d.schema, ids...)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%d failed row(s) deleted; their messages will not be delivered\n", n)
		return err
	case "failed":
		return printFailed(ctx, db, d.schema, limit, asJSON, stdout)
	}
	s, err := outbox.ReadStats(ctx, db, d.schema)
	if err != nil {
		return err
	}
	if asJSON {
		_, err = fmt.Fprintf(stdout, "{\"backlog\":%d,\"oldest_age_seconds\":%.3f,\"retrying\":%d,\"parked\":%d}\n",
			s.Backlog, s.OldestAge.Seconds(), s.Retrying, s.Parked)
		return err
	}
	_, err = fmt.Fprintf(stdout, "backlog:  %d rows\noldest:   %s\nretrying: %d rows (refused, waiting for their next attempt)\nparked:   %d rows (refused for good: 'switchboard outbox failed', then 'outbox retry')\n",
		s.Backlog, s.OldestAge.Round(time.Millisecond), s.Retrying, s.Parked)
	return err
}

// printFailed is `switchboard outbox failed`.
func printFailed(ctx context.Context, db *sql.DB, schema string, limit int, asJSON bool, stdout io.Writer) error {
	rows, err := outbox.ListFailed(ctx, db, schema, limit)
	if err != nil {
		return err
	}
	if asJSON {
		type out struct {
			ID        int64      `json:"id"`
			Topic     string     `json:"topic"`
			MessageID string     `json:"message_id"`
			Attempts  int        `json:"attempts"`
			CreatedAt time.Time  `json:"created_at"`
			ParkedAt  *time.Time `json:"parked_at,omitempty"`
			RetryAt   *time.Time `json:"retry_at,omitempty"`
			LastError string     `json:"last_error"`
		}
		list := make([]out, len(rows))
		for i, r := range rows {
			list[i] = out{ID: r.ID, Topic: r.Topic, MessageID: r.MessageID, Attempts: r.Attempts, CreatedAt: r.CreatedAt, LastError: r.LastError}
			if !r.ParkedAt.IsZero() {
				list[i].ParkedAt = &r.ParkedAt
			}
			if !r.RetryAt.IsZero() {
				list[i].RetryAt = &r.RetryAt
			}
		}
		return writeJSON(stdout, list) // topics, ids and errors may hold controls
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tTOPIC\tMESSAGE ID\tATTEMPTS\tLAST ERROR")
	for _, r := range rows {
		var state string
		switch {
		case !r.ParkedAt.IsZero():
			state = "parked"
		case !r.RetryAt.IsZero():
			state = "retry at " + r.RetryAt.UTC().Format(time.RFC3339)
		default:
			state = "pending" // retried by hand, not tried again yet
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", r.ID, state, oneLine(r.Topic), oneLine(r.MessageID), r.Attempts, oneLine(r.LastError))
	}
	return tw.Flush()
}
