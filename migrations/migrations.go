package migrations

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultSchema is the schema used when Config.Schema is empty.
const DefaultSchema = "switchboard"

// placeholder is replaced, in every migration, by the quoted schema name.
const placeholder = "{{schema}}"

// lockNamespace is the first key of the advisory lock Up takes; the second is
// hashtext(schema). It is the key bridge/postgres used for its table creation
// before versioned migrations ("swib").
const lockNamespace = 1937337954

// schemaName is what Config.Schema accepts: a plain identifier that fits
// PostgreSQL's 63-byte limit. Upper case is accepted (the bridge always
// accepted it); the name is always quoted in SQL, so case is preserved.
var schemaName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// fileName is the form of an embedded migration's file name.
var fileName = regexp.MustCompile(`^([0-9]{4})_([a-z0-9_]+)\.sql$`)

// ErrChecksumMismatch is wrapped by Up's error when an applied migration's
// file has changed since it was applied (see the package documentation).
var ErrChecksumMismatch = errors.New("migrations: applied migration has changed")

// Config says where the tables live.
type Config struct {
	// Schema is the PostgreSQL schema that holds the tables and
	// schema_migrations; empty means DefaultSchema ("switchboard"). It must
	// be a plain identifier ([A-Za-z_][A-Za-z0-9_]*, at most 63 bytes) and is
	// always quoted in SQL.
	Schema string
}

// Validate reports every problem in c (the schema name is its one
// setting).
func (c Config) Validate() error {
	if s := c.schema(); !schemaName.MatchString(s) {
		return fmt.Errorf("migrations: invalid schema name %q (want a plain identifier of at most 63 bytes, %s)", s, schemaName)
	}
	return nil
}

func (c Config) schema() string {
	if c.Schema == "" {
		return DefaultSchema
	}
	return c.Schema
}

// Quoted validates c and returns its schema as a quoted SQL identifier
// (DefaultSchema when empty), for the packages that write their own SQL on
// the migrated tables.
func (c Config) Quoted() (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	return `"` + c.schema() + `"`, nil // the pattern admits no quote
}

// Migration is one embedded SQL file.
type Migration struct {
	// Version is the file's number, 1 for 0001_bridge.sql.
	Version int
	// Name is the file name, such as "0001_bridge.sql"; schema_migrations
	// records it.
	Name string
	// Checksum is the hex SHA-256 of the file (with \r\n turned into \n),
	// before the schema is filled in.
	Checksum string

	text string
}

// SQL returns the migration's statements for the schema in cfg.
func (m Migration) SQL(cfg Config) (string, error) {
	qs, err := cfg.Quoted()
	if err != nil {
		return "", err
	}
	return strings.ReplaceAll(m.text, placeholder, qs), nil
}

//go:embed sql/*.sql
var files embed.FS

// all is every embedded migration, by version; loaded once at init.
var all = load(files)

// load reads the embedded files. A malformed set is a build mistake, caught
// by any test of this package, so it panics.
func load(fsys fs.FS) []Migration {
	entries, err := fs.ReadDir(fsys, "sql")
	if err != nil {
		panic(fmt.Sprintf("migrations: %v", err))
	}
	var out []Migration
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			panic(fmt.Sprintf("migrations: file %q is not named NNNN_description.sql", e.Name()))
		}
		v, _ := strconv.Atoi(m[1])
		b, err := fs.ReadFile(fsys, "sql/"+e.Name())
		if err != nil {
			panic(fmt.Sprintf("migrations: %v", err))
		}
		text := strings.ReplaceAll(string(b), "\r\n", "\n")
		if rest := strings.ReplaceAll(text, placeholder, ""); strings.Contains(rest, "{{") {
			panic(fmt.Sprintf("migrations: %s has a placeholder other than %s", e.Name(), placeholder))
		}
		sum := sha256.Sum256([]byte(text))
		out = append(out, Migration{Version: v, Name: e.Name(), Checksum: hex.EncodeToString(sum[:]), text: text})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			panic(fmt.Sprintf("migrations: %s and %s have the same version", out[i-1].Name, out[i].Name))
		}
	}
	return out
}

// All returns every known migration in version order.
func All() []Migration { return append([]Migration(nil), all...) }

// MigrationStatus is a known migration and whether it is applied.
type MigrationStatus struct {
	Migration
	// Applied is true when schema_migrations records the version.
	Applied bool
	// AppliedAt is when it was applied; zero when pending.
	AppliedAt time.Time
	// AppliedChecksum is the checksum recorded when it was applied; empty
	// when pending.
	AppliedChecksum string
}

// Modified reports whether the migration was applied from a file whose
// checksum differs from the embedded one.
func (s MigrationStatus) Modified() bool { return s.Applied && s.AppliedChecksum != s.Checksum }

// querier is what both *sql.DB and *sql.Conn offer.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Status returns every known migration, in version order, with whether and
// when it was applied. It only reads: on a database where Up never ran,
// every migration is pending.
func Status(ctx context.Context, db *sql.DB, cfg Config) ([]MigrationStatus, error) {
	qs, err := cfg.Quoted()
	if err != nil {
		return nil, err
	}
	return status(ctx, db, qs)
}

func status(ctx context.Context, q querier, qs string) ([]MigrationStatus, error) {
	out := make([]MigrationStatus, len(all))
	for i, m := range all {
		out[i].Migration = m
	}
	var exists bool
	if err := q.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, qs+".schema_migrations").Scan(&exists); err != nil {
		return nil, fmt.Errorf("migrations: reading %s.schema_migrations: %w", qs, err)
	}
	if !exists {
		return out, nil
	}
	rows, err := q.QueryContext(ctx, `SELECT version, checksum, applied_at FROM `+qs+`.schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("migrations: reading %s.schema_migrations: %w", qs, err)
	}
	defer rows.Close()
	byVersion := make(map[int]*MigrationStatus, len(out))
	for i := range out {
		byVersion[out[i].Version] = &out[i]
	}
	for rows.Next() {
		var (
			v   int
			sum string
			at  time.Time
		)
		if err := rows.Scan(&v, &sum, &at); err != nil {
			return nil, fmt.Errorf("migrations: reading %s.schema_migrations: %w", qs, err)
		}
		if s := byVersion[v]; s != nil { // unknown versions: a newer release's
			s.Applied, s.AppliedChecksum, s.AppliedAt = true, sum, at
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrations: reading %s.schema_migrations: %w", qs, err)
	}
	return out, nil
}

// check splits st into pending migrations, failing on modified ones.
func check(st []MigrationStatus) ([]Migration, error) {
	var (
		pending  []Migration
		modified []string
	)
	for _, s := range st {
		switch {
		case s.Modified():
			modified = append(modified, fmt.Sprintf("%s (version %d, applied with checksum %s, file now %s)",
				s.Name, s.Version, s.AppliedChecksum, s.Checksum))
		case !s.Applied:
			pending = append(pending, s.Migration)
		}
	}
	if len(modified) > 0 {
		return nil, fmt.Errorf("%w since it was applied; nothing was applied: %s", ErrChecksumMismatch, strings.Join(modified, "; "))
	}
	return pending, nil
}

// bootstrapSQL creates schema_migrations in the (quoted) schema qs.
func bootstrapSQL(qs string) string {
	return `CREATE TABLE IF NOT EXISTS ` + qs + `.schema_migrations (
	version    integer     PRIMARY KEY,
	name       text        NOT NULL,
	checksum   text        NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`
}

// Up applies every pending migration in version order and returns those it
// applied (none when the schema is up to date). See the package
// documentation for the lock, the transactions and changed files. On error,
// the migrations applied before the failing one stay applied and are
// returned.
func Up(ctx context.Context, db *sql.DB, cfg Config) (applied []Migration, err error) {
	qs, err := cfg.Quoted()
	if err != nil {
		return nil, err
	}
	// Fast path: everything recorded, nothing to lock.
	st, err := status(ctx, db, qs)
	if err != nil {
		return nil, err
	}
	pending, err := check(st)
	if err != nil || len(pending) == 0 {
		return nil, err
	}

	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrations: connecting: %w", err)
	}
	defer conn.Close()
	schema := cfg.schema()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1, hashtext($2))`, lockNamespace, schema); err != nil {
		// The server may have granted the lock as the wait was cancelled:
		// never hand this session back to the pool.
		discard(conn)
		return nil, fmt.Errorf("migrations: waiting for the migration lock of schema %s: %w", qs, err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, uerr := conn.ExecContext(uctx, `SELECT pg_advisory_unlock($1, hashtext($2))`, lockNamespace, schema); uerr != nil {
			discard(conn) // closing the session releases the lock
		}
	}()

	if err := bootstrap(ctx, conn, qs); err != nil {
		return nil, err
	}
	// Another process may have migrated while this one waited.
	if st, err = status(ctx, conn, qs); err != nil {
		return nil, err
	}
	if pending, err = check(st); err != nil {
		return nil, err
	}
	for _, m := range pending {
		if err := apply(ctx, conn, qs, m); err != nil {
			return applied, err
		}
		applied = append(applied, m)
	}
	return applied, nil
}

// bootstrap creates the schema and schema_migrations when missing. Existence
// is checked first, so a role without CREATE privileges gets past it when an
// administrator created them.
func bootstrap(ctx context.Context, conn *sql.Conn, qs string) error {
	var haveSchema, haveTable bool
	err := conn.QueryRowContext(ctx, `SELECT to_regnamespace($1) IS NOT NULL, to_regclass($2) IS NOT NULL`,
		qs, qs+".schema_migrations").Scan(&haveSchema, &haveTable)
	if err != nil {
		return fmt.Errorf("migrations: checking schema %s: %w", qs, err)
	}
	if !haveSchema {
		if _, err := conn.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS `+qs); err != nil {
			return fmt.Errorf("migrations: creating schema %s: %w", qs, err)
		}
	}
	if !haveTable {
		if _, err := conn.ExecContext(ctx, bootstrapSQL(qs)); err != nil {
			return fmt.Errorf("migrations: creating %s.schema_migrations: %w", qs, err)
		}
	}
	return nil
}

// apply runs one migration and records it, in one transaction.
func apply(ctx context.Context, conn *sql.Conn, qs string, m Migration) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrations: %s: %w", m.Name, err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	// No arguments: the driver sends the file as one simple-protocol query,
	// which may hold several statements.
	if _, err := tx.ExecContext(ctx, strings.ReplaceAll(m.text, placeholder, qs)); err != nil {
		return fmt.Errorf("migrations: applying %s to schema %s: %w", m.Name, qs, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+qs+`.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)`,
		m.Version, m.Name, m.Checksum); err != nil {
		return fmt.Errorf("migrations: recording %s in schema %s: %w", m.Name, qs, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrations: committing %s to schema %s: %w", m.Name, qs, err)
	}
	return nil
}

// discard closes conn's session instead of returning it to the pool (a
// pgxpool behind stdlib.OpenDBFromPool would otherwise keep it, with any
// session lock it holds).
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(dc any) error {
		if pc, ok := dc.(interface{ Conn() *pgx.Conn }); ok {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = pc.Conn().Close(ctx)
			cancel()
		}
		return driver.ErrBadConn // database/sql closes the driver connection
	})
}

// SQL returns the script of every migration for the schema in cfg, in
// version order, for teams that apply migrations with their own tool. It
// starts by creating the schema and schema_migrations; each migration has a
// comment header naming its version and file and ends by recording itself in
// schema_migrations, so that Up later finds nothing to apply. It does not
// touch a database.
func SQL(cfg Config) (string, error) {
	qs, err := cfg.Quoted()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "-- Switchboard migrations for schema %s, versions 1 to %d.\n", qs, all[len(all)-1].Version)
	b.WriteString("-- Each migration records itself in schema_migrations, as migrations.Up does.\n\n")
	fmt.Fprintf(&b, "CREATE SCHEMA IF NOT EXISTS %s;\n\n%s;\n", qs, bootstrapSQL(qs))
	for _, m := range all {
		fmt.Fprintf(&b, "\n-- ---------------------------------------------------------------------------\n")
		fmt.Fprintf(&b, "-- Version %d: %s (sha256 %s)\n", m.Version, m.Name, m.Checksum)
		fmt.Fprintf(&b, "-- ---------------------------------------------------------------------------\n\n")
		b.WriteString(strings.TrimRight(strings.ReplaceAll(m.text, placeholder, qs), "\n"))
		// Name and checksum come from the embedded set: [0-9a-z_.] only.
		fmt.Fprintf(&b, "\n\nINSERT INTO %s.schema_migrations (version, name, checksum)\nVALUES (%d, '%s', '%s')\nON CONFLICT (version) DO NOTHING;\n",
			qs, m.Version, m.Name, m.Checksum)
	}
	return b.String(), nil
}
