package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/switchboard-go/switchboard/outbox"
)

// scheduleUsage is the help of `switchboard schedule -h`.
const scheduleUsage = `Usage: switchboard schedule list|cancel [arguments] [flags]

Actions:
  schedule list           list the scheduled messages still waiting, the first due first
  schedule cancel ID...   cancel waiting scheduled messages by message id

Flags of every action:
  --db URL                PostgreSQL URL (default $SWITCHBOARD_DB)
  --schema NAME           schema of the library's tables (default "switchboard")
  --connect-timeout D     bound on connecting to the database (default 10s)
Flags of schedule list:
  --json                  print JSON
  --limit N               list N messages at most

Run 'switchboard schedule <action> -h' for the flags of one action.
`

// runSchedule is `switchboard schedule list|cancel`.
func runSchedule(ctx context.Context, args []string, stdout io.Writer) error {
	actions := map[string]func(context.Context, []string, io.Writer) error{
		"list": scheduleList, "cancel": scheduleCancel,
	}
	g := newGroup("schedule", scheduleUsage)
	var (
		d      dbFlags
		asJSON bool
		limit  int
	)
	// Every action's flags: they may come before the action.
	d.register(g.fs)
	g.fs.BoolVar(&asJSON, "json", false, "")
	g.fs.IntVar(&limit, "limit", 0, "")
	return g.runAction(ctx, args, stdout, actions, "schedule: want 'schedule list' or 'schedule cancel ID...'", "list or cancel")
}

func scheduleList(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("schedule list", "schedule list [--limit N] [--json] [--db URL] [--schema NAME] [--connect-timeout D]\n\nLists the scheduled messages not forwarded yet, the first due first.")
	var (
		d      dbFlags
		asJSON bool
		limit  int
	)
	d.register(c.fs)
	c.fs.BoolVar(&asJSON, "json", false, "print the messages as JSON")
	c.fs.IntVar(&limit, "limit", 100, fmt.Sprintf("list `N` messages at most (up to %d)", outbox.MaxListed))
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
	rows, err := outbox.ListScheduled(ctx, db, d.schema, limit)
	if err != nil {
		return err
	}
	if asJSON {
		type out struct {
			ID        int64     `json:"id"`
			Topic     string    `json:"topic"`
			MessageID string    `json:"message_id"`
			DeliverAt time.Time `json:"deliver_at"`
			CreatedAt time.Time `json:"created_at"`
			Attempts  int       `json:"attempts"`
		}
		list := make([]out, len(rows))
		for i, r := range rows {
			list[i] = out{ID: r.ID, Topic: r.Topic, MessageID: r.MessageID, DeliverAt: r.DeliverAt, CreatedAt: r.CreatedAt, Attempts: r.Attempts}
		}
		return writeJSON(stdout, list) // topics and ids may hold controls
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MESSAGE ID\tDUE\tTOPIC\tATTEMPTS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", oneLine(r.MessageID), r.DeliverAt.UTC().Format(time.RFC3339Nano), oneLine(r.Topic), r.Attempts)
	}
	return tw.Flush()
}

func scheduleCancel(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("schedule cancel", "schedule cancel ID... [--db URL] [--schema NAME] [--connect-timeout D]\n\nCancels scheduled messages, by message id, that are still waiting: they will never be delivered.")
	var d dbFlags
	d.register(c.fs)
	ids, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return c.usageErr("schedule cancel: give the ids of the messages to cancel")
	}
	db, err := d.open(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	n, err := outbox.CancelScheduled(ctx, db, d.schema, ids...)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%d scheduled message(s) cancelled\n", n)
	return err
}
