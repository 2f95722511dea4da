// Package migrations owns the SQL of every table the library keeps in
// PostgreSQL, as numbered files embedded in the binary:
//
//	0001_bridge.sql           bridge_groups, bridge_queue, bridge_no_subscriber()  (bridge/postgres)
//	0002_deadletter.sql       dead_letters                                         (deadletter/pgstore)
//	0003_outbox.sql           outbox, outbox_notify()                              (outbox)
//	0004_inbox.sql            inbox                                                (outbox)
//	0005_deadletter_key.sql   dead_letters keyed by (message_id, group_name, topic),
//	                          version column                                       (deadletter/pgstore)
//	0006_outbox_inbox.sql     outbox retry and parking columns, outbox_notify(),
//	                          outbox_leader; inbox keyed by (message_id,
//	                          group_name, topic), reply column (stored replies)    (outbox)
//	0007_schedule.sql         outbox deliver_at (scheduled messages) and its
//	                          indexes, outbox_recurring                            (outbox)
//	0008_workflow.sql         workflow_runs, workflow_steps, workflow_signals,
//	                          workflow_notify()                                    (workflow)
//
// Migration 5 changes the key dead_letters upserts on: once it is applied,
// a process of an older release cannot store a dead letter (PostgreSQL
// refuses its ON CONFLICT clause), and a process of a newer release cannot
// before. Such a message is not acknowledged but redelivered later, so a
// rolling upgrade loses nothing; its dead letters are stored once every
// process runs the new release on the migrated schema.
//
// Every table lives in one schema (Config.Schema, default "switchboard"),
// next to a schema_migrations table that records what was applied:
//
//	schema_migrations(version integer PRIMARY KEY, name text, checksum text, applied_at timestamptz)
//
// # Applying
//
// Up creates the schema and schema_migrations when they are missing and
// applies every pending migration in version order, each in its own
// transaction together with its schema_migrations row, so a migration is
// either applied and recorded or neither. The PostgreSQL bridge calls Up
// when it opens; `switchboard migrate up` (cmd/switchboard) is the same call
// for operators; dead-letter stores expect it to have run.
//
// Up is safe to call from any number of processes at once. When
// schema_migrations already lists every migration it returns without
// taking a lock or writing anything (the common case: every process start
// after the first). Otherwise it takes a session-level advisory lock,
// pg_advisory_lock(1937337954, hashtext(schema)), on one dedicated
// connection (sql.DB.Conn) for the whole run, reads schema_migrations again
// under the lock and applies what is still pending; a second process waits
// for the lock, then finds nothing to do. The key is the one the bridge's
// table creation used before versioned migrations, so an older release
// starting during a rolling upgrade waits for Up too. Waiting for the lock is
// bounded only by ctx. If the lock cannot be released normally, the
// connection is closed rather than returned to the pool, which releases it.
//
// # Changed files
//
// Each applied migration is recorded with the SHA-256 of its file (line
// endings normalised, before the schema is filled in). A released migration
// must never change: if an applied migration's file no longer matches its
// checksum, Status reports it as Modified and Up applies nothing at all —
// not even pending migrations — and returns an error wrapping
// ErrChecksumMismatch that names every such file. It is never re-applied.
// Restore the file, or, when the difference is known to be harmless, set
// schema_migrations.checksum to the new value by hand.
//
// Versions recorded in schema_migrations that this build does not know (a
// newer release migrated the database) are ignored, so an older binary keeps
// working during a rolling upgrade.
//
// # Bringing your own migration tool
//
// SQL returns the full script for a schema — CREATE SCHEMA, schema_migrations,
// then every migration with a header naming its version and file — for teams
// that run goose, atlas or flyway themselves. Each migration in the script
// ends by recording itself in schema_migrations (ON CONFLICT DO NOTHING), so
// Up, and therefore the bridge when it opens, finds nothing left to apply and
// needs no DDL privileges. Every migration is written to be idempotent
// (IF NOT EXISTS, OR REPLACE), which also lets version 1 apply cleanly over
// the tables that releases before versioned migrations created.
//
// # Connections
//
// The functions take a *sql.DB, for example from
// sql.Open("pgx", url) with the driver in github.com/jackc/pgx/v5/stdlib. A
// program that holds a pgxpool.Pool can wrap it: stdlib.OpenDBFromPool(pool)
// returns a *sql.DB whose Close does not close the pool.
package migrations
