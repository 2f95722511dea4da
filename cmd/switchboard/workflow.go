package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// workflowUsage is the help of `switchboard workflow -h`.
const workflowUsage = `Usage: switchboard workflow start|list|show|cancel|retry [arguments] [flags]

Actions:
  workflow start NAME JSON  start a run of workflow NAME (<service>.v<version>.<name>)
                          with JSON as its input, through the bridge; print its id
  workflow list           list workflow runs, the newest first
  workflow show ID        print a run and its steps: kind, name, attempts, timings, errors
  workflow cancel ID      ask a run to stop: its compensations run and it ends cancelled
  workflow retry ID       resume a stopped or failed run where it stopped

Flags of every action:
  --db URL                PostgreSQL URL (default $SWITCHBOARD_DB)
  --schema NAME           schema of the library's tables (default "switchboard")
  --connect-timeout D     bound on connecting to the database (default 10s)
Flags of workflow start (instead of --db, --schema):
  --bridge URL            the bridge the workflow's service listens on (default $SWITCHBOARD_BRIDGE)
  --run-id ID             the run's id (default: a random UUID); starting again with it is the same run
Flags of workflow list and workflow show:
  --json                  print JSON
Flags of workflow list:
  --limit N               list N runs at most
  --status S              only the runs in status S (running, completed, failed, cancelled, stopped)
  --workflow NAME         only the runs of the workflow NAME (<service>.v<version>.<name>)

Run 'switchboard workflow <action> -h' for the flags of one action.
`

// runWorkflow is `switchboard workflow list|show|cancel|retry`.
func runWorkflow(ctx context.Context, args []string, stdout io.Writer) error {
	actions := map[string]func(context.Context, []string, io.Writer) error{
		"start": workflowStart, "list": workflowList, "show": workflowShow, "cancel": workflowCancel, "retry": workflowRetry,
	}
	g := newGroup("workflow", workflowUsage)
	var (
		d              dbFlags
		asJSON         bool
		limit          int
		status, wfName string
	)
	// Every action's flags: they may come before the action.
	d.register(g.fs)
	g.fs.BoolVar(&asJSON, "json", false, "")
	g.fs.IntVar(&limit, "limit", 0, "")
	g.fs.StringVar(&status, "status", "", "")
	g.fs.StringVar(&wfName, "workflow", "", "")
	g.fs.String("bridge", "", "")
	g.fs.String("run-id", "", "")
	return g.runAction(ctx, args, stdout, actions, "workflow: want 'workflow start NAME JSON', 'workflow list', 'workflow show ID', 'workflow cancel ID' or 'workflow retry ID'", "start, list, show, cancel or retry")
}

func workflowStart(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("workflow start", "workflow start NAME JSON [--run-id ID] [--bridge URL] [--connect-timeout D]\n\nStarts a run of workflow NAME (<service>.v<version>.<name>, as workflow list shows it) with JSON as its input, through the bridge its service listens on, and prints the run's id. The service checks the input.")
	var (
		raw, runID string
		timeout    time.Duration
	)
	c.fs.StringVar(&raw, "bridge", "", "bridge `URL` of the workflow's service (default $"+envBridge+")")
	c.fs.StringVar(&runID, "run-id", "", "the run's `id` (default: a random UUID); starting again with it is the same run")
	c.fs.DurationVar(&timeout, "connect-timeout", 10*time.Second, "bound on opening the bridge, and on the start")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return c.usageErr("workflow start: want a workflow NAME and its input as JSON")
	}
	if err := validateConnectTimeout(c, timeout); err != nil {
		return err
	}
	if !json.Valid([]byte(pos[1])) {
		return c.usageErr("workflow start: the input is not JSON")
	}
	rawURL, err := bridgeURL(c, raw)
	if err != nil {
		return err
	}
	eng, err := engine.New(engine.Config{Bridge: rawURL, ConnectTimeout: timeout, CallTimeout: timeout, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	if err := eng.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = eng.Stop(context.WithoutCancel(ctx)) }()
	id, err := workflow.StartByName(engine.WithEngine(ctx, eng), pos[0], json.RawMessage(pos[1]), runID)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "run %s started\n", oneLine(id))
	return err
}

func workflowList(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("workflow list", "workflow list [--status S] [--workflow NAME] [--limit N] [--json] [--db URL] [--schema NAME] [--connect-timeout D]\n\nLists workflow runs, the newest first.")
	var (
		d      dbFlags
		asJSON bool
		f      workflow.Filter
	)
	d.register(c.fs)
	c.fs.BoolVar(&asJSON, "json", false, "print the runs as JSON")
	c.fs.IntVar(&f.Limit, "limit", 100, fmt.Sprintf("list `N` runs at most (up to %d)", workflow.MaxListed))
	c.fs.StringVar(&f.Status, "status", "", "only the runs in `status` running, completed, failed, cancelled or stopped")
	c.fs.StringVar(&f.Workflow, "workflow", "", "only the runs of the workflow `name`d (<service>.v<version>.<name>)")
	if err := c.parseNoArgs(args); err != nil {
		return err
	}
	if f.Limit <= 0 || f.Limit > workflow.MaxListed {
		return c.usageErr("--limit: want 1 to %d", workflow.MaxListed)
	}
	switch f.Status {
	case "", "running", "completed", "failed", "cancelled", "stopped":
	default:
		return c.usageErr("--status: %q is not one of running, completed, failed, cancelled, stopped", f.Status)
	}
	db, err := d.open(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	runs, err := workflow.List(ctx, db, d.schema, f)
	if err != nil {
		return err
	}
	if asJSON {
		list := make([]runJSON, len(runs))
		for i, r := range runs {
			list[i] = toRunJSON(r)
		}
		return writeJSON(stdout, list) // ids, names and errors may hold controls
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tWORKFLOW\tSTATUS\tCREATED\tUPDATED\tCLAIMS\tERROR")
	for _, r := range runs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", oneLine(r.ID), oneLine(r.Workflow), runStatus(r),
			r.CreatedAt.UTC().Format(time.RFC3339), r.UpdatedAt.UTC().Format(time.RFC3339), r.Claims, truncate(errorText(r.Error), errorWidth))
	}
	return tw.Flush()
}

func workflowShow(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("workflow show", "workflow show ID [--json] [--db URL] [--schema NAME] [--connect-timeout D]\n\nPrints a run (status, input, output, error) and its steps: kind, name, attempts, start, duration, error.")
	var (
		d      dbFlags
		asJSON bool
	)
	d.register(c.fs)
	c.fs.BoolVar(&asJSON, "json", false, "print the run and its steps as JSON")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return c.usageErr("workflow show: want exactly one run ID")
	}
	db, err := d.open(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	r, err := workflow.Show(ctx, db, d.schema, pos[0])
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(stdout, toRunJSON(r))
	}
	return printRun(stdout, r)
}

func workflowCancel(ctx context.Context, args []string, stdout io.Writer) error {
	return changeRun(ctx, args, stdout, "cancel", "Asks a running or stopped run to stop: a runner runs its compensations, in reverse order, and ends it cancelled.",
		workflow.Cancel, "cancellation requested; a runner compensates it and ends it cancelled")
}

func workflowRetry(ctx context.Context, args []string, stdout io.Writer) error {
	return changeRun(ctx, args, stdout, "retry", "Resumes a stopped or failed run where it stopped: its failed steps run again.\nOnce a compensation ran or was sent to its participant, only the compensations\nnot sent run again; a failed run with none left cannot be retried.",
		workflow.Retry, "resumed; a runner continues it where it stopped")
}

// changeRun is `workflow cancel|retry ID`: change applied to one run, done
// printed after its id.
func changeRun(ctx context.Context, args []string, stdout io.Writer, action, help string,
	change func(ctx context.Context, db *sql.DB, schema, id string) error, done string) error {
	c := newCommand("workflow "+action, "workflow "+action+" ID [--db URL] [--schema NAME] [--connect-timeout D]\n\n"+help)
	var d dbFlags
	d.register(c.fs)
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return c.usageErr("workflow %s: want exactly one run ID", action)
	}
	db, err := d.open(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := change(ctx, db, d.schema, pos[0]); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "run %s: %s\n", oneLine(pos[0]), done)
	return err
}

// runStatus is a run's status, with a pending cancellation.
func runStatus(r workflow.Run) string {
	if r.CancelRequested && r.Status == "running" {
		return "running (cancel requested)"
	}
	return oneLine(r.Status)
}

// errorText is a stored error on one line, "" for none.
func errorText(e *engine.Error) string {
	if e == nil {
		return ""
	}
	return oneLine(e.Error())
}

// printRun writes a run and a table of its steps for a human.
func printRun(w io.Writer, r workflow.Run) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	timeOrDash := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	orDash := func(s string) string {
		if s == "" {
			return "-"
		}
		return oneLine(s)
	}
	awaiting := ""
	if r.AwaitingEvent != "" {
		awaiting = r.AwaitingEvent + "/" + r.AwaitingKey
	}
	for _, f := range [][2]string{
		{"ID", oneLine(r.ID)}, {"Workflow", oneLine(r.Workflow)}, {"Status", runStatus(r)},
		{"Created", r.CreatedAt.UTC().Format(time.RFC3339Nano)}, {"Updated", r.UpdatedAt.UTC().Format(time.RFC3339Nano)},
		{"Finished", timeOrDash(r.FinishedAt)}, {"Wakes at", timeOrDash(r.WakeAt)},
		{"Awaiting", orDash(awaiting)}, {"Claims", fmt.Sprint(r.Claims)}, {"Owner", orDash(r.Owner)},
		{"Error", orDash(errorText(r.Error))},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], f[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range []struct {
		name string
		v    json.RawMessage
	}{{"Input", r.Input}, {"Output", r.Output}} {
		var pretty bytes.Buffer
		if p.v == nil || json.Indent(&pretty, p.v, "  ", "  ") != nil {
			fmt.Fprintf(w, "\n%s: none\n", p.name)
			continue
		}
		// JSON strings may hold C1 and format characters raw.
		fmt.Fprintf(w, "\n%s (%d bytes):\n  %s\n", p.name, len(p.v), printable(pretty.String(), true))
	}
	fmt.Fprintf(w, "\nSteps (%d):\n", len(r.Steps))
	if len(r.Steps) > 0 && r.Steps[0].Seq > 1 {
		fmt.Fprintf(w, "(the last %d; the steps before %d are not shown)\n", len(r.Steps), r.Steps[0].Seq)
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tKIND\tNAME\tATTEMPTS\tSTARTED\tDURATION\tERROR")
	for _, s := range r.Steps {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", s.Seq, oneLine(s.Kind), oneLine(s.Name), s.Attempts,
			s.StartedAt.UTC().Format(time.RFC3339Nano), s.FinishedAt.Sub(s.StartedAt).Round(time.Millisecond), truncate(errorText(s.Error), errorWidth))
	}
	return tw.Flush()
}

// runJSON is a run as `workflow list --json` and `workflow show --json`
// print it.
type runJSON struct {
	ID              string          `json:"id"`
	Workflow        string          `json:"workflow"`
	Status          string          `json:"status"`
	CancelRequested bool            `json:"cancel_requested"`
	Input           json.RawMessage `json:"input,omitempty"`
	Output          json.RawMessage `json:"output,omitempty"`
	Error           *engine.Error   `json:"error,omitempty"`
	CreatedAt       time.Time       `json:"created_at"`
	UpdatedAt       time.Time       `json:"updated_at"`
	FinishedAt      *time.Time      `json:"finished_at,omitempty"`
	WakeAt          *time.Time      `json:"wake_at,omitempty"`
	AwaitingEvent   string          `json:"awaiting_event,omitempty"`
	AwaitingKey     string          `json:"awaiting_key,omitempty"`
	Claims          int             `json:"claims"`
	Owner           string          `json:"owner,omitempty"`
	Steps           []stepJSON      `json:"steps,omitempty"`
}

type stepJSON struct {
	Seq        int             `json:"seq"`
	Kind       string          `json:"kind"`
	Name       string          `json:"name"`
	Attempts   int             `json:"attempts"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      *engine.Error   `json:"error,omitempty"`
	DueAt      *time.Time      `json:"due_at,omitempty"`
	StartedAt  time.Time       `json:"started_at"`
	FinishedAt time.Time       `json:"finished_at"`
}

func toRunJSON(r workflow.Run) runJSON {
	out := runJSON{
		ID: r.ID, Workflow: r.Workflow, Status: r.Status, CancelRequested: r.CancelRequested,
		Input: r.Input, Output: r.Output, Error: r.Error, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		FinishedAt: r.FinishedAt, WakeAt: r.WakeAt, AwaitingEvent: r.AwaitingEvent, AwaitingKey: r.AwaitingKey,
		Claims: r.Claims, Owner: r.Owner,
	}
	for _, s := range r.Steps {
		out.Steps = append(out.Steps, stepJSON{Seq: s.Seq, Kind: s.Kind, Name: s.Name, Attempts: s.Attempts,
			Result: s.Result, Error: s.Error, DueAt: s.DueAt, StartedAt: s.StartedAt, FinishedAt: s.FinishedAt})
	}
	return out
}
