package outbox_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/outbox"
)

// The longest schema name the validation accepts (63 bytes) works end to
// end: the outbox write, its commit notification and the relay that wakes on
// it (the sweep is a minute, so only the notification can wake it in time).
func TestLongestSchemaName(t *testing.T) {
	url := testenv.URL(t, testenv.Postgres)
	db := testenv.PostgresDB(t)
	schema := testenv.Schema(t, db) // t_ and 12 hex digits: unique
	schema += strings.Repeat("x", 63-len(schema))
	if len(schema) != 63 || (migrations.Config{Schema: schema}).Validate() != nil {
		t.Fatalf("test schema %q (%d bytes) is not a valid 63-byte name", schema, len(schema))
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = db.ExecContext(ctx, `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`)
	})
	if _, err := migrations.Up(t.Context(), db, migrations.Config{Schema: schema}); err != nil {
		t.Fatal(err)
	}
	bus := inproc.New()
	got := collect(t, bus, "event.orders.placed", "g")
	e := newEngine(t, inproc.New())
	runRelay(t, outbox.Relay{DatabaseURL: url, Schema: schema, Target: bus, PollInterval: time.Minute, Logger: discard()})
	time.Sleep(500 * time.Millisecond) // the relay's first sweep is done; the next is a minute away
	emitOrders(t, e, db, schema, 0, 3)
	waitFor(t, 20*time.Second, "the orders, woken by the notification", func() bool { return len(got.snapshot()) == 3 })
}
