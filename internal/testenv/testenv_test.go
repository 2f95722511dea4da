package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"testing"
	"time"
)

// TestURLCreatesTheDatabase: on a new machine the test database does not
// exist yet, and whichever package asks for it first creates it.
func TestURLCreatesTheDatabase(t *testing.T) {
	base := URL(t, Postgres)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "switchboard_new_" + hex.EncodeToString(b)
	u.Path = "/" + name
	admin := *u
	admin.Path = "/postgres"
	db, err := sql.Open("pgx", admin.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() }) // after the drop below
	exists := func() bool {
		t.Helper()
		var ok bool
		if err := db.QueryRowContext(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if exists() {
		t.Fatalf("database %s exists before the test", name)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, `DROP DATABASE IF EXISTS "`+name+`"`); err != nil {
			t.Logf("dropping %s: %v", name, err)
		}
	})
	t.Setenv(servers[Postgres].env, u.String())
	got := URL(t, Postgres)
	if !exists() {
		t.Fatalf("URL returned %s without creating database %s", got, name)
	}
	if URL(t, Postgres) != got { // a second call: the database is there, no error
		t.Fatal("a second URL call returned another URL")
	}
}
