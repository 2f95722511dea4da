package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/postgres"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/migrations"
)

const usage = `Usage: switchboard <command> [arguments] [flags]

Commands:
  migrate up        apply the pending migrations
  migrate status    list every migration, applied or pending
  migrate sql       print the SQL of every migration (needs no database)
  dlq list          list dead letters, oldest failure first
  dlq show ID       print one dead letter: every field, metadata and payload
  dlq replay ID     publish a dead letter again to the group that failed it
  dlq replay --all  replay every dead letter matching the filters
  dlq purge         delete the dead letters matching filters, or --all (asks for --yes)
  health            open a bridge and check that its backend answers
  relay             forward the transactional outbox to a bridge until interrupted
  outbox stats      print the outbox backlog, the age of its oldest row, rows retrying and parked
  outbox failed     list the outbox rows the broker refused (parked, or waiting for a retry)
  outbox retry ID   forward refused outbox rows again at once (--all: every one)
  outbox discard ID delete refused outbox rows for good (their messages are never delivered)
  schedule list     list the scheduled messages still waiting, the first due first
  schedule cancel ID cancel waiting scheduled messages by message id
  workflow start NAME JSON start a run of a workflow through the bridge; print its id
  workflow list     list workflow runs, the newest first (--status, --workflow)
  workflow show ID  print a run and its steps: kind, name, attempts, timings, errors
  workflow cancel ID ask a run to stop: its compensations run and it ends cancelled
  workflow retry ID resume a stopped or failed run where it stopped

Flags of migrate, dlq, relay, outbox, schedule and workflow:
  --db URL                PostgreSQL URL (default $SWITCHBOARD_DB)
  --schema NAME           schema of the library's tables (default "switchboard")
Flags of dlq replay, health, relay and workflow start:
  --bridge URL            bridge URL (default $SWITCHBOARD_BRIDGE)
Flags of every command that opens a database or a bridge (all but migrate sql):
  --connect-timeout D     bound on opening the database, and on opening the bridge (default 10s)
Flags of health:
  --check-timeout D       bound on the bridge's health check once open (default 2s)

Run 'switchboard <command> -h' for the flags of one command.
`

// Environment variables read when the flag is not given.
const (
	envDB     = "SWITCHBOARD_DB"
	envBridge = "SWITCHBOARD_BRIDGE"
)

// run is the whole program: it returns the exit status (0 ok, 1 error,
// 2 usage error).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "migrate":
		err = runMigrate(ctx, args[1:], stdout)
	case "dlq":
		err = runDLQ(ctx, args[1:], stdout, stderr)
	case "health":
		err = runHealth(ctx, args[1:], stdout)
	case "relay":
		err = runRelay(ctx, args[1:], stdout, stderr)
	case "outbox":
		err = runOutbox(ctx, args[1:], stdout)
	case "schedule":
		err = runSchedule(ctx, args[1:], stdout)
	case "workflow":
		err = runWorkflow(ctx, args[1:], stdout)
	default:
		fmt.Fprintf(stderr, "switchboard: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	return report(err, stdout, stderr)
}

// usageError is a mistake in the command line; help is the usage of the
// command it concerns.
type usageError struct {
	msg  string
	help string
}

func (e *usageError) Error() string { return e.msg }

// helpRequested carries the help text of a command run with -h.
type helpRequested struct{ help string }

func (helpRequested) Error() string { return "help requested" }

// report prints err, with its control characters escaped, and returns the
// exit status for it.
func report(err error, stdout, stderr io.Writer) int {
	var (
		ue *usageError
		hr helpRequested
	)
	switch {
	case err == nil:
		return 0
	case errors.As(err, &hr):
		fmt.Fprint(stdout, hr.help)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "switchboard: %s\n", printable(ue.msg, true))
		if ue.help != "" {
			fmt.Fprintf(stderr, "\n%s", ue.help)
		}
		return 2
	default:
		// An error can quote stored, wire-controlled text (a record's
		// topic, a broker's refusal of it): escaped like dlq show's output.
		fmt.Fprintf(stderr, "switchboard: %s%s\n", printable(err.Error(), true), hint(err))
		return 1
	}
}

// hint suggests the fix for errors an operator is likely to meet.
func hint(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") { // undefined table, schema
		return "\n(the tables are missing: run 'switchboard migrate up' with the same --db and --schema)"
	}
	return ""
}

// command is one subcommand's flag set and help text.
type command struct {
	fs       *flag.FlagSet
	synopsis string
	text     string // the whole help of a command group, when set
}

func newCommand(name, synopsis string) *command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors and help are printed by report
	return &command{fs: fs, synopsis: synopsis}
}

// newGroup is the command of a group of actions (migrate up|status|sql),
// whose help is text: its actions, and the flags they take.
func newGroup(name, text string) *command {
	c := newCommand(name, "")
	c.text = text
	return c
}

// help returns the command's usage with its flags.
func (c *command) help() string {
	if c.text != "" {
		return c.text
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: switchboard %s\n\nFlags:\n", c.synopsis)
	c.fs.SetOutput(&b)
	c.fs.PrintDefaults()
	c.fs.SetOutput(io.Discard)
	return b.String()
}

// parseNoArgs parses args as flags only: a positional argument is a usage
// error naming the command.
func (c *command) parseNoArgs(args []string) error {
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return c.usageErr("%s: unexpected argument %q", c.fs.Name(), pos[0])
	}
	return nil
}

func (c *command) usageErr(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...), help: c.help()}
}

// parse parses flags that may come before, between or after the positional
// arguments, and returns the positional ones.
func (c *command) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, helpRequested{c.help()}
			}
			return nil, c.usageErr("%s: %v", c.fs.Name(), err)
		}
		args = c.fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// splitAction finds the action of the command group g: the first
// positional argument, which flags of g (every flag of every action) may
// precede. It returns the action ("" when there is none) and the other
// arguments, for the action's own command to parse. -h before the action
// asks for g's help.
func (g *command) splitAction(args []string) (action string, rest []string, err error) {
	if err := g.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", nil, helpRequested{g.help()}
		}
		return "", nil, g.usageErr("%s: %v", g.fs.Name(), err)
	}
	i := len(args) - len(g.fs.Args())
	if i == len(args) {
		return "", nil, nil
	}
	return args[i], append(slices.Clip(args[:i]), args[i+1:]...), nil
}

// runAction runs the action of the command group g that args name (see
// splitAction) with the other arguments. missing is the usage error when
// args name none, want the list of actions an unknown one is told.
func (g *command) runAction(ctx context.Context, args []string, stdout io.Writer, actions map[string]func(context.Context, []string, io.Writer) error, missing, want string) error {
	action, rest, err := g.splitAction(args)
	if err != nil {
		return err
	}
	if action == "" {
		return g.usageErr("%s", missing)
	}
	f, ok := actions[action]
	if !ok {
		return g.usageErr("%s: unknown action %q (want %s)", g.fs.Name(), action, want)
	}
	return f(ctx, rest, stdout)
}

// connectTimeoutFlag registers --connect-timeout on fs: the bound on
// opening what, a database or a bridge (connecting, authenticating).
func connectTimeoutFlag(fs *flag.FlagSet, d *time.Duration, what string) {
	fs.DurationVar(d, "connect-timeout", engine.DefaultConnectTimeout, "bound on opening "+what+" (connecting, authenticating)")
}

// bridgeToo says, in a database command's help, that its --connect-timeout
// also bounds opening the bridge.
func bridgeToo(fs *flag.FlagSet) {
	fs.Lookup("connect-timeout").Usage = "bound on opening the database, and then the bridge (connecting, authenticating)"
}

// validateConnectTimeout refuses a --connect-timeout that is not positive.
func validateConnectTimeout(c *command, d time.Duration) error {
	if d <= 0 {
		return c.usageErr("--connect-timeout: must be positive")
	}
	return nil
}

// schemaFlag registers --schema on fs.
func schemaFlag(fs *flag.FlagSet, schema *string) {
	fs.StringVar(schema, "schema", migrations.DefaultSchema, "`name` of the schema holding the library's tables")
}

// validateSchema checks the schema name (a usage error when wrong).
func validateSchema(c *command, schema string) error {
	if err := (migrations.Config{Schema: schema}).Validate(); err != nil {
		return c.usageErr("--schema: %v", err)
	}
	return nil
}

// dbFlags are the flags every database command has.
type dbFlags struct {
	url, schema    string
	connectTimeout time.Duration // also bounds opening the bridge, for the commands that open one
}

func (d *dbFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.url, "db", "", "PostgreSQL `URL` (default $"+envDB+")")
	schemaFlag(fs, &d.schema)
	connectTimeoutFlag(fs, &d.connectTimeout, "the database")
}

// validate checks the flags (a usage error when wrong).
func (d *dbFlags) validate(c *command) error {
	if err := validateSchema(c, d.schema); err != nil {
		return err
	}
	return validateConnectTimeout(c, d.connectTimeout)
}

// open validates the flags and connects to the database, within
// --connect-timeout.
func (d *dbFlags) open(ctx context.Context, c *command) (*sql.DB, error) {
	if err := d.validate(c); err != nil {
		return nil, err
	}
	raw := d.url
	if raw == "" {
		raw = os.Getenv(envDB)
	}
	if raw == "" {
		return nil, c.usageErr("no database: pass --db URL or set $%s", envDB)
	}
	raw, err := postgres.DatabaseURL(raw) // before the driver, whose errors may quote a password
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	db, err := sql.Open("pgx", raw)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", bridge.Redact(raw), err)
	}
	pctx, cancel := context.WithTimeout(ctx, d.connectTimeout)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("cannot reach the database at %s%s: %w", bridge.Redact(raw), timedOut(ctx, pctx, d.connectTimeout), err)
	}
	return db, nil
}

// openBridge opens the bridge at rawURL within timeout (--connect-timeout).
func openBridge(ctx context.Context, rawURL string, timeout time.Duration) (bridge.Bridge, error) {
	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	b, err := bridge.Open(octx, rawURL)
	if err != nil {
		if s := timedOut(ctx, octx, timeout); s != "" {
			return nil, fmt.Errorf("bridge not open%s: %w", s, err)
		}
		return nil, err
	}
	return b, nil
}

// timedOut says " within --connect-timeout D" when octx, derived from ctx
// with that timeout, has reached its deadline but ctx has not ended: the
// error at hand is the timeout's, and the operator should know which flag
// set it. (A driver that turns the deadline into a socket deadline can
// fail an instant before octx's own timer ends it.)
func timedOut(ctx, octx context.Context, timeout time.Duration) string {
	dl, _ := octx.Deadline()
	if ctx.Err() == nil && (octx.Err() != nil || !time.Now().Before(dl)) {
		return fmt.Sprintf(" within --connect-timeout %s", timeout)
	}
	return ""
}

// bridgeURL returns --bridge or $SWITCHBOARD_BRIDGE.
func bridgeURL(c *command, flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if v := os.Getenv(envBridge); v != "" {
		return v, nil
	}
	return "", c.usageErr("no bridge: pass --bridge URL or set $%s", envBridge)
}

// parseDurationDays is time.ParseDuration that also accepts whole days
// ("7d"); negative durations are refused.
func parseDurationDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days >= 0 {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration such as 90m, 24h or 7d", s)
	}
	return d, nil
}

// daysDuration is a duration flag that also takes whole days ("7d"); its
// help shows it as a duration.
type daysDuration time.Duration

func (d *daysDuration) String() string { return time.Duration(*d).String() }

func (d *daysDuration) Set(s string) error {
	v, err := parseDurationDays(s)
	if err != nil {
		return errors.New("not a duration such as 90m, 24h or 7d")
	}
	*d = daysDuration(v)
	return nil
}

// parseTime reads an RFC 3339 time or a duration ago ("24h": now - 24h).
func parseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := parseDurationDays(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2024-05-06T07:08:09Z) nor a duration ago (24h, 7d)", s)
	}
	return now.Add(-d), nil
}
