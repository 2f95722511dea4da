package pgstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/migrations"
)

// Store is a deadletter.Store on PostgreSQL. It is safe for concurrent use.
type Store struct {
	db    *sql.DB
	table string // quoted schema.dead_letters
}

var _ deadletter.Store = (*Store)(nil)

// New returns a store on the dead_letters table of schema ("" means
// migrations.DefaultSchema). The schema name follows migrations.Config; New
// does not touch the database.
func New(db *sql.DB, schema string) (*Store, error) {
	if db == nil {
		return nil, errors.New("pgstore: nil *sql.DB")
	}
	cfg := migrations.Config{Schema: schema}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	if schema == "" {
		schema = migrations.DefaultSchema
	}
	return &Store{db: db, table: `"` + schema + `".dead_letters`}, nil // validated: no quote inside
}

// columns is the column list every read selects, in scan order.
const columns = `id, message_id, topic, service, handler, group_name, payload, metadata,
	error, error_kind, attempts, first_failed_at, last_failed_at, version`

// Put implements deadletter.Store: an upsert on (message_id, group_name,
// topic) that keeps the existing record's id and first_failed_at and adds
// 1 to its version.
func (s *Store) Put(ctx context.Context, r deadletter.Record) (string, error) {
	id := r.ID
	if id == "" {
		id = uuid.NewString()
	} else if _, err := uuid.Parse(id); err != nil {
		return "", fmt.Errorf("pgstore: record id %q is not a UUID", id)
	}
	md := make(map[string]string, len(r.Metadata))
	for k, v := range r.Metadata {
		md[clean(k)] = clean(v)
	}
	mdJSON, err := json.Marshal(md)
	if err != nil {
		return "", fmt.Errorf("pgstore: metadata of message %s: %w", r.MessageID, err)
	}
	payload := r.Payload
	if payload == nil {
		payload = []byte{}
	}
	var got string
	err = s.db.QueryRowContext(ctx, `
		INSERT INTO `+s.table+` AS d (`+columns+`)
		VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9, $10, $11, $12, $13, 1)
		ON CONFLICT (message_id, group_name, topic) DO UPDATE SET
			service = excluded.service, handler = excluded.handler,
			payload = excluded.payload, metadata = excluded.metadata,
			error = excluded.error, error_kind = excluded.error_kind, attempts = excluded.attempts,
			last_failed_at = excluded.last_failed_at, version = d.version + 1
		RETURNING d.id::text`,
		id, clean(r.MessageID), clean(r.Topic), clean(r.Service), clean(r.Handler), clean(r.Group),
		payload, string(mdJSON), clean(r.Error), clean(r.ErrorKind), r.Attempts,
		r.FirstFailedAt, r.LastFailedAt,
	).Scan(&got)
	if err != nil {
		return "", fmt.Errorf("pgstore: put message %s of group %s: %w", r.MessageID, r.Group, err)
	}
	return got, nil
}

// where is the WHERE clause ("" for none) and its arguments selecting the
// records f matches (after f.After when set).
func where(f deadletter.Filter) (string, []any, error) {
	var (
		conds []string
		args  []any
	)
	cond := func(expr string, values ...any) { // each "?" is the next value
		for _, v := range values {
			args = append(args, v)
			expr = strings.Replace(expr, "?", "$"+strconv.Itoa(len(args)), 1)
		}
		conds = append(conds, expr)
	}
	if f.Service != "" {
		cond("service = ?", f.Service)
	}
	if f.Handler != "" {
		cond("handler = ?", f.Handler)
	}
	if f.Topic != "" {
		cond("topic = ?", f.Topic)
	}
	if f.ErrorContains != "" {
		cond("strpos(lower(error), lower(?)) > 0", clean(f.ErrorContains))
	}
	if !f.Since.IsZero() {
		cond("last_failed_at >= ?", ceilMicro(f.Since))
	}
	if !f.Until.IsZero() {
		cond("last_failed_at < ?", ceilMicro(f.Until))
	}
	if f.After != "" {
		at, id, err := deadletter.ParseCursor(f.After)
		if err != nil {
			return "", nil, err
		}
		if _, err := uuid.Parse(id); err != nil {
			return "", nil, fmt.Errorf("deadletter: malformed cursor %q", f.After)
		}
		cond("(last_failed_at, id) > (?, ?::uuid)", at, id)
	}
	if len(conds) == 0 {
		return "", nil, nil
	}
	return ` WHERE ` + strings.Join(conds, ` AND `), args, nil
}

// List implements deadletter.Store.
func (s *Store) List(ctx context.Context, f deadletter.Filter) ([]deadletter.Record, string, error) {
	w, args, err := where(f)
	if err != nil {
		return nil, "", err
	}
	query := `SELECT ` + columns + ` FROM ` + s.table + w
	size := f.PageSize()
	args = append(args, size+1) // one more tells whether there is a next page
	query += ` ORDER BY last_failed_at, id LIMIT $` + strconv.Itoa(len(args))

	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, "", fmt.Errorf("pgstore: list: %w", err)
	}
	defer rows.Close()
	var out []deadletter.Record
	for rows.Next() {
		r, err := scan(rows)
		if err != nil {
			return nil, "", err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("pgstore: list: %w", err)
	}
	if len(out) > size {
		out = out[:size]
		last := out[size-1]
		return out, last.LastFailedAt.UTC().Format(time.RFC3339Nano) + "|" + last.ID, nil
	}
	return out, "", nil
}

// Get implements deadletter.Store.
func (s *Store) Get(ctx context.Context, id string) (deadletter.Record, error) {
	if _, err := uuid.Parse(id); err != nil {
		return deadletter.Record{}, fmt.Errorf("%w: %s", deadletter.ErrNotFound, id)
	}
	r, err := scan(s.db.QueryRowContext(ctx, `SELECT `+columns+` FROM `+s.table+` WHERE id = $1::uuid`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return deadletter.Record{}, fmt.Errorf("%w: %s", deadletter.ErrNotFound, id)
	}
	return r, err
}

// Delete implements deadletter.Store. One statement deletes the row if
// its version is still version and tells a changed row from a missing one
// (the outer SELECT sees the table as it was before the DELETE).
func (s *Store) Delete(ctx context.Context, id string, version int64) error {
	if _, err := uuid.Parse(id); err != nil {
		return fmt.Errorf("%w: %s", deadletter.ErrNotFound, id)
	}
	var deleted, existed bool
	err := s.db.QueryRowContext(ctx, `
		WITH del AS (DELETE FROM `+s.table+` WHERE id = $1::uuid AND version = $2 RETURNING 1)
		SELECT EXISTS (SELECT 1 FROM del), EXISTS (SELECT 1 FROM `+s.table+` WHERE id = $1::uuid)`,
		id, version).Scan(&deleted, &existed)
	switch {
	case err != nil:
		return fmt.Errorf("pgstore: delete %s: %w", id, err)
	case deleted:
		return nil
	case existed:
		return fmt.Errorf("%w: %s (not at version %d any more)", deadletter.ErrChanged, id, version)
	default:
		return fmt.Errorf("%w: %s", deadletter.ErrNotFound, id)
	}
}

// Purge implements deadletter.Store.
func (s *Store) Purge(ctx context.Context, f deadletter.Filter) (int, error) {
	f.After = "" // not a page: everything that matches
	w, args, err := where(f)
	if err != nil {
		return 0, err
	}
	res, err := s.db.ExecContext(ctx, `DELETE FROM `+s.table+w, args...)
	if err != nil {
		return 0, fmt.Errorf("pgstore: purge: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("pgstore: purge: %w", err)
	}
	return int(n), nil
}

// scan reads one row selected with columns.
func scan(row interface{ Scan(...any) error }) (deadletter.Record, error) {
	var (
		r  deadletter.Record
		md []byte
	)
	err := row.Scan(&r.ID, &r.MessageID, &r.Topic, &r.Service, &r.Handler, &r.Group, &r.Payload, &md,
		&r.Error, &r.ErrorKind, &r.Attempts, &r.FirstFailedAt, &r.LastFailedAt, &r.Version)
	if errors.Is(err, sql.ErrNoRows) {
		return r, err
	}
	if err != nil {
		return r, fmt.Errorf("pgstore: reading a record: %w", err)
	}
	if err := json.Unmarshal(md, &r.Metadata); err != nil {
		return r, fmt.Errorf("pgstore: metadata of record %s: %w", r.ID, err)
	}
	r.FirstFailedAt, r.LastFailedAt = r.FirstFailedAt.UTC(), r.LastFailedAt.UTC()
	return r, nil
}

// clean makes s storable in a PostgreSQL text value: NUL bytes and invalid
// UTF-8 become U+FFFD.
func clean(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// ceilMicro rounds t up to PostgreSQL's microsecond precision, so that
// comparisons with stored times mean what they mean in Go (t ≥ since,
// t < until, t < purge time) for bounds with a finer fraction.
func ceilMicro(t time.Time) time.Time {
	if c := t.Truncate(time.Microsecond); !c.Equal(t) {
		return c.Add(time.Microsecond)
	}
	return t
}
