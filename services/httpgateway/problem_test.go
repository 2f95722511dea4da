package httpgateway_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	_ "github.com/switchboard-go/switchboard/bridge/postgres"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/middleware"
	"github.com/switchboard-go/switchboard/services/httpgateway"
)

// serveLogged serves the test routes on eng with a gateway that logs to the
// returned buffer.
func serveLogged(t *testing.T, eng *engine.Engine) (*httptest.Server, *testenv.LogBuffer) {
	t.Helper()
	logs := &testenv.LogBuffer{}
	gw := httpgateway.New(httpgateway.Config{Engine: eng, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	routes(gw)
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return srv, logs
}

// A 5xx problem carries a fixed detail per reason and the correlation id,
// never the error's own message or details; those go to the log.
func TestServerErrorsCarryNoInternals(t *testing.T) {
	t.Parallel()
	srv, logs := serveLogged(t, newEngine(t))
	const secret = `ERROR: relation "t_0123.bridge_queue" does not exist (SQLSTATE 42P01)`
	for _, c := range []struct {
		code   int
		reason string
	}{
		{http.StatusNotImplemented, ""},
		{http.StatusBadGateway, "bad_reply"},
		{http.StatusServiceUnavailable, "unreachable"},
		{http.StatusServiceUnavailable, "no_handler"},
		{http.StatusServiceUnavailable, "circuit_open"},
		{http.StatusServiceUnavailable, "shutting_down"},
		{http.StatusServiceUnavailable, ""},
		{http.StatusServiceUnavailable, "db down at 10.0.0.7"}, // not a code: dropped
		{http.StatusGatewayTimeout, "timeout"},
		{http.StatusInsufficientStorage, "disk_full"},
	} {
		body, _ := json.Marshal(map[string]any{"code": c.code, "reason": c.reason, "message": secret})
		r := do(t, "POST", srv.URL+"/fail", string(body), "X-Correlation-Id", "corr-5xx")
		if r.status != c.code {
			t.Errorf("%d %q: status %d: %s", c.code, c.reason, r.status, r.body)
			continue
		}
		p := r.problem(t)
		if strings.Contains(string(r.body), "bridge_queue") || strings.Contains(string(r.body), "10.0.0.7") || p.Details["hint"] != nil {
			t.Errorf("%d %q: the problem leaks internals: %s", c.code, c.reason, r.body)
		}
		if p.Detail == "" || p.CorrelationID != "corr-5xx" {
			t.Errorf("%d %q: want a fixed detail and the correlation id: %s", c.code, c.reason, r.body)
		}
		if want := c.reason; strings.Contains(want, " ") {
			if p.Reason != "" {
				t.Errorf("%d %q: reason %q kept", c.code, c.reason, p.Reason)
			}
		} else if p.Reason != want {
			t.Errorf("%d %q: reason %q", c.code, c.reason, p.Reason)
		}
	}
	if !strings.Contains(logs.String(), "SQLSTATE 42P01") || !strings.Contains(logs.String(), "corr-5xx") {
		t.Errorf("the log lacks the error and its correlation id:\n%s", logs)
	}
	// Two reasons, two details; one reason, one detail.
	detail := func(code int, reason string) string {
		body, _ := json.Marshal(map[string]any{"code": code, "reason": reason, "message": strings.Repeat("x", code)})
		return do(t, "POST", srv.URL+"/fail", string(body)).problem(t).Detail
	}
	if a, b := detail(503, "unreachable"), detail(503, "no_handler"); a == b {
		t.Errorf("unreachable and no_handler share the detail %q", a)
	}
	if a, b := detail(503, "unreachable"), detail(503, "unreachable"); a != b {
		t.Errorf("one reason, two details: %q, %q", a, b)
	}
}

// The audit's case: a PostgreSQL bridge whose tables are gone answered 503
// with the driver's error, naming the schema and the topic.
func TestServerErrorOnPostgresCarriesNoInternals(t *testing.T) {
	db := testenv.PostgresDB(t)
	schema := testenv.Schema(t, db)
	u, err := url.Parse(testenv.URL(t, testenv.Postgres))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("schema", schema)
	u.RawQuery = q.Encode()
	eng, err := engine.New(engine.Config{
		Bridge:      u.String(),
		Logger:      slog.New(slog.DiscardHandler),
		Reliability: engine.Reliability{CallBreaker: middleware.BreakerPolicy{Disabled: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Register(acctService()); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Stop(context.Background()) })
	srv, logs := serveLogged(t, eng)
	if r := do(t, "POST", srv.URL+"/public/echo", `{"name":"x"}`); r.status != http.StatusOK {
		t.Fatalf("before: %d %s", r.status, r.body)
	}
	dropSchema(t, db, schema)
	r := do(t, "POST", srv.URL+"/public/echo", `{"name":"x"}`)
	if r.status < 500 {
		t.Fatalf("without tables: %d %s", r.status, r.body)
	}
	p := r.problem(t)
	for _, leak := range []string{schema, "acct", "SQLSTATE", "bridge_queue", "postgres", u.Host} {
		if strings.Contains(string(r.body), leak) {
			t.Errorf("the problem names %q: %s", leak, r.body)
		}
	}
	if !strings.Contains(logs.String(), schema) || !strings.Contains(logs.String(), p.CorrelationID) {
		t.Errorf("the log lacks the error or the correlation id %s:\n%s", p.CorrelationID, logs)
	}
}

func dropSchema(t *testing.T, db *sql.DB, schema string) {
	t.Helper()
	if _, err := db.ExecContext(t.Context(), `DROP SCHEMA "`+schema+`" CASCADE`); err != nil {
		t.Fatal(err)
	}
}
