package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/deadletter/pgstore"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/middleware"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/services/health"
)

// cli runs the program in-process.
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

// env is a database URL and a fresh schema, dropped when the test ends.
type env struct {
	dbURL, schema string
	db            *sql.DB
}

func newEnv(t *testing.T) env {
	t.Helper()
	t.Setenv(envDB, "")
	t.Setenv(envBridge, "")
	raw := testenv.URL(t, testenv.Postgres)
	db := testenv.PostgresDB(t)
	schema := testenv.Schema(t, db)
	return env{dbURL: raw, schema: schema, db: db}
}

// dbArgs are the database flags for e.
func (e env) dbArgs() []string { return []string{"--db", e.dbURL, "--schema", e.schema} }

// bridgeURL is a postgres:// bridge URL on e's schema.
func (e env) bridgeURL(t *testing.T) string {
	u, err := url.Parse(e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("schema", e.schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// store migrates e's schema and returns its dead-letter store.
func (e env) store(t *testing.T) *pgstore.Store {
	t.Helper()
	if _, err := migrations.Up(context.Background(), e.db, migrations.Config{Schema: e.schema}); err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.New(e.db, e.schema)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func record(svc string, i int, lastFailed time.Time) deadletter.Record {
	return deadletter.Record{
		MessageID: fmt.Sprintf("%s-msg-%d", svc, i), Topic: svc + ".v1.work", Service: svc + ".v1", Handler: "work",
		Group: svc + ".v1", Payload: []byte(fmt.Sprintf(`{"n":%d,"name":"x"}`, i)),
		Metadata: map[string]string{"correlation_id": "corr-" + svc, "n": fmt.Sprint(i)},
		Error:    fmt.Sprintf("boom %d: %s", i, strings.Repeat("very long error text ", 10)), ErrorKind: deadletter.KindExhausted,
		Attempts: 5, FirstFailedAt: lastFailed.Add(-time.Minute), LastFailedAt: lastFailed,
	}
}

func TestUsage(t *testing.T) {
	t.Setenv(envDB, "")
	t.Setenv(envBridge, "")
	code, out, _ := cli(t, "-h")
	if code != 0 {
		t.Errorf("-h: exit %d", code)
	}
	for _, cmd := range []string{"migrate up", "migrate status", "migrate sql", "dlq list", "dlq show", "dlq replay", "dlq purge", "health"} {
		if !strings.Contains(out, cmd) {
			t.Errorf("usage does not list %q:\n%s", cmd, out)
		}
	}
	if code, _, errOut := cli(t); code != 2 || !strings.Contains(errOut, "Usage:") {
		t.Errorf("no arguments: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := cli(t, "frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) || !strings.Contains(errOut, "dlq list") {
		t.Errorf("unknown command: exit %d, stderr %q", code, errOut)
	}
	for _, h := range []string{"-h", "-help", "--help"} {
		code, out, _ := cli(t, "dlq", h)
		if code != 0 || !strings.Contains(out, "Usage: switchboard dlq ") || strings.Contains(out, "migrate up") {
			t.Errorf("dlq %s: exit %d, want the dlq usage, got:\n%s", h, code, out)
		}
		for _, action := range []string{"dlq list", "dlq show ID", "dlq replay ID", "dlq replay --all", "dlq purge"} {
			if !strings.Contains(out, action) {
				t.Errorf("dlq %s does not list %q:\n%s", h, action, out)
			}
		}
	}
	if code, out, _ := cli(t, "dlq", "list", "-h"); code != 0 || !strings.Contains(out, "-since") {
		t.Errorf("dlq list -h: exit %d, %q", code, out)
	}
	// relay -h prints the relay's own flags; --retention reads as a
	// duration, --db as the URL Relay.DatabaseURL takes.
	if code, out, _ := cli(t, "relay", "-h"); code != 0 || !strings.Contains(out, "Usage: switchboard relay ") || strings.Contains(out, "migrate up") ||
		!strings.Contains(out, "-retention duration") || !strings.Contains(out, "-db URL") || !strings.Contains(out, "-batch N") {
		t.Errorf("relay -h: exit %d, want the relay's usage, got:\n%s", code, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate"}, "want one of up, status, sql"},
		{[]string{"migrate", "up", "extra"}, `unexpected argument "extra"`},
		{[]string{"migrate", "sql", "--db", "postgres://h/db"}, "flag provided but not defined: -db"},
		{[]string{"migrate", "--bogus", "up"}, "flag provided but not defined: -bogus"},
		{[]string{"migrate", "up", "--connect-timeout", "0s"}, "--connect-timeout: must be positive"},
		{[]string{"dlq", "list", "--connect-timeout", "-1s"}, "--connect-timeout: must be positive"},
		{[]string{"health", "--bridge", "nats://h", "--connect-timeout", "0"}, "--connect-timeout: must be positive"},
		{[]string{"health", "--bridge", "nats://h", "--check-timeout", "0"}, "--check-timeout: must be positive"},
		{[]string{"dlq", "replay", "id", "--timeout", "3s"}, "flag provided but not defined: -timeout"},
		{[]string{"migrate", "sideways"}, `unknown action "sideways"`},
		{[]string{"migrate", "up"}, "pass --db URL or set $SWITCHBOARD_DB"},
		{[]string{"migrate", "sql", "--schema", `x"y`}, "--schema"},
		{[]string{"dlq"}, "want one of list"},
		{[]string{"dlq", "peek"}, `unknown action "peek"`},
		{[]string{"dlq", "list"}, "pass --db URL or set $SWITCHBOARD_DB"},
		{[]string{"dlq", "list", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"dlq", "list", "--since", "yesterday"}, "--since"},
		{[]string{"dlq", "list", "--limit", "0"}, "--limit"},
		{[]string{"dlq", "list", "--after", "nonsense"}, "--after"},
		{[]string{"dlq", "show"}, "exactly one record ID"},
		{[]string{"dlq", "replay"}, "want one record ID, or --all"},
		{[]string{"dlq", "replay", "some-id", "--all"}, "not both"},
		{[]string{"dlq", "replay", "some-id", "--service", "x"}, "filters go with --all"},
		{[]string{"dlq", "replay", "some-id"}, "pass --bridge URL or set $SWITCHBOARD_BRIDGE"},
		{[]string{"dlq", "purge"}, "or --all"},
		{[]string{"dlq", "purge", "--older-than", "30d", "--yes"}, "or --all"},
		{[]string{"dlq", "purge", "--all", "--service", "x"}, "not both"},
		{[]string{"dlq", "purge", "--all", "--older-than", "1h", "--until", "2h"}, "not both"},
		{[]string{"dlq", "purge", "--all", "--older-than", "-5h"}, "--older-than"},
		{[]string{"health"}, "pass --bridge URL or set $SWITCHBOARD_BRIDGE"},
	} {
		code, out, errOut := cli(t, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) || out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", c.args, code, out, errOut, c.want)
		}
	}
}

// TestActionHelp: `switchboard <group> <action> -h` prints that action's
// usage and flags, `switchboard <group> -h` the group's; every command that
// opens a database or a bridge has --connect-timeout, listed in the
// top-level usage too.
func TestActionHelp(t *testing.T) {
	t.Setenv(envDB, "")
	t.Setenv(envBridge, "")
	for _, c := range []struct {
		args    []string
		want    []string // in the help
		notWant []string
	}{
		{[]string{"-h"}, []string{
			"--connect-timeout D     bound on opening the database, and on opening the bridge (default " + engine.DefaultConnectTimeout.String() + ")",
			"--check-timeout D       bound on the bridge's health check once open (default " + health.DefaultCheckTimeout.String() + ")",
		}, nil},
		{[]string{"migrate", "-h"}, []string{"(default " + engine.DefaultConnectTimeout.String() + ")"}, nil},
		{[]string{"outbox", "-h"}, []string{"(default " + engine.DefaultConnectTimeout.String() + ")"}, nil},
		{[]string{"dlq", "-h"}, []string{"(default " + engine.DefaultConnectTimeout.String() + ")"}, nil},
		{[]string{"migrate", "-h"}, []string{"migrate up ", "migrate status ", "migrate sql ", "--connect-timeout"}, []string{"dlq list"}},
		{[]string{"migrate", "up", "-h"}, []string{"Usage: switchboard migrate up ", "-db URL", "-connect-timeout duration", "(default 10s)"}, []string{"migrate status", "-json"}},
		{[]string{"migrate", "--schema", "s", "status", "-h"}, []string{"Usage: switchboard migrate status ", "-db URL", "-connect-timeout"}, []string{"migrate up"}},
		{[]string{"migrate", "sql", "-h"}, []string{"Usage: switchboard migrate sql ", "-schema name"}, []string{"-db", "-connect-timeout", "migrate up"}},
		{[]string{"outbox", "-h"}, []string{"outbox stats ", "outbox failed ", "outbox retry ", "outbox discard "}, []string{"dlq list"}},
		{[]string{"outbox", "stats", "-h"}, []string{"Usage: switchboard outbox stats ", "-json", "-connect-timeout"}, []string{"-limit", "-all", "outbox failed"}},
		{[]string{"outbox", "failed", "--json", "-h"}, []string{"Usage: switchboard outbox failed ", "-limit N", "-json"}, []string{"-all", "outbox stats"}},
		{[]string{"outbox", "retry", "-h"}, []string{"Usage: switchboard outbox retry ", "-all"}, []string{"-limit", "-json"}},
		{[]string{"outbox", "discard", "-h"}, []string{"Usage: switchboard outbox discard ", "-db URL"}, []string{"  -all", "-limit"}},
		{[]string{"dlq", "-h"}, []string{"--connect-timeout"}, nil},
		{[]string{"dlq", "replay", "-h"}, []string{"Usage: switchboard dlq replay ", "-connect-timeout duration", "-bridge URL"}, []string{"  -timeout "}},
		{[]string{"dlq", "list", "-h"}, []string{"-connect-timeout"}, nil},
		{[]string{"relay", "-h"}, []string{"-connect-timeout duration", "(default 10s)"}, nil},
		{[]string{"health", "-h"}, []string{"-connect-timeout duration", "-check-timeout duration", "(default 2s)"}, []string{"  -timeout "}},
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
				t.Errorf("%v: the help shows %q, another action's:\n%s", c.args, w, out)
			}
		}
	}
}

// silentServer accepts TCP connections and never answers: a server that is
// up but hung, which only a timeout gets past.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

// TestConnectTimeoutBoundsOpening: --connect-timeout bounds opening the
// database and the bridge, on a server that refuses at once (127.0.0.1:1)
// and on one that accepts and never answers, with an error naming the flag
// when it is the timeout that ended the wait.
func TestConnectTimeoutBoundsOpening(t *testing.T) {
	t.Setenv(envDB, "")
	t.Setenv(envBridge, "")
	silent := silentServer(t)
	for _, c := range []struct {
		args     []string
		wantText string
	}{
		{[]string{"health", "--bridge", "postgres://postgres@127.0.0.1:1/none"}, "unreachable"},
		{[]string{"dlq", "list", "--db", "postgres://postgres@127.0.0.1:1/none"}, "cannot reach the database"},
		{[]string{"health", "--bridge", "postgres://postgres@" + silent + "/none"}, "within --connect-timeout 300ms"},
		{[]string{"health", "--bridge", "nats://" + silent}, "within --connect-timeout 300ms"},
		{[]string{"health", "--bridge", "amqp://guest:guest@" + silent + "/"}, "within --connect-timeout 300ms"},
		{[]string{"dlq", "list", "--db", "postgres://postgres@" + silent + "/none"}, "within --connect-timeout 300ms"},
		{[]string{"migrate", "up", "--db", "postgres://postgres@" + silent + "/none"}, "within --connect-timeout 300ms"},
		{[]string{"outbox", "stats", "--db", "postgres://postgres@" + silent + "/none"}, "within --connect-timeout 300ms"},
		{[]string{"relay", "--db", "postgres://postgres@" + silent + "/none", "--bridge", "nats://" + silent}, "within --connect-timeout 300ms"},
	} {
		start := time.Now()
		code, out, errOut := cli(t, append(c.args, "--connect-timeout", "300ms")...)
		if took := time.Since(start); code != 1 || took > 1500*time.Millisecond || !strings.Contains(errOut, c.wantText) {
			t.Errorf("%v --connect-timeout 300ms: exit %d after %v, stdout %q, stderr %q; want exit 1 within about 300ms, saying %q",
				c.args, code, took.Round(time.Millisecond), out, errOut, c.wantText)
		}
	}
}

func TestMigrate(t *testing.T) {
	e := newEnv(t)
	code, out, errOut := cli(t, append([]string{"migrate", "status"}, e.dbArgs()...)...)
	if code != 0 || strings.Count(out, "pending") != len(migrations.All()) {
		t.Fatalf("status before: exit %d\n%s%s", code, out, errOut)
	}
	// Flags before the action, and the database from the environment.
	t.Setenv(envDB, e.dbURL)
	code, out, errOut = cli(t, "migrate", "--schema", e.schema, "up")
	if code != 0 || !strings.Contains(out, "applied 0001_bridge.sql\napplied 0002_deadletter.sql\n") || !strings.Contains(out, "up to date") {
		t.Fatalf("up: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = cli(t, "migrate", "up", "--schema", e.schema)
	if code != 0 || strings.Contains(out, "applied") {
		t.Errorf("up again: exit %d\n%s", code, out)
	}
	code, out, _ = cli(t, "migrate", "status", "--schema", e.schema)
	if code != 0 || strings.Count(out, "applied") != len(migrations.All()) || strings.Contains(out, "pending") {
		t.Errorf("status after: exit %d\n%s", code, out)
	}
	// A changed migration is reported, with exit status 1.
	if _, err := e.db.Exec(`UPDATE "` + e.schema + `".schema_migrations SET checksum = 'x' WHERE version = 1`); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = cli(t, "migrate", "status", "--schema", e.schema)
	if code != 1 || !strings.Contains(out, "MODIFIED") || !strings.Contains(errOut, "changed") {
		t.Errorf("status with a changed migration: exit %d\n%s%s", code, out, errOut)
	}

	// sql needs no database.
	t.Setenv(envDB, "")
	code, out, _ = cli(t, "migrate", "sql", "--schema", "other_schema")
	if code != 0 || !strings.Contains(out, `CREATE SCHEMA IF NOT EXISTS "other_schema"`) {
		t.Fatalf("sql: exit %d\n%s", code, out)
	}
	for _, m := range migrations.All() {
		if !strings.Contains(out, fmt.Sprintf("-- Version %d: %s", m.Version, m.Name)) {
			t.Errorf("sql lacks %s", m.Name)
		}
	}
}

func TestDLQListShowPurge(t *testing.T) {
	e := newEnv(t)
	s := e.store(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	var ids []string
	for i, at := range []time.Time{now.Add(-3 * time.Hour), now.Add(-2 * time.Hour), now.Add(-time.Minute)} {
		id, err := s.Put(ctx, record("svc", i, at))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if _, err := s.Put(ctx, record("other", 9, now)); err != nil {
		t.Fatal(err)
	}
	dlq := func(args ...string) (int, string, string) {
		return cli(t, append(append([]string{"dlq"}, args...), e.dbArgs()...)...)
	}

	t.Run("ListTable", func(t *testing.T) {
		code, out, errOut := dlq("list", "--service", "svc.v1")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "LAST FAILED") ||
			!strings.Contains(lines[0], "ATTEMPTS") || !strings.Contains(lines[0], "ERROR") {
			t.Fatalf("table:\n%s", out)
		}
		for i, id := range ids { // oldest failure first
			if !strings.HasPrefix(lines[i+1], id) || !strings.Contains(lines[i+1], "exhausted") || !strings.Contains(lines[i+1], "…") {
				t.Errorf("row %d: %q", i, lines[i+1])
			}
		}
		if strings.Contains(out, "next page") {
			t.Errorf("a single page printed a cursor:\n%s", out)
		}
		code, out, _ = dlq("list", "--service", "svc.v1", "--since", "90m")
		if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, ids[2]) {
			t.Errorf("--since 90m:\n%s", out)
		}
		code, out, _ = dlq("list", "--error", "BOOM 1", "--until", now.Format(time.RFC3339))
		if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, ids[1]) {
			t.Errorf("--error --until:\n%s", out)
		}
		code, out, _ = dlq("list", "--service", "nobody")
		if code != 0 || !strings.Contains(out, "no dead letters") {
			t.Errorf("empty list: %d %q", code, out)
		}
	})

	t.Run("ListPagesAndJSON", func(t *testing.T) {
		code, out, _ := dlq("list", "--service", "svc.v1", "--limit", "2")
		if code != 0 || !strings.Contains(out, "next page: --after '") {
			t.Fatalf("page 1:\n%s", out)
		}
		var page struct {
			Records []deadletter.Record `json:"records"`
			Next    string              `json:"next"`
		}
		code, out, _ = dlq("list", "--service", "svc.v1", "--limit", "2", "--json")
		if err := json.Unmarshal([]byte(out), &page); code != 0 || err != nil || len(page.Records) != 2 || page.Next == "" {
			t.Fatalf("json page 1: %d %v\n%s", code, err, out)
		}
		if page.Records[0].ID != ids[0] || page.Records[0].Metadata["n"] != "0" || string(page.Records[0].Payload) != `{"n":0,"name":"x"}` {
			t.Errorf("json record: %+v", page.Records[0])
		}
		code, out, _ = dlq("list", "--service", "svc.v1", "--limit", "2", "--json", "--after", page.Next)
		page.Records, page.Next = nil, "x"
		if err := json.Unmarshal([]byte(out), &page); code != 0 || err != nil || len(page.Records) != 1 || page.Records[0].ID != ids[2] || page.Next != "" {
			t.Errorf("json page 2: %d %v\n%s", code, err, out)
		}
		_, out, _ = dlq("list", "--service", "nobody", "--json")
		if !strings.Contains(out, `"records": []`) {
			t.Errorf("empty json: %s", out)
		}
	})

	t.Run("Show", func(t *testing.T) {
		code, out, errOut := dlq("show", ids[1])
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		for _, want := range []string{ids[1], "svc-msg-1", "svc.v1.work", "work", "exhausted", "Attempts:", "5",
			"correlation_id", "corr-svc", "boom 1: very long error text very long error text very long error text very long error text",
			"Payload (18 bytes, JSON)", `"name": "x"`} {
			if !strings.Contains(out, want) {
				t.Errorf("show lacks %q:\n%s", want, out)
			}
		}
		code, out, _ = dlq("show", "--json", ids[1])
		var r deadletter.Record
		if err := json.Unmarshal([]byte(out), &r); code != 0 || err != nil || r.ID != ids[1] || r.Metadata["n"] != "1" || !r.LastFailedAt.Equal(now.Add(-2*time.Hour)) {
			t.Errorf("show --json: %d %v %+v", code, err, r)
		}
		code, _, errOut = dlq("show", "00000000-0000-0000-0000-000000000000")
		if code != 1 || !strings.Contains(errOut, "not found") {
			t.Errorf("show unknown: %d %q", code, errOut)
		}
	})

	t.Run("Purge", func(t *testing.T) {
		code, out, _ := dlq("purge", "--all", "--older-than", "1h")
		if code != 0 || !strings.Contains(out, "would purge 2 dead letters") || !strings.Contains(out, "--yes") {
			t.Fatalf("purge without --yes: %d %q", code, out)
		}
		if recs, _, _ := s.List(ctx, deadletter.Filter{}); len(recs) != 4 {
			t.Fatalf("purge without --yes deleted records: %d left", len(recs))
		}
		code, out, _ = dlq("purge", "--all", "--older-than", "1h", "--yes")
		if code != 0 || !strings.Contains(out, "purged 2 dead letters") {
			t.Fatalf("purge --yes: %d %q", code, out)
		}
		recs, _, _ := s.List(ctx, deadletter.Filter{})
		if len(recs) != 2 {
			t.Errorf("%d records left, want 2", len(recs))
		}
	})

	t.Run("MissingTables", func(t *testing.T) {
		code, _, errOut := cli(t, "dlq", "list", "--db", e.dbURL, "--schema", e.schema+"_missing")
		if code != 1 || !strings.Contains(errOut, "migrate up") {
			t.Errorf("unmigrated schema: %d %q", code, errOut)
		}
	})
}

// A purge is scoped by the filters of list; one with none needs --all.
func TestDLQPurgeScope(t *testing.T) {
	e := newEnv(t)
	s := e.store(t)
	ctx := context.Background()
	now := time.Now().UTC()
	for i, at := range []time.Time{now.Add(-3 * time.Hour), now.Add(-2 * time.Hour), now.Add(-time.Minute)} {
		if _, err := s.Put(ctx, record("svc", i, at)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Put(ctx, record("other", 0, now.Add(-5*time.Hour))); err != nil {
		t.Fatal(err)
	}
	dlq := func(args ...string) (int, string, string) {
		return cli(t, append(append([]string{"dlq", "purge"}, args...), e.dbArgs()...)...)
	}
	left := func() int {
		t.Helper()
		recs, _, err := s.List(ctx, deadletter.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		return len(recs)
	}

	if code, out, errOut := dlq("--older-than", "1h", "--yes"); code != 2 || out != "" || !strings.Contains(errOut, "--all") || left() != 4 {
		t.Fatalf("unscoped purge: exit %d, %q %q, %d records left (want 4: refused)", code, out, errOut, left())
	}
	if code, out, _ := dlq("--service", "svc.v1", "--older-than", "1h"); code != 0 || !strings.Contains(out, "would purge 2 dead letters") || left() != 4 {
		t.Fatalf("dry run: exit %d, %q, %d left", code, out, left())
	}
	if code, out, errOut := dlq("--service", "svc.v1", "--older-than", "1h", "--yes"); code != 0 || !strings.Contains(out, "purged 2 dead letters") || left() != 2 {
		t.Fatalf("scoped purge: exit %d, %q %q, %d left (want 2: the other service's is older but out of scope)", code, out, errOut, left())
	}
	if code, out, _ := dlq("--handler", "work", "--error", "boom 2", "--yes"); code != 0 || !strings.Contains(out, "purged 1 dead letter") || left() != 1 {
		t.Fatalf("purge by handler and error: exit %d, %q, %d left", code, out, left())
	}
	if code, out, _ := dlq("--all", "--older-than", "4h", "--yes"); code != 0 || !strings.Contains(out, "purged 1 dead letter") || left() != 0 {
		t.Fatalf("purge --all: exit %d, %q, %d left", code, out, left())
	}
	if code, out, _ := cli(t, "dlq", "purge", "-h"); code != 0 || !strings.Contains(out, "-all") || !strings.Contains(out, "-service") {
		t.Errorf("purge -h does not document --all and the filters: %q", out)
	}
}

// Wire-controlled text (message id, metadata, error, payload) reaches the
// terminal with its control characters escaped; --json keeps it exact and
// escaped too.
func TestDLQShowAndListEscapeControls(t *testing.T) {
	e := newEnv(t)
	s := e.store(t)
	ctx := context.Background()
	const (
		// as printed escaped
		title = `\x1b]0;pwned\a` // OSC: set the window title
		erase = `\x1b[2J`        // erase the screen
		csi   = `\u009b31m`      // C1 CSI, UTF-8 encoded
		bidi  = `\u202e`         // right-to-left override
	)
	raw := func(esc string) string { v, _ := strconv.Unquote(`"` + esc + `"`); return v }
	hostile := raw(title) + raw(erase) + raw(csi) + raw(bidi) + "\r"
	rec := record("evil", 0, time.Now())
	rec.MessageID = "id" + hostile
	rec.Metadata = map[string]string{"k" + raw(erase): "v" + hostile}
	rec.Error = "line 1" + hostile + "\nline 2"
	rec.Handler = "h" + raw(title)
	id, err := s.Put(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	rec2 := record("evil", 1, time.Now())
	rec2.Payload = []byte(`{"s":"` + raw(csi) + raw(bidi) + `"}`) // valid JSON: C1 and format characters may be raw in strings
	id2, err := s.Put(ctx, rec2)
	if err != nil {
		t.Fatal(err)
	}
	rec3 := record("evil", 2, time.Now())
	rec3.Payload = []byte("text " + hostile)
	id3, err := s.Put(ctx, rec3)
	if err != nil {
		t.Fatal(err)
	}
	dlq := func(args ...string) string {
		t.Helper()
		code, out, errOut := cli(t, append(append([]string{"dlq"}, args...), e.dbArgs()...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		return out
	}
	clean := func(what, out string) {
		t.Helper()
		for _, bad := range []string{"\x1b", "\x07", "\r", "\u009b", "\u202e"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s prints %q raw:\n%q", what, bad, out)
			}
		}
	}
	for _, args := range [][]string{{"show", id}, {"show", id2}, {"show", id3}, {"list", "--service", "evil.v1"}} {
		out := dlq(args...)
		clean(fmt.Sprint(args), out)
		if args[0] == "show" && args[1] != id2 && (!strings.Contains(out, title) || !strings.Contains(out, erase)) {
			t.Errorf("%v does not show the escapes %s and %s:\n%s", args, title, erase, out)
		}
	}
	if out := dlq("show", id2); !strings.Contains(out, csi) || !strings.Contains(out, bidi) {
		t.Errorf("JSON payload: no %s or %s in\n%s", csi, bidi, out)
	}
	if out := dlq("show", id); !strings.Contains(out, "line 1") || !strings.Contains(out, "\n  line 2") {
		t.Errorf("a multi-line error lost its lines:\n%s", out)
	}
	for _, args := range [][]string{{"show", "--json", id}, {"list", "--json", "--service", "evil.v1"}} {
		out := dlq(args...)
		clean(fmt.Sprint(args), out)
		var got deadletter.Record
		if args[0] == "show" {
			if err := json.Unmarshal([]byte(out), &got); err != nil || got.MessageID != rec.MessageID || got.Metadata["k"+raw(erase)] != "v"+hostile {
				t.Errorf("show --json does not round-trip: %v %+v", err, got)
			}
		}
	}
}

// An error the CLI prints can quote a stored record (a replay's topic, a
// broker's refusal of it): its control characters are escaped too.
func TestDLQReplayErrorEscapesControls(t *testing.T) {
	e := newEnv(t)
	s := e.store(t)
	rec := record("evilerr", 0, time.Now())
	rec.Topic = "t\x1b]0;pwned\a\x1b[2J\u009b31m\r"
	id, err := s.Put(context.Background(), rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{e.bridgeURL(t), testenv.URL(t, testenv.NATS), testenv.URL(t, testenv.AMQP)} {
		code, out, errOut := cli(t, append([]string{"dlq", "replay", id, "--bridge", b}, e.dbArgs()...)...)
		if code != 1 || !strings.Contains(errOut, `\x1b]0;pwned\a`) {
			t.Errorf("replay of a record with a hostile topic through %s: exit %d, %q %q; want exit 1 and the topic escaped", bridge.Redact(b), code, out, errOut)
		}
		for _, bad := range []string{"\x1b", "\x07", "\r", "\u009b"} {
			if strings.Contains(errOut, bad) {
				t.Errorf("replay through %s prints %q raw:\n%q", bridge.Redact(b), bad, errOut)
			}
		}
	}
	if _, err := s.Get(context.Background(), id); err != nil {
		t.Errorf("record lost after failed replays: %v", err)
	}
}

func TestDLQReplay(t *testing.T) {
	e := newEnv(t)
	s := e.store(t)
	ctx := context.Background()
	bURL := e.bridgeURL(t)

	// The failed service's consumer group, in this process; the CLI
	// publishes from its own bridge, as it would from another machine.
	b, err := bridge.Open(ctx, bURL)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	subscribe := func(rec deadletter.Record) <-chan *message.Message {
		sub, err := b.Subscriber(ctx, bridge.Spec{Topic: rec.Topic, Group: rec.Group, Kind: bridge.Command, Concurrency: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Close() })
		ch, err := sub.Subscribe(ctx, rec.Topic)
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	receive := func(ch <-chan *message.Message) *message.Message {
		t.Helper()
		select {
		case m := <-ch:
			m.Ack()
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("replayed message did not arrive")
			return nil
		}
	}

	rec := record("one", 0, time.Now().Add(-time.Hour))
	ch := subscribe(rec)
	id, err := s.Put(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := cli(t, append([]string{"dlq", "replay", id, "--bridge", bURL}, e.dbArgs()...)...)
	if code != 0 || !strings.Contains(out, "replayed 1 message") {
		t.Fatalf("replay: exit %d\n%s%s", code, out, errOut)
	}
	m := receive(ch)
	if m.UUID != rec.MessageID || string(m.Payload) != string(rec.Payload) ||
		m.Metadata.Get(deadletter.TargetGroupKey) != rec.Group || m.Metadata.Get("correlation_id") != "corr-one" {
		t.Errorf("replayed %s %s %v", m.UUID, m.Payload, m.Metadata)
	}
	if _, err := s.Get(ctx, id); !errors.Is(err, deadletter.ErrNotFound) {
		t.Errorf("replayed record still stored: %v", err)
	}

	// --all with a filter, the bridge from the environment.
	t.Setenv(envBridge, bURL)
	many := record("many", 0, time.Now().Add(-time.Hour))
	chMany := subscribe(many)
	for i := range 2 {
		if _, err := s.Put(ctx, record("many", i, time.Now().Add(-time.Hour))); err != nil {
			t.Fatal(err)
		}
	}
	keep, err := s.Put(ctx, record("kept", 0, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut = cli(t, append([]string{"dlq", "replay", "--all", "--service", "many.v1"}, e.dbArgs()...)...)
	if code != 0 || !strings.Contains(out, "replayed 2 messages") {
		t.Fatalf("replay --all: exit %d\n%s%s", code, out, errOut)
	}
	got := map[string]bool{}
	for range 2 {
		got[receive(chMany).UUID] = true
	}
	if !got["many-msg-0"] || !got["many-msg-1"] {
		t.Errorf("replayed %v", got)
	}
	if _, err := s.Get(ctx, keep); err != nil {
		t.Errorf("a record outside the filter was replayed: %v", err)
	}

	// A publish that fails keeps the record: here nobody consumes the topic.
	code, _, errOut = cli(t, append([]string{"dlq", "replay", keep}, e.dbArgs()...)...)
	if code != 1 || !strings.Contains(errOut, "no subscriber") {
		t.Errorf("replay without a consumer group: %d %q", code, errOut)
	}
	if _, err := s.Get(ctx, keep); err != nil {
		t.Errorf("record lost after a failed replay: %v", err)
	}
	// An in-process bridge would reach nobody.
	code, _, errOut = cli(t, append([]string{"dlq", "replay", keep, "--bridge", "gochannel://"}, e.dbArgs()...)...)
	if code != 1 || !strings.Contains(errOut, "in-process") {
		t.Errorf("replay through gochannel: %d %q", code, errOut)
	}
}

// dlq replay --all, with the handler still failing at once, replays each
// dead letter once, ends, and every re-failure is stored again.
func TestDLQReplayAllWhileTheHandlerStillFails(t *testing.T) {
	const n = 30
	e := newEnv(t)
	s := e.store(t)
	ctx := context.Background()
	b, err := bridge.Open(ctx, e.bridgeURL(t))
	if err != nil {
		t.Fatal(err)
	}
	type job struct {
		N int `json:"n"`
	}
	ev := engine.NewEvent[job]("refail.job")
	var (
		mu    sync.Mutex
		calls = map[int]int{}
	)
	svc := engine.NewService("refail", "1")
	engine.Subscribe(svc, ev, func(_ context.Context, j job) error {
		mu.Lock()
		calls[j.N]++
		k := calls[j.N]
		mu.Unlock()
		return middleware.Permanent(fmt.Errorf("failure #%d", k))
	})
	eng, err := engine.New(engine.Config{
		SharedBridge: b,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Reliability: engine.Reliability{
			DeadLetters: s,
			Retry:       middleware.Retry{MaxAttempts: 1},
			Breaker:     middleware.BreakerPolicy{Disabled: true},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Register(svc); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Stop(context.Background()); _ = b.Close() })
	for i := range n {
		if err := ev.Emit(engine.WithEngine(ctx, eng), job{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	// waitFailures waits until the n records all hold failure number k.
	waitFailures := func(k int) {
		t.Helper()
		want := fmt.Sprintf("failure #%d", k)
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			recs, _, err := s.List(ctx, deadletter.Filter{Service: "refail.v1", Limit: 2 * n})
			if err != nil {
				t.Fatal(err)
			}
			have := 0
			for _, r := range recs {
				if r.Error == want {
					have++
				}
			}
			if len(recs) == n && have == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d records, %d of them with %q; want %d, all with it", len(recs), have, want, n)
			}
		}
	}
	waitFailures(1)

	type result struct {
		code        int
		out, errOut string
	}
	done := make(chan result, 1)
	go func() {
		var o, eo bytes.Buffer
		code := run(ctx, append([]string{"dlq", "replay", "--all", "--service", "refail.v1", "--bridge", e.bridgeURL(t)}, e.dbArgs()...), &o, &eo)
		done <- result{code, o.String(), eo.String()}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("dlq replay --all did not end while the handler kept failing")
	}
	if want := fmt.Sprintf("replayed %d messages, 0 failed (kept), 0 gone", n); r.code != 0 || !strings.Contains(r.out, want) {
		t.Fatalf("replay --all: exit %d, %q %q; want %q", r.code, r.out, r.errOut, want)
	}
	waitFailures(2)
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		if calls[i] != 2 {
			t.Errorf("job %d handled %d times, want 2 (the original and one replay)", i, calls[i])
		}
	}
}

func TestHealth(t *testing.T) {
	e := newEnv(t)
	code, out, errOut := cli(t, "health", "--bridge", e.bridgeURL(t))
	if code != 0 || !strings.HasPrefix(out, "ok: postgres") {
		t.Errorf("healthy: exit %d, %q %q", code, out, errOut)
	}
	start := time.Now()
	code, _, errOut = cli(t, "health", "--bridge", "postgres://postgres@127.0.0.1:1/none", "--connect-timeout", "3s")
	if code != 1 || !strings.Contains(errOut, "unreachable") || time.Since(start) > 5*time.Second {
		t.Errorf("unreachable: exit %d after %v, %q", code, time.Since(start), errOut)
	}
	code, _, errOut = cli(t, "health", "--bridge", "nosuch://x")
	if code != 1 || !strings.Contains(errOut, "unknown scheme") {
		t.Errorf("unknown scheme: exit %d, %q", code, errOut)
	}
}

func TestParseTime(t *testing.T) {
	t.Parallel()
	now := time.Date(2024, 5, 6, 7, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"24h":                  now.Add(-24 * time.Hour),
		"7d":                   now.Add(-7 * 24 * time.Hour),
		"90m":                  now.Add(-90 * time.Minute),
		"2024-01-02T03:04:05Z": time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
	} {
		if got, err := parseTime(in, now); err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "yesterday", "-1h", "1.5d"} {
		if _, err := parseTime(bad, now); err == nil {
			t.Errorf("parseTime(%q) accepted", bad)
		}
	}
}

// TestRelayRetentionIsADuration: relay's help shows --retention as a
// duration, which also takes whole days, and refuses anything else.
func TestRelayRetentionIsADuration(t *testing.T) {
	t.Setenv(envDB, "")
	t.Setenv(envBridge, "")
	code, out, _ := cli(t, "relay", "-h")
	if code != 0 || !strings.Contains(out, "-retention duration") || !strings.Contains(out, "(default 1h0m0s)") {
		t.Errorf("relay -h: exit %d, want --retention shown as a duration defaulting to 1h:\n%s", code, out)
	}
	if code, _, errOut := cli(t, "relay", "--retention", "3x"); code != 2 || !strings.Contains(errOut, "-retention") {
		t.Errorf("relay --retention 3x: exit %d, stderr %q", code, errOut)
	}
	for _, v := range []string{"7d", "90m", "0"} {
		// Accepted: the command goes on to want a database.
		code, _, errOut := cli(t, "relay", "--retention", v)
		if first, _, _ := strings.Cut(errOut, "\n"); code != 2 || !strings.Contains(first, "--db") {
			t.Errorf("relay --retention %s: exit %d, stderr %q", v, code, errOut)
		}
	}
}
