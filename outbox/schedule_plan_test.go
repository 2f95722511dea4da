package outbox

import (
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/migrations"
)

// TestScheduledQueriesUseIndexes checks, on an analysed table of 20,000
// future rows and 1,000 forwarded ones, that the relay's per-round queries
// read the partial indexes instead of scanning the table: future rows must
// cost the relay nothing until they are due.
func TestScheduledQueriesUseIndexes(t *testing.T) {
	db := testenv.PostgresDB(t)
	schema := testenv.Schema(t, db)
	if _, err := migrations.Up(t.Context(), db, migrations.Config{Schema: schema}); err != nil {
		t.Fatal(err)
	}
	qs, _ := quote(schema)
	for _, q := range []string{
		`INSERT INTO ` + qs + `.outbox (topic, uuid, payload, deliver_at)
			SELECT 't' || (g % 10), 'f-' || g, '\x00', now() + make_interval(secs => 3600 + g) FROM generate_series(1, 20000) g`,
		`INSERT INTO ` + qs + `.outbox (topic, uuid, payload, forwarded_at)
			SELECT 't', 'd-' || g, '\x00', now() FROM generate_series(1, 1000) g`,
		`INSERT INTO ` + qs + `.outbox_recurring (name, spec, topic, payload, next_at)
			SELECT 'r-' || g, '@hourly', 't', '\x00', now() + interval '1 hour' FROM generate_series(1, 1000) g`,
		`ANALYZE ` + qs + `.outbox`,
		`ANALYZE ` + qs + `.outbox_recurring`,
	} {
		if _, err := db.ExecContext(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	q := queries(qs, false)
	for _, c := range []struct {
		name, query string
		args        []any
		indexes     []string
	}{
		{"pending", q.pending, []any{100}, []string{"outbox_immediate", "outbox_due", "outbox_recurring_next"}},
		{"recurring due", q.recurring.due, nil, []string{"outbox_recurring_next"}},
	} {
		rows, err := db.QueryContext(t.Context(), `EXPLAIN `+c.query, c.args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan strings.Builder
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan.WriteString(line + "\n")
		}
		rows.Close()
		p := plan.String()
		if strings.Contains(p, "Seq Scan") {
			t.Errorf("%s: sequential scan:\n%s", c.name, p)
		}
		for _, ix := range c.indexes {
			if !strings.Contains(p, ix) {
				t.Errorf("%s: index %s not used:\n%s", c.name, ix, p)
			}
		}
		t.Logf("%s:\n%s", c.name, p)
	}
}
