package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/switchboard-go/switchboard/migrations"
)

// runMigrate is `switchboard migrate up|status|sql`.
func runMigrate(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("migrate", "migrate up|status|sql [--db URL] [--schema NAME]")
	var d dbFlags
	d.register(c.fs)
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return c.usageErr("migrate: want one of up, status, sql")
	}
	cfg := migrations.Config{Schema: d.schema}
	switch pos[0] {
	case "sql":
		if err := d.validate(c); err != nil {
			return err
		}
		script, err := migrations.SQL(cfg)
		if err != nil {
			return err
		}
		_, err = io.WriteString(stdout, script)
		return err
	case "up", "status":
	default:
		return c.usageErr("migrate: unknown action %q (want up, status or sql)", pos[0])
	}
	db, err := d.open(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()

	if pos[0] == "up" {
		applied, err := migrations.Up(ctx, db, cfg)
		for _, m := range applied {
			fmt.Fprintf(stdout, "applied %s\n", m.Name)
		}
		if err != nil {
			return err
		}
		all := migrations.All()
		fmt.Fprintf(stdout, "schema %q is up to date (version %d)\n", d.schema, all[len(all)-1].Version)
		return nil
	}

	st, err := migrations.Status(ctx, db, cfg)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tFILE\tSTATUS\tAPPLIED AT")
	modified := 0
	for _, s := range st {
		state, at := "pending", "-"
		if s.Applied {
			state, at = "applied", s.AppliedAt.UTC().Format(time.RFC3339)
		}
		if s.Modified() {
			state = "MODIFIED since applied"
			modified++
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", s.Version, s.Name, state, at)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if modified > 0 {
		return fmt.Errorf("%d applied migration(s) changed since they were applied: %w", modified, migrations.ErrChecksumMismatch)
	}
	return nil
}
