// Package pgstore is the PostgreSQL deadletter.Store: records live in the
// dead_letters table of a schema, created by version 2 of package
// migrations (migrations/sql/0002_deadletter.sql) and keyed by (message_id,
// group_name, topic), with a version column, since version 5
// (0005_deadletter_key.sql). Run migrations.Up (or
// `switchboard migrate up`) before using the store; opening the PostgreSQL
// bridge on the same schema does it too.
//
//	db, _ := sql.Open("pgx", "postgres://app@db:5432/app")
//	_, err := migrations.Up(ctx, db, migrations.Config{Schema: "switchboard"})
//	store, err := pgstore.New(db, "switchboard")
//
// The store follows deadletter.Store to the letter and behaves as
// deadletter.Memory does, with these PostgreSQL specifics:
//
//   - Record IDs are UUIDs. Put generates one for a new record; a Record.ID
//     given to Put must be a UUID. Get and Delete answer ErrNotFound for an
//     id that is not one.
//   - Times are stored with microsecond precision (timestamptz) and returned
//     in UTC.
//   - PostgreSQL text cannot hold NUL bytes or invalid UTF-8: Put replaces
//     them with U+FFFD in the text fields and in metadata keys and values,
//     rather than losing the record. The payload (bytea) is kept as is.
//   - List pages with a keyset on (last_failed_at, id), with the same cursor
//     format as deadletter.Memory ("<RFC 3339 time>|<id>"), so a page is
//     stable while records are added or removed. ErrorContains is a
//     case-insensitive substring match (lower() on both sides, no
//     wildcards).
//   - Put is one INSERT … ON CONFLICT statement that bumps version; Delete
//     is one DELETE … WHERE id = $1 AND version = $2. A Put that races
//     with a Delete either updates the row before the delete (which then
//     removes nothing: ErrChanged) or inserts a new row after it.
package pgstore
