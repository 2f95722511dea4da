package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/switchboard-go/switchboard/migrations"
)

// migrateUsage is the help of `switchboard migrate -h`.
const migrateUsage = `Usage: switchboard migrate up|status|sql [flags]

Actions:
  migrate up        apply the pending migrations
  migrate status    list every migration, applied or pending
  migrate sql       print the SQL of every migration (needs no database)

Flags of every action:
  --schema NAME           schema of the library's tables (default "switchboard")
Flags of migrate up and migrate status:
  --db URL                PostgreSQL URL (default $SWITCHBOARD_DB)
  --connect-timeout D     bound on connecting to the database (default 10s)

Run 'switchboard migrate <action> -h' for the flags of one action.
`

// runMigrate is `switchboard migrate up|status|sql`.
func runMigrate(ctx context.Context, args []string, stdout io.Writer) error {
	actions := map[string]func(context.Context, []string, io.Writer) error{
		"up": migrateUp, "status": migrateStatus, "sql": migrateSQL,
	}
	g := newGroup("migrate", migrateUsage)
	var d dbFlags
	d.register(g.fs) // every action's flags: they may come before the action
	return g.runAction(ctx, args, stdout, actions, "migrate: want one of up, status, sql", "up, status or sql")
}

func migrateSQL(_ context.Context, args []string, stdout io.Writer) error {
	c := newCommand("migrate sql", "migrate sql [--schema NAME]\n\nPrints the SQL of every migration, for goose, atlas or flyway; needs no database.")
	var schema string
	schemaFlag(c.fs, &schema)
	if err := c.parseNoArgs(args); err != nil {
		return err
	}
	if err := validateSchema(c, schema); err != nil {
		return err
	}
	script, err := migrations.SQL(migrations.Config{Schema: schema})
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, script)
	return err
}

func migrateUp(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("migrate up", "migrate up [--db URL] [--schema NAME] [--connect-timeout D]\n\nApplies the pending migrations, advisory-locked: safe from several processes at once.")
	var d dbFlags
	d.register(c.fs)
	if err := c.parseNoArgs(args); err != nil {
		return err
	}
	db, err := d.open(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	applied, err := migrations.Up(ctx, db, migrations.Config{Schema: d.schema})
	for _, m := range applied {
		fmt.Fprintf(stdout, "applied %s\n", m.Name)
	}
	if err != nil {
		return err
	}
	all := migrations.All()
	_, err = fmt.Fprintf(stdout, "schema %q is up to date (version %d)\n", d.schema, all[len(all)-1].Version)
	return err
}

func migrateStatus(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("migrate status", "migrate status [--db URL] [--schema NAME] [--connect-timeout D]\n\nLists every migration, applied or pending; exits with status 1 if an applied one has changed since.")
	var d dbFlags
	d.register(c.fs)
	if err := c.parseNoArgs(args); err != nil {
		return err
	}
	db, err := d.open(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	st, err := migrations.Status(ctx, db, migrations.Config{Schema: d.schema})
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
