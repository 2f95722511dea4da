package workflow_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/services/httpgateway"
	"github.com/switchboard-go/switchboard/workflow"
)

// A workflow starts through an HTTP endpoint routed to its StartCommand and
// through StartByName (the CLI's way), and each start is the run Start
// would make: same input checks, idempotent with a run id.
func TestStartCommandAndStartByName(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var local atomic.Int64
	wf := place("routed", &local)
	orders := engine.NewService("wforders", "1")
	if err := workflow.Register(orders, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, _ := startEngine(t, inprocBus(t), append(e.participants(nil), orders)...)
	ctx := engine.WithEngine(t.Context(), eng)

	gw := httpgateway.New(httpgateway.Config{Engine: eng})
	httpgateway.Route(gw, http.MethodPost, "/orders", wf.StartCommand(), httpgateway.Public())
	srv := httptest.NewServer(gw)
	defer srv.Close()
	post := func(body string) (int, string) {
		resp, err := http.Post(srv.URL+"/orders", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := post(`{"run_id": "http-1", "input": {"order": "o-http", "amount": 5}}`)
	if code != http.StatusOK || !strings.Contains(body, `"run_id":"http-1"`) {
		t.Fatalf("POST /orders: %d %s", code, body)
	}
	if code, body := post(`{"run_id": "http-1", "input": {"order": "o-http", "amount": 5}}`); code != http.StatusOK {
		t.Errorf("the same start again: %d %s, want 200 (idempotent)", code, body)
	}
	if code, body := post(`{"input": {"order": "o-http", "amont": 5}}`); code != http.StatusBadRequest || !strings.Contains(body, "amont") {
		t.Errorf("an unknown input field: %d %s, want 400 naming it", code, body)
	}
	code, body = post(`{"input": {"order": "o-http-2", "amount": 1}}`)
	var started workflow.Started
	if code != http.StatusOK || json.Unmarshal([]byte(body), &started) != nil || started.RunID == "" {
		t.Errorf("a start without run id: %d %s, want 200 with a new id", code, body)
	}

	id, err := workflow.StartByName(ctx, wf.String(), json.RawMessage(`{"order": "o-name", "amount": 3}`), "byname-1")
	if err != nil || id != "byname-1" {
		t.Fatalf("StartByName = %q, %v", id, err)
	}
	for _, id := range []string{"http-1", "byname-1", started.RunID} {
		eventually(t, 20*time.Second, "run "+id+" completed", func() bool { return e.run(t, id).status == "completed" })
	}
	if n := e.effects(t, "charge", "o-http"); n != 1 {
		t.Errorf("o-http charged %d times, want 1", n)
	}

	bad := []struct {
		name, workflow, input, runID, want string
	}{
		{"not a workflow name", "orders", `{}`, "", "service>.v<version>.<name>"},
		{"bad version", "wforders.vx.routed", `{}`, "", "version"},
		{"not JSON", wf.String(), `{"order":`, "", "not JSON"},
		{"bad run id", wf.String(), `{}`, "tab\there", "run_id"},
		{"input of another type", wf.String(), `{"order": 3}`, "", "order"},
	}
	for _, c := range bad {
		_, err := workflow.StartByName(ctx, c.workflow, json.RawMessage(c.input), c.runID)
		var we *engine.Error
		if !errors.As(err, &we) || we.Code != http.StatusBadRequest || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: StartByName = %v, want a 400 mentioning %q", c.name, err, c.want)
		}
	}
}
