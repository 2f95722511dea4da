package postgres_test

import (
	"context"
	"database/sql"
	"net/url"
	"slices"
	"testing"

	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/bridge/postgres"
	"github.com/switchboard-go/switchboard/migrations"
)

// schemaOf returns the schema parameter of a bridge URL.
func schemaOf(t *testing.T, raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("schema")
}

// appliedVersions reads schema_migrations through the bridge's pool.
func appliedVersions(t *testing.T, b bridge.Bridge, schema string) []int {
	t.Helper()
	rows, err := b.(*postgres.Bridge).Pool().Query(context.Background(),
		`SELECT version FROM `+pgx.Identifier{schema}.Sanitize()+`.schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func knownVersions() []int {
	var out []int
	for _, m := range migrations.All() {
		out = append(out, m.Version)
	}
	return out
}

// roundTrip checks that the bridge on b delivers a message.
func roundTrip(t *testing.T, b bridge.Bridge) {
	t.Helper()
	spec := bridge.Spec{Topic: bridgetest.Unique("svc.v1.cmd"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	ch, sub := bridgetest.Subscribe(t, b, spec)
	defer sub.Close()
	bridgetest.Publish(t, b, spec.Topic, "hi")
	m := bridgetest.Receive(t, ch, wait)
	m.Ack()
	if string(m.Payload) != "hi" {
		t.Fatalf("got %q", m.Payload)
	}
}

// Open creates the tables through package migrations and records them.
func TestOpenAppliesMigrations(t *testing.T) {
	raw := schemaURL(t)
	b := openBridge(t, raw)
	if got := appliedVersions(t, b, schemaOf(t, raw)); !slices.Equal(got, knownVersions()) {
		t.Fatalf("schema_migrations %v, want %v", got, knownVersions())
	}
	roundTrip(t, b)
}

// A schema whose tables an earlier release created (no schema_migrations)
// keeps working and gets its migrations recorded.
func TestOpenOverTablesOfEarlierReleases(t *testing.T) {
	raw := schemaURL(t)
	schema := schemaOf(t, raw)
	v1, err := migrations.All()[0].SQL(migrations.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, baseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()+`; `+v1); err != nil {
		t.Fatal(err)
	}
	b := openBridge(t, raw)
	if got := appliedVersions(t, b, schema); !slices.Equal(got, knownVersions()) {
		t.Fatalf("schema_migrations %v, want %v", got, knownVersions())
	}
	roundTrip(t, b)
}

// The adapter's initializing queries are the migrations script: a schema
// set up with them is complete, and Open has nothing left to apply.
func TestSchemaInitializingQueries(t *testing.T) {
	raw := schemaURL(t)
	schema := schemaOf(t, raw)
	qs, err := postgres.SchemaAdapter{Schema: schema}.SchemaInitializingQueries(wmsql.SchemaInitializingQueriesParams{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, baseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range qs {
		if _, err := conn.Exec(ctx, q.Query, q.Args...); err != nil {
			t.Fatal(err)
		}
	}
	st, err := migrations.Status(ctx, stdlibDB(t), migrations.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if !s.Applied || s.Modified() {
			t.Errorf("after the initializing queries: %+v", s)
		}
	}
	roundTrip(t, openBridge(t, raw))
}

func stdlibDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", baseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}
