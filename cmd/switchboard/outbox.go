package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/switchboard-go/switchboard/outbox"
)

// outboxUsage is the help of `switchboard outbox -h`.
const outboxUsage = `Usage: switchboard outbox stats|failed|retry|discard [arguments] [flags]

Actions:
  outbox stats          print the backlog, the age of its oldest row, rows retrying and parked
  outbox failed         list the rows the broker refused (parked, or waiting for a retry)
  outbox retry ID...    forward refused rows again at the relay's next round
  outbox retry --all    the same for every parked or waiting row
  outbox discard ID...  delete refused rows for good (their messages are never delivered)

Flags of every action:
  --db URL                PostgreSQL URL (default $SWITCHBOARD_DB)
  --schema NAME           schema of the library's tables (default "switchboard")
  --connect-timeout D     bound on connecting to the database (default 10s)
Flags of outbox stats and outbox failed:
  --json                  print JSON
Flags of outbox failed:
  --limit N               list N rows at most

Run 'switchboard outbox <action> -h' for the flags of one action.
`

// runOutbox is `switchboard outbox stats|failed|retry|discard`.
func runOutbox(ctx context.Context, args []string, stdout io.Writer) error {
	actions := map[string]func(context.Context, []string, io.Writer) error{
		"stats": outboxStats, "failed": outboxFailed, "retry": outboxRetry, "discard": outboxDiscard,
	}
	g := newGroup("outbox", outboxUsage)
	var (
		d      dbFlags
		asJSON bool
		limit  int
		all    bool
	)
	// Every action's flags: they may come before the action.
	d.register(g.fs)
	g.fs.BoolVar(&asJSON, "json", false, "")
	g.fs.IntVar(&limit, "limit", 0, "")
	g.fs.BoolVar(&all, "all", false, "")
	return g.runAction(ctx, args, stdout, actions, "outbox: want 'outbox stats', 'outbox failed', 'outbox retry ID...|--all' or 'outbox discard ID...'", "stats, failed, retry or discard")
}

// rowIDs parses the row ids of outbox retry and discard.
func rowIDs(c *command, pos []string) ([]int64, error) {
	ids := make([]int64, 0, len(pos))
	for _, a := range pos {
		id, err := strconv.ParseInt(a, 10, 64)
		if err != nil || id <= 0 {
			return nil, c.usageErr("%s: %q is not a row id", c.fs.Name(), a)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func outboxStats(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("outbox stats", "outbox stats [--json] [--db URL] [--schema NAME] [--connect-timeout D]\n\nPrints the backlog (rows not forwarded yet), the age of its oldest row, and the rows\nthe broker refused: retrying (waiting for their next attempt) and parked (refused for good).")
	var (
		d      dbFlags
		asJSON bool
	)
	d.register(c.fs)
	c.fs.BoolVar(&asJSON, "json", false, `print {"backlog", "oldest_age_seconds", "retrying", "parked", "scheduled"} as JSON`)
	if err := c.parseNoArgs(args); err != nil {
		return err
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
		_, err = fmt.Fprintf(stdout, "{\"backlog\":%d,\"oldest_age_seconds\":%.3f,\"retrying\":%d,\"parked\":%d,\"scheduled\":%d}\n",
			s.Backlog, s.OldestAge.Seconds(), s.Retrying, s.Parked, s.Scheduled)
		return err
	}
	_, err = fmt.Fprintf(stdout, "backlog:  %d rows\noldest:   %s\nretrying: %d rows (refused, waiting for their next attempt)\nparked:   %d rows (refused for good: 'switchboard outbox failed', then 'outbox retry')\nscheduled: %d rows (not due yet: 'switchboard schedule list')\n",
		s.Backlog, s.OldestAge.Round(time.Millisecond), s.Retrying, s.Parked, s.Scheduled)
	return err
}

func outboxFailed(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("outbox failed", "outbox failed [--limit N] [--json] [--db URL] [--schema NAME] [--connect-timeout D]\n\nLists the rows the broker refused, parked or waiting for a retry, with their last error.")
	var (
		d      dbFlags
		asJSON bool
		limit  int
	)
	d.register(c.fs)
	c.fs.BoolVar(&asJSON, "json", false, "print the rows as JSON")
	c.fs.IntVar(&limit, "limit", 100, fmt.Sprintf("list `N` rows at most (up to %d)", outbox.MaxListed))
	if err := c.parseNoArgs(args); err != nil {
		return err
	}
	if limit <= 0 || limit > outbox.MaxListed {
		return c.usageErr("--limit: want 1 to %d", outbox.MaxListed)
	}
	db, err := d.open(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	return printFailed(ctx, db, d.schema, limit, asJSON, stdout)
}

func outboxRetry(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("outbox retry", "outbox retry (ID... | --all) [--db URL] [--schema NAME] [--connect-timeout D]\n\nMakes refused rows (parked, or waiting for a retry) deliverable at the relay's next round.")
	var (
		d   dbFlags
		all bool
	)
	d.register(c.fs)
	c.fs.BoolVar(&all, "all", false, "retry every parked or waiting row")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if all == (len(pos) > 0) {
		return c.usageErr("outbox retry: give row ids or --all, not both")
	}
	ids, err := rowIDs(c, pos)
	if err != nil {
		return err
	}
	db, err := d.open(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	var n int64
	if all {
		n, err = outbox.RetryAll(ctx, db, d.schema)
	} else {
		n, err = outbox.Retry(ctx, db, d.schema, ids...)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%d row(s) to be forwarded at the relay's next round\n", n)
	return err
}

func outboxDiscard(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("outbox discard", "outbox discard ID... [--db URL] [--schema NAME] [--connect-timeout D]\n\nDeletes refused rows for good: their messages will never be delivered. There is no --all.")
	var d dbFlags
	d.register(c.fs)
	for _, a := range args {
		if a == "--all" || a == "-all" {
			return c.usageErr("outbox discard: give the ids of the rows to delete (there is no --all)")
		}
	}
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return c.usageErr("outbox discard: give the ids of the rows to delete (there is no --all)")
	}
	ids, err := rowIDs(c, pos)
	if err != nil {
		return err
	}
	db, err := d.open(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	n, err := outbox.Discard(ctx, db, d.schema, ids...)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%d failed row(s) deleted; their messages will not be delivered\n", n)
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
