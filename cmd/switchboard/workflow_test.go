package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/migrations"
)

// `workflow list` lists runs with filters, `show` prints a run and its
// steps, `cancel` and `retry` change runs, with exit status 1 for a run
// not found or finished and 2 for a usage error.
func TestWorkflowListShowCancelRetry(t *testing.T) {
	e := newEnv(t)
	if _, err := migrations.Up(context.Background(), e.db, migrations.Config{Schema: e.schema}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Exec(`INSERT INTO "` + e.schema + `".workflow_runs (id, workflow, status, input, output, error, created_at, finished_at, wake_at) VALUES
		('run-old', 'orders.v1.place', 'completed', '{"order":"o-1"}', '{"ok":true}', NULL, now() - interval '2 minutes', now(), NULL),
		('run-bad', 'orders.v1.place', 'failed', '{"order":"o-2"}', NULL, '{"code":422,"reason":"declined","message":"card declined"}', now() - interval '1 minute', now(), NULL),
		('run-ctl` + "\x1b" + `]0;x', 'billing.v1.refund', 'running', '{}', NULL, NULL, now(), NULL, now() + interval '1 hour');
		INSERT INTO "` + e.schema + `".workflow_steps (run_id, seq, kind, name, result, error, attempts, started_at, finished_at) VALUES
		('run-bad', 1, 'invoke', 'payments.v1.charge', '{"id":"p-1"}', NULL, 1, now() - interval '1500 milliseconds', now() - interval '1250 milliseconds'),
		('run-bad', 2, 'invoke', 'stock.v1.reserve', NULL, '{"code":422,"reason":"declined","message":"out of stock"}', 5, now() - interval '1 second', now())`); err != nil {
		t.Fatal(err)
	}
	wf := func(args ...string) (int, string, string) {
		return cli(t, append(append([]string{"workflow"}, args...), e.dbArgs()...)...)
	}

	code, out, errOut := wf("list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "ID") || !strings.HasPrefix(lines[1], `run-ctl\x1b]0;x`) ||
		!strings.HasPrefix(lines[2], "run-bad") || !strings.Contains(lines[2], "422 Unprocessable Entity (declined): card declined") ||
		!strings.HasPrefix(lines[3], "run-old") || strings.Contains(out, "\x1b") {
		t.Errorf("list: exit %d, %q %q", code, out, errOut)
	}
	var list []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Error  *struct {
			Code   int    `json:"code"`
			Reason string `json:"reason"`
		} `json:"error"`
	}
	if code, out, _ := wf("list", "--json", "--workflow", "orders.v1.place", "--status", "failed"); code != 0 || json.Unmarshal([]byte(out), &list) != nil ||
		len(list) != 1 || list[0].ID != "run-bad" || list[0].Error == nil || list[0].Error.Reason != "declined" {
		t.Errorf("list --json --workflow --status: exit %d, %q", code, out)
	}
	if code, out, _ := wf("--limit", "1", "list", "--json"); code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].ID != "run-ctl\x1b]0;x" {
		t.Errorf("--limit 1 list --json: exit %d, %q", code, out)
	}

	code, out, errOut = wf("show", "run-bad")
	if code != 0 || !strings.Contains(out, "Status:    failed") || !strings.Contains(out, `"order": "o-2"`) || !strings.Contains(out, "Output: none") || !strings.Contains(out, "Owner:     -") ||
		!strings.Contains(out, "Steps (2):") || !strings.Contains(out, "SEQ  KIND    NAME                ATTEMPTS  STARTED") {
		t.Errorf("show: exit %d, %q %q", code, out, errOut)
	}
	if i := strings.Index(out, "SEQ"); i < 0 || !strings.Contains(out[i:], "250ms") || !strings.Contains(out[i:], "payments.v1.charge") ||
		!strings.Contains(out[i:], "5         ") || !strings.Contains(out[i:], "1s") || !strings.Contains(out[i:], "(declined): out of stock") {
		t.Errorf("show's steps: %q", out)
	}
	var run struct {
		ID    string `json:"id"`
		Input struct {
			Order string `json:"order"`
		} `json:"input"`
		Steps []struct {
			Seq      int    `json:"seq"`
			Name     string `json:"name"`
			Attempts int    `json:"attempts"`
			Result   struct {
				ID string `json:"id"`
			} `json:"result"`
		} `json:"steps"`
	}
	if code, out, _ := wf("show", "--json", "run-bad"); code != 0 || json.Unmarshal([]byte(out), &run) != nil || run.Input.Order != "o-2" ||
		len(run.Steps) != 2 || run.Steps[0].Name != "payments.v1.charge" || run.Steps[0].Result.ID != "p-1" || run.Steps[1].Attempts != 5 {
		t.Errorf("show --json: exit %d, %q (%+v)", code, out, run)
	}
	if code, out, errOut := wf("show", "nope"); code != 1 || out != "" || !strings.Contains(errOut, `run "nope"`) || !strings.Contains(errOut, "no such workflow run") {
		t.Errorf("show nope: exit %d, %q %q", code, out, errOut)
	}

	if code, out, errOut := wf("cancel", "run-ctl\x1b]0;x"); code != 0 || !strings.Contains(out, "cancellation requested") || strings.Contains(out, "\x1b") {
		t.Errorf("cancel: exit %d, %q %q", code, out, errOut)
	}
	if code, out, _ := wf("list", "--status", "running"); code != 0 || !strings.Contains(out, "running (cancel requested)") {
		t.Errorf("list after cancel: exit %d, %q", code, out)
	}
	if code, _, errOut := wf("cancel", "run-old"); code != 1 || !strings.Contains(errOut, "is completed") || !strings.Contains(errOut, "run_finished") {
		t.Errorf("cancel a completed run: exit %d, %q", code, errOut)
	}

	if code, out, errOut := wf("retry", "run-bad"); code != 0 || !strings.Contains(out, "resumed") {
		t.Errorf("retry: exit %d, %q %q", code, out, errOut)
	}
	if code, out, _ := wf("show", "run-bad"); code != 0 || !strings.Contains(out, "Status:    running") || !strings.Contains(out, "Steps (1):") {
		t.Errorf("show after retry: exit %d, %q", code, out)
	}
	if code, _, errOut := wf("retry", "run-bad"); code != 1 || !strings.Contains(errOut, "is running") {
		t.Errorf("retry a running run: exit %d, %q", code, errOut)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "want 'workflow start NAME JSON', 'workflow list'"},
		{[]string{"frob"}, `unknown action "frob"`},
		{[]string{"show"}, "exactly one run ID"},
		{[]string{"show", "a", "b"}, "exactly one run ID"},
		{[]string{"cancel"}, "exactly one run ID"},
		{[]string{"retry"}, "exactly one run ID"},
		{[]string{"list", "extra"}, `unexpected argument "extra"`},
		{[]string{"list", "--limit", "0"}, "--limit: want 1 to 1000"},
		{[]string{"list", "--limit", "1001"}, "--limit: want 1 to 1000"},
		{[]string{"list", "--status", "paused"}, `--status: "paused"`},
		{[]string{"cancel", "x", "--json"}, "flag provided but not defined: -json"},
	} {
		code, out, errOut := wf(c.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, c.want) {
			t.Errorf("workflow %v: exit %d, %q %q; want exit 2 and %q", c.args, code, out, errOut, c.want)
		}
	}
	if code, _, errOut := cli(t, "workflow", "list", "--db", e.dbURL, "--schema", "bad schema"); code != 2 || !strings.Contains(errOut, "--schema") {
		t.Errorf("list --schema 'bad schema': exit %d, %q", code, errOut)
	}
	if code, _, errOut := cli(t, "workflow", "list"); code != 2 || !strings.Contains(errOut, "pass --db URL or set $SWITCHBOARD_DB") {
		t.Errorf("list without a database: exit %d, %q", code, errOut)
	}
	// The tables missing: the hint to migrate.
	if code, _, errOut := cli(t, "workflow", "list", "--db", e.dbURL, "--schema", e.schema+"_none"); code != 1 || !strings.Contains(errOut, "switchboard migrate up") {
		t.Errorf("list without tables: exit %d, %q", code, errOut)
	}
}

func TestWorkflowHelp(t *testing.T) {
	t.Setenv(envDB, "")
	for _, c := range []struct {
		args    []string
		want    []string
		notWant []string
	}{
		{[]string{"-h"}, []string{"workflow list", "workflow show ID", "workflow cancel ID", "workflow retry ID", "outbox, schedule and workflow"}, nil},
		{[]string{"workflow", "-h"}, []string{"Usage: switchboard workflow start|list|show|cancel|retry", "--status S", "--workflow NAME", "(default 10s)"}, []string{"dlq list"}},
		{[]string{"workflow", "list", "-h"}, []string{"Usage: switchboard workflow list ", "-limit N", "-status status", "-workflow name", "-json", "-connect-timeout"}, []string{"workflow show"}},
		{[]string{"workflow", "show", "-h"}, []string{"Usage: switchboard workflow show ID", "-json"}, []string{"-limit", "-status"}},
		{[]string{"workflow", "cancel", "-h"}, []string{"Usage: switchboard workflow cancel ID", "-db URL"}, []string{"-json", "-limit"}},
		{[]string{"workflow", "retry", "-h"}, []string{"Usage: switchboard workflow retry ID", "-db URL"}, []string{"-json", "-limit"}},
	} {
		code, out, errOut := cli(t, c.args...)
		if code != 0 || errOut != "" {
			t.Errorf("%v: exit %d, stderr %q", c.args, code, errOut)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: the help lacks %q:\n%s", c.args, w, out)
			}
		}
		for _, w := range c.notWant {
			if strings.Contains(out, w) {
				t.Errorf("%v: the help shows %q:\n%s", c.args, w, out)
			}
		}
	}
}
