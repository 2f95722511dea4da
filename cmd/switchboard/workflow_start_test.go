package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	_ "github.com/switchboard-go/switchboard/bridge/nats"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/workflow"
)

type greetIn struct {
	Name string `json:"name"`
}

var greet = workflow.New("wfcli", "1", "greet", func(wf workflow.Context, in greetIn) (string, error) {
	return workflow.Step(wf, "greet", func(context.Context) (string, error) { return "hello " + in.Name, nil })
})

// `workflow start` starts a run through the bridge the workflow's service
// listens on (idempotently with --run-id); the service's answer to a bad
// input, and usage errors, are reported with their exit status.
func TestWorkflowStart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := migrations.Up(ctx, e.db, migrations.Config{Schema: e.schema}); err != nil {
		t.Fatal(err)
	}
	natsURL := testenv.URL(t, testenv.NATS)
	svc := engine.NewService("wfcli", "1")
	if err := workflow.Register(svc, &workflow.Store{DB: e.db, Schema: e.schema}, greet); err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.Config{Bridge: natsURL, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Register(svc); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = eng.Stop(context.Background()) }()

	for range 2 { // the second start is the same run
		code, out, errOut := cli(t, "workflow", "start", "--bridge", natsURL, "--run-id", "cli-1", "wfcli.v1.greet", `{"name": "cli"}`)
		if code != 0 || strings.TrimSpace(out) != "run cli-1 started" {
			t.Fatalf("start: exit %d, %q %q", code, out, errOut)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := workflow.Show(ctx, e.db, e.schema, "cli-1")
		if err == nil && r.Status == "completed" {
			if string(r.Output) != `"hello cli"` {
				t.Errorf("output %s", r.Output)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run cli-1 not completed: %+v, %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"wfcli.v1.greet", `{"nme": "x"}`}, 1, "nme"},
		{[]string{"wfcli.v1.greet", `{"name":`}, 2, "not JSON"},
		{[]string{"wfcli.greet", `{}`}, 1, "<service>.v<version>.<name>"},
		{[]string{"wfcli.v1.greet"}, 2, "want a workflow NAME and its input"},
	}
	for _, c := range cases {
		code, out, errOut := cli(t, append([]string{"workflow", "start", "--bridge", natsURL}, c.args...)...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("start %q: exit %d, %q %q; want exit %d mentioning %q", c.args, code, out, errOut, c.code, c.want)
		}
	}
	if code, _, errOut := cli(t, "workflow", "start", "wfcli.v1.greet", `{}`); code != 2 || !strings.Contains(errOut, "no bridge") {
		t.Errorf("start without a bridge: exit %d, %q", code, errOut)
	}
}
