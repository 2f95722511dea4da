package migrations_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx"

	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/migrations"
)

// pinned are the checksums of released migrations. A released migration
// must never change (Up refuses to run on a database where it was applied
// from another text); add a new file instead.
var pinned = map[int]string{
	1: "22043ab196a96c072fe814d25f57998f413a5983216eab665c96f744f1fd32f5",
	2: "feb06393e306b09515ddf1b1847323b76d3833837ba17eb8364032eeadee9fea",
	3: "13055e146e7f22f20e3a96b416531a531b9dfc81332bf82c0615d36f848ab0fd",
	4: "6e4ad52baa58ed2df842d05f8d1018406e1403b803ea37b63be74e4a406bd0ee",
	5: "d6a338a18f3ddea3d2f29f36e8b8b10fa025208aa2003147f1dc7fa439ded22e",
	6: "ad20152a278869d087f1837845fea340018cfb7be46f89be4219f0d1ba7af0bd",
	7: "bd1cfa25cf175fb5a057d006569a875f42b430ef0c71e6003b378210e098a40a",
	8: "3e2f346b2b0582ba4ad7b4f3163903c8a4b998721392d097d5e050effb52ec72",
}

func openDB(t testing.TB) *sql.DB { return testenv.PostgresDB(t) }

func newSchema(t testing.TB, db *sql.DB) string { return testenv.Schema(t, db) }

func versions(ms []migrations.Migration) []int {
	out := make([]int, len(ms))
	for i, m := range ms {
		out[i] = m.Version
	}
	return out
}

func allVersions() []int { return versions(migrations.All()) }

// recorded returns the versions in schema_migrations, in order.
func recorded(t *testing.T, db *sql.DB, schema string) []int {
	t.Helper()
	rows, err := db.Query(`SELECT version FROM "` + schema + `".schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func TestEmbeddedFiles(t *testing.T) {
	t.Parallel()
	all := migrations.All()
	if len(all) < 2 {
		t.Fatalf("%d migrations", len(all))
	}
	for i, m := range all {
		if want := fmt.Sprintf("%04d_", m.Version); !strings.HasPrefix(m.Name, want) || m.Version != i+1 {
			t.Errorf("migration %d: version %d, name %q", i, m.Version, m.Name)
		}
		if pinned[m.Version] != m.Checksum {
			t.Errorf("%s: checksum %s, pinned %s — released migrations must not change", m.Name, m.Checksum, pinned[m.Version])
		}
	}
	if all[0].Name != "0001_bridge.sql" || all[1].Name != "0002_deadletter.sql" {
		t.Errorf("names %s, %s", all[0].Name, all[1].Name)
	}
}

func TestUpFromEmptyThenAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	schema := newSchema(t, db)

	applied, err := migrations.Up(ctx, db, migrations.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	if got := versions(applied); !slices.Equal(got, allVersions()) {
		t.Fatalf("applied %v, want %v", got, allVersions())
	}
	q := `"` + schema + `"`
	for _, obj := range []string{"bridge_groups", "bridge_queue", "dead_letters", "schema_migrations"} {
		var ok bool
		if err := db.QueryRow(`SELECT to_regclass($1) IS NOT NULL`, q+"."+obj).Scan(&ok); err != nil || !ok {
			t.Errorf("table %s missing after Up (%v)", obj, err)
		}
	}
	var fn bool
	if err := db.QueryRow(`SELECT to_regprocedure($1) IS NOT NULL`, q+".bridge_no_subscriber(text)").Scan(&fn); err != nil || !fn {
		t.Errorf("function bridge_no_subscriber missing after Up (%v)", err)
	}
	if got := recorded(t, db, schema); !slices.Equal(got, allVersions()) {
		t.Errorf("schema_migrations %v", got)
	}

	var before time.Time
	_ = db.QueryRow(`SELECT max(applied_at) FROM ` + q + `.schema_migrations`).Scan(&before)
	again, err := migrations.Up(ctx, db, migrations.Config{Schema: schema})
	if err != nil || len(again) != 0 {
		t.Fatalf("second Up applied %v, %v", versions(again), err)
	}
	var after time.Time
	_ = db.QueryRow(`SELECT max(applied_at) FROM ` + q + `.schema_migrations`).Scan(&after)
	if !after.Equal(before) || len(recorded(t, db, schema)) != len(allVersions()) {
		t.Errorf("second Up wrote to schema_migrations")
	}
	assertUnlocked(t, db, schema)
}

// assertUnlocked checks that no session still holds the migration lock.
func assertUnlocked(t *testing.T, db *sql.DB, schema string) {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var got bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(1937337954, hashtext($1))`, schema).Scan(&got); err != nil || !got {
		t.Fatalf("migration lock still held after Up (%v)", err)
	}
	_, _ = conn.ExecContext(ctx, `SELECT pg_advisory_unlock(1937337954, hashtext($1))`, schema)
}

func TestStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	schema := newSchema(t, db)
	cfg := migrations.Config{Schema: schema}

	st, err := migrations.Status(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != len(allVersions()) {
		t.Fatalf("%d statuses", len(st))
	}
	for _, s := range st {
		if s.Applied || !s.AppliedAt.IsZero() || s.Modified() {
			t.Errorf("before Up: %+v", s)
		}
	}
	var created bool
	_ = db.QueryRow(`SELECT to_regnamespace($1) IS NOT NULL`, `"`+schema+`"`).Scan(&created)
	if created {
		t.Error("Status created the schema")
	}

	start := time.Now().Add(-time.Minute)
	if _, err := migrations.Up(ctx, db, cfg); err != nil {
		t.Fatal(err)
	}
	st, err = migrations.Status(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if !s.Applied || s.AppliedAt.Before(start) || s.Modified() || s.AppliedChecksum != s.Checksum {
			t.Errorf("after Up: %+v", s)
		}
	}
}

func TestChangedMigrationIsReportedNotReapplied(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	schema := newSchema(t, db)
	cfg := migrations.Config{Schema: schema}
	if _, err := migrations.Up(ctx, db, cfg); err != nil {
		t.Fatal(err)
	}
	q := `"` + schema + `"`
	// Version 1 applied from another text, version 2 pending.
	if _, err := db.Exec(`UPDATE ` + q + `.schema_migrations SET checksum = 'edited' WHERE version = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM ` + q + `.schema_migrations WHERE version = 2`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DROP TABLE ` + q + `.dead_letters`); err != nil {
		t.Fatal(err)
	}

	before := recorded(t, db, schema)
	st, err := migrations.Status(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !st[0].Modified() || st[0].AppliedChecksum != "edited" || st[1].Applied || st[1].Modified() {
		t.Errorf("status %+v", st)
	}
	applied, err := migrations.Up(ctx, db, cfg)
	if !errors.Is(err, migrations.ErrChecksumMismatch) || !strings.Contains(err.Error(), "0001_bridge.sql") || len(applied) != 0 {
		t.Fatalf("Up = %v, %v; want ErrChecksumMismatch naming 0001_bridge.sql", versions(applied), err)
	}
	if got := recorded(t, db, schema); !slices.Equal(got, before) {
		t.Errorf("Up applied something despite the mismatch: %v", got)
	}
}

func TestNewerVersionsAreIgnored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	schema := newSchema(t, db)
	cfg := migrations.Config{Schema: schema}
	if _, err := migrations.Up(ctx, db, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO "` + schema + `".schema_migrations (version, name, checksum) VALUES (9999, '9999_future.sql', 'x')`); err != nil {
		t.Fatal(err)
	}
	if applied, err := migrations.Up(ctx, db, cfg); err != nil || len(applied) != 0 {
		t.Fatalf("Up = %v, %v", versions(applied), err)
	}
	st, err := migrations.Status(ctx, db, cfg)
	if err != nil || len(st) != len(allVersions()) {
		t.Fatalf("Status = %d entries, %v", len(st), err)
	}
}

// Schemas created before versioned migrations hold the bridge's tables but
// no schema_migrations: version 1 applies over them without error.
func TestUpOverTablesOfEarlierReleases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	schema := newSchema(t, db)
	cfg := migrations.Config{Schema: schema}
	ddl, err := migrations.All()[0].SQL(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE SCHEMA "` + schema + `"; ` + ddl); err != nil {
		t.Fatal(err)
	}
	applied, err := migrations.Up(ctx, db, cfg)
	if err != nil || !slices.Equal(versions(applied), allVersions()) {
		t.Fatalf("Up = %v, %v", versions(applied), err)
	}
}

func TestSQLScript(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	schema := newSchema(t, db)
	cfg := migrations.Config{Schema: schema}
	script, err := migrations.SQL(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(script, "{{") {
		t.Error("script has an unreplaced placeholder")
	}
	for _, m := range migrations.All() {
		header := fmt.Sprintf("-- Version %d: %s", m.Version, m.Name)
		body, _ := m.SQL(cfg)
		if !strings.Contains(script, header) || !strings.Contains(script, strings.TrimSpace(body)) {
			t.Errorf("script lacks %s", m.Name)
		}
	}
	// A team applying the script itself ends up where Up would.
	if _, err := db.Exec(script); err != nil {
		t.Fatalf("running the script: %v", err)
	}
	if _, err := db.Exec(script); err != nil {
		t.Fatalf("running the script twice: %v", err)
	}
	if applied, err := migrations.Up(ctx, db, cfg); err != nil || len(applied) != 0 {
		t.Fatalf("Up after the script: %v, %v", versions(applied), err)
	}
	st, _ := migrations.Status(ctx, db, cfg)
	for _, s := range st {
		if !s.Applied || s.Modified() {
			t.Errorf("after the script: %+v", s)
		}
	}
	// Only the schema name differs between schemas.
	other, _ := migrations.SQL(migrations.Config{})
	if strings.ReplaceAll(other, `"switchboard"`, `"`+schema+`"`) != script {
		t.Error("the default-schema script differs by more than the schema name")
	}
}

func TestBadSchemaRejected(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	for _, bad := range []string{`bad"name`, "1abc", "a-b", "a b", "a.b", strings.Repeat("s", 64), "é"} {
		cfg := migrations.Config{Schema: bad}
		if cfg.Validate() == nil {
			t.Errorf("Validate accepted %q", bad)
		}
		if _, err := migrations.Up(ctx, db, cfg); err == nil {
			t.Errorf("Up accepted %q", bad)
		}
		if _, err := migrations.Status(ctx, db, cfg); err == nil {
			t.Errorf("Status accepted %q", bad)
		}
		if _, err := migrations.SQL(cfg); err == nil {
			t.Errorf("SQL accepted %q", bad)
		}
	}
	for _, good := range []string{"", "switchboard", "_x", "App_1", strings.Repeat("s", 63)} {
		if err := (migrations.Config{Schema: good}).Validate(); err != nil {
			t.Errorf("Validate(%q): %v", good, err)
		}
	}
}

// A cancelled wait for the lock fails Up and leaks no lock.
func TestUpWaitsForTheLockAndHonoursContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	schema := newSchema(t, db)
	holder, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if _, err := holder.ExecContext(ctx, `SELECT pg_advisory_lock(1937337954, hashtext($1))`, schema); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := migrations.Up(short, db, migrations.Config{Schema: schema}); err == nil {
		t.Fatal("Up did not wait for the lock held by another session")
	}
	if _, err := holder.ExecContext(ctx, `SELECT pg_advisory_unlock(1937337954, hashtext($1))`, schema); err != nil {
		t.Fatal(err)
	}
	if applied, err := migrations.Up(ctx, db, migrations.Config{Schema: schema}); err != nil || len(applied) != len(allVersions()) {
		t.Fatalf("Up after the lock was released: %v, %v", versions(applied), err)
	}
	assertUnlocked(t, db, schema)
}

func TestConcurrentUpInOneProcess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	schema := newSchema(t, db)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total []int
	)
	for range 8 {
		wg.Go(func() {
			applied, err := migrations.Up(ctx, db, migrations.Config{Schema: schema})
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total = append(total, versions(applied)...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(total)
	if !slices.Equal(total, allVersions()) {
		t.Errorf("applied in total %v, want each of %v once", total, allVersions())
	}
	if got := recorded(t, db, schema); !slices.Equal(got, allVersions()) {
		t.Errorf("schema_migrations %v", got)
	}
}

const (
	helperSchemaEnv = "SWITCHBOARD_MIGRATIONS_HELPER_SCHEMA"
	helperStartEnv  = "SWITCHBOARD_MIGRATIONS_HELPER_START" // unix nanoseconds
)

// TestHelperProcess is not a test: TestConcurrentUpAcrossProcesses runs the
// test binary with it selected and the environment set. It waits for the
// agreed start time, runs Up and prints the versions it applied.
func TestHelperProcess(t *testing.T) {
	schema := os.Getenv(helperSchemaEnv)
	if schema == "" {
		return // run as part of the normal suite: nothing to do
	}
	start, _ := strconv.ParseInt(os.Getenv(helperStartEnv), 10, 64)
	time.Sleep(time.Until(time.Unix(0, start)))
	db := openDB(t)
	applied, err := migrations.Up(context.Background(), db, migrations.Config{Schema: schema})
	for _, m := range applied {
		fmt.Printf("applied %d\n", m.Version)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func TestConcurrentUpAcrossProcesses(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	schema := newSchema(t, db)
	start := time.Now().Add(time.Second).UnixNano()
	type proc struct {
		cmd            *exec.Cmd
		stdout, stderr bytes.Buffer
	}
	procs := make([]*proc, 2)
	for i := range procs {
		p := &proc{cmd: exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")}
		p.cmd.Env = append(os.Environ(), helperSchemaEnv+"="+schema, helperStartEnv+"="+strconv.FormatInt(start, 10))
		p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = p
	}
	var total []int
	for i, p := range procs {
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("process %d: %v\nstdout:\n%s\nstderr:\n%s", i, err, p.stdout.String(), p.stderr.String())
		}
		sc := bufio.NewScanner(&p.stdout)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "applied "); ok {
				n, _ := strconv.Atoi(v)
				total = append(total, n)
			}
		}
	}
	slices.Sort(total)
	if !slices.Equal(total, allVersions()) {
		t.Errorf("the processes applied %v in total, want each of %v exactly once", total, allVersions())
	}
	if got := recorded(t, db, schema); !slices.Equal(got, allVersions()) {
		t.Errorf("schema_migrations %v", got)
	}
}
