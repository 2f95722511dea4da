package pgstore_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx"

	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/deadletter/pgstore"
	"github.com/switchboard-go/switchboard/deadletter/storetest"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/migrations"
)

// newStore returns a store on a fresh, migrated schema that is dropped when
// the test ends.
func newStore(t *testing.T) *pgstore.Store {
	t.Helper()
	db := testenv.PostgresDB(t)
	schema := testenv.Schema(t, db)
	if _, err := migrations.Up(context.Background(), db, migrations.Config{Schema: schema}); err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.New(db, schema)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, newStore(t))
}

func TestNewRejectsBadSchema(t *testing.T) {
	t.Parallel()
	db, _ := sql.Open("pgx", "postgres://127.0.0.1/none")
	defer db.Close()
	for _, bad := range []string{`x"; DROP TABLE y; --`, "1x", "a.b"} {
		if _, err := pgstore.New(db, bad); err == nil {
			t.Errorf("New accepted schema %q", bad)
		}
	}
	if _, err := pgstore.New(nil, ""); err == nil {
		t.Error("New accepted a nil db")
	}
}

// What PostgreSQL cannot store as text is replaced, not refused; ids that
// are not UUIDs are simply not found.
func TestPostgresSpecifics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	at := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("x", 3600))
	id, err := s.Put(ctx, deadletter.Record{
		MessageID: "m\x001", Topic: "t", Group: "g", Error: "bad \xff byte",
		Metadata: map[string]string{"k\x00": "v\x00"}, FirstFailedAt: at, LastFailedAt: at,
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if r.MessageID != "m\uFFFD1" || r.Error != "bad \uFFFD byte" || r.Metadata["k\uFFFD"] != "v\uFFFD" {
		t.Errorf("got %+v", r)
	}
	if r.LastFailedAt.Location() != time.UTC || !r.LastFailedAt.Equal(at.Truncate(time.Microsecond)) {
		t.Errorf("time %v, want %v in UTC", r.LastFailedAt, at.Truncate(time.Microsecond))
	}
	// Bounds finer than a microsecond keep their Go meaning against the
	// stored time (at truncated to the microsecond).
	stored := r.LastFailedAt
	for _, c := range []struct {
		f    deadletter.Filter
		want int
	}{
		{deadletter.Filter{Until: at}, 1}, {deadletter.Filter{Since: at}, 0},
		{deadletter.Filter{Until: stored}, 0}, {deadletter.Filter{Since: stored}, 1},
		{deadletter.Filter{Until: stored.Add(time.Nanosecond)}, 1}, {deadletter.Filter{Since: stored.Add(time.Nanosecond)}, 0},
	} {
		if recs, _, err := s.List(ctx, c.f); len(recs) != c.want || err != nil {
			t.Errorf("List(since %v, until %v) = %d records, %v; want %d", c.f.Since, c.f.Until, len(recs), err, c.want)
		}
	}
	if n, err := s.Purge(ctx, deadletter.Filter{Until: stored}); n != 0 || err != nil {
		t.Errorf("Purge(until the record's own time) = %d, %v", n, err)
	}
	for _, bad := range []string{"nope", ""} {
		if _, err := s.Get(ctx, bad); !errors.Is(err, deadletter.ErrNotFound) {
			t.Errorf("Get(%q): %v", bad, err)
		}
		if err := s.Delete(ctx, bad, 1); !errors.Is(err, deadletter.ErrNotFound) {
			t.Errorf("Delete(%q): %v", bad, err)
		}
	}
	if _, err := s.Put(ctx, deadletter.Record{ID: "not-a-uuid", MessageID: "m2"}); err == nil {
		t.Error("Put accepted a non-UUID id")
	}
	if _, _, err := s.List(ctx, deadletter.Filter{After: "garbage"}); err == nil {
		t.Error("List accepted a malformed cursor")
	}
	if _, _, err := s.List(ctx, deadletter.Filter{After: at.Format(time.RFC3339Nano) + "|not-a-uuid"}); err == nil {
		t.Error("List accepted a cursor with a non-UUID id")
	}
	// The error filter is a substring, not a pattern.
	if recs, _, _ := s.List(ctx, deadletter.Filter{ErrorContains: "%"}); len(recs) != 0 {
		t.Errorf("ErrorContains %% matched %d records", len(recs))
	}
}

// Records written under version 2's key (message id, group) survive
// migration 5: they get version 1, and the same message id and group on
// another topic then becomes a second record instead of overwriting them.
func TestMigrationToTopicKeyKeepsRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.PostgresDB(t)
	schema := testenv.Schema(t, db)
	cfg := migrations.Config{Schema: schema}
	apply := func(m migrations.Migration) {
		t.Helper()
		q, err := m.SQL(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
	}
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS "`+schema+`"`); err != nil {
		t.Fatal(err)
	}
	all := migrations.All()
	for _, m := range all[:4] {
		apply(m)
	}
	const oldID = "7b0c5d1e-1d2a-4c9e-9a57-0d0f2b8c3a11"
	if _, err := db.ExecContext(ctx, `INSERT INTO "`+schema+`".dead_letters
		(id, message_id, topic, service, handler, group_name, payload, error, error_kind, attempts, first_failed_at, last_failed_at)
		VALUES ($1, 'm1', 'a.topic', 's.v1', 'h', 's.v1', '\x00', 'old failure', 'permanent', 1, now(), now())`, oldID); err != nil {
		t.Fatal(err)
	}
	for _, m := range all[4:] {
		apply(m)
	}
	s, err := pgstore.New(db, schema)
	if err != nil {
		t.Fatal(err)
	}
	old, err := s.Get(ctx, oldID)
	if err != nil || old.Version != 1 || old.Error != "old failure" {
		t.Fatalf("record from before the migration: %+v, %v", old, err)
	}
	at := time.Now()
	id, err := s.Put(ctx, deadletter.Record{MessageID: "m1", Group: "s.v1", Topic: "b.topic", Error: "other topic", FirstFailedAt: at, LastFailedAt: at})
	if err != nil || id == oldID {
		t.Fatalf("Put on another topic: id %s, %v; want a new record", id, err)
	}
	id, err = s.Put(ctx, deadletter.Record{MessageID: "m1", Group: "s.v1", Topic: "a.topic", Error: "newer failure", FirstFailedAt: at, LastFailedAt: at})
	if err != nil || id != oldID {
		t.Fatalf("Put on the same topic: id %s, %v; want the old record %s", id, err, oldID)
	}
	if r, err := s.Get(ctx, oldID); err != nil || r.Version != 2 || r.Error != "newer failure" {
		t.Errorf("old record after an update: %+v, %v", r, err)
	}
}
