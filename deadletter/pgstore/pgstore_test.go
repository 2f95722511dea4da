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
	if _, err := migrations.Up(context.Background(), db, migrations.Options{Schema: schema}); err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.New(db, schema)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) { storetest.Run(t, newStore(t)) }

func TestNewRejectsBadSchema(t *testing.T) {
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
	if n, err := s.PurgeBefore(ctx, stored); n != 0 || err != nil {
		t.Errorf("PurgeBefore(the record's own time) = %d, %v", n, err)
	}
	for _, bad := range []string{"nope", ""} {
		if _, err := s.Get(ctx, bad); !errors.Is(err, deadletter.ErrNotFound) {
			t.Errorf("Get(%q): %v", bad, err)
		}
		if err := s.Delete(ctx, bad); !errors.Is(err, deadletter.ErrNotFound) {
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
