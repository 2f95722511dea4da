package postgres

import (
	"context"
	stdsql "database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/switchboard-go/switchboard/migrations"
)

// noSubscriberCode is the SQLSTATE the publish statement raises (through
// bridge_no_subscriber, defined in migrations/sql/0001_bridge.sql) when the
// topic has no consumer group at all.
const noSubscriberCode = "SB404"

// maxTopicLen bounds topic names: a topic is the payload of a NOTIFY, which
// PostgreSQL limits to 8000 bytes, and it is stored in every queue row.
const maxTopicLen = 1024

// topicChars mirrors watermill-sql's own topic check (its Publisher rejects
// any other character), so that a subscription can never be created for a
// topic nothing could publish to.
var topicChars = regexp.MustCompile(`^[A-Za-z0-9\-$:._]+$`)

func validateTopic(topic string) error {
	if len(topic) > maxTopicLen {
		return fmt.Errorf("postgres: topic is %d bytes long, at most %d allowed", len(topic), maxTopicLen)
	}
	if !topicChars.MatchString(topic) {
		return fmt.Errorf("postgres: topic %q: %w", topic, wmsql.ErrInvalidTopicName)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Schema (DDL)
//
// The bridge's tables are version 1 of package migrations
// (migrations/sql/0001_bridge.sql); Open runs migrations.Up, which creates
// them (and every other table the library owns) when they are missing.
// ---------------------------------------------------------------------------

// validSchema reports whether name is acceptable as the schema URL
// parameter: the rule of package migrations, and not empty.
func validSchema(name string) bool {
	return name != "" && migrations.Config{Schema: name}.Validate() == nil
}

// ensureSchema applies the pending migrations to schema. When everything is
// applied (every Open after the first) it only reads schema_migrations: no
// lock, no writes. Otherwise migrations.Up serialises concurrent callers
// with an advisory lock.
func ensureSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	db := stdlib.OpenDBFromPool(pool) // its Close leaves the pool open
	defer db.Close()
	if _, err := migrations.Up(ctx, db, migrations.Config{Schema: schema}); err != nil {
		return fmt.Errorf("postgres: creating the tables in schema %s: %w", quoteIdent(schema), err)
	}
	return nil
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// ---------------------------------------------------------------------------
// Queries (DML)
// ---------------------------------------------------------------------------

// queries holds every statement the bridge runs, with the schema filled in.
type queries struct {
	upsertGroup string
	deleteGroup string
	gcReplies   string
	claim       string
	publish     string
	publishMany string
	ack         string
	nack        string
	release     string
	extend      string
}

// publishSQL is the statement behind every Publish. $1 topic, $2 uuids, $3
// payloads, $4 metadata (JSON text), $5 NOTIFY channel. In one statement it
// copies every message to every group of the topic (in publish order), raises
// SB404 when there is no group, and NOTIFYs — which PostgreSQL delivers only
// when the surrounding transaction commits, so a listener never wakes before
// the rows are visible. Identical notifications of one transaction are folded.
func publishSQL(qs string) string {
	return strings.ReplaceAll(`
			WITH m AS (
				SELECT * FROM unnest($2::text[], $3::bytea[], $4::text[])
					WITH ORDINALITY AS m(uuid, payload, metadata, ord)
			), ins AS (
				INSERT INTO {s}.bridge_queue (group_id, uuid, payload, metadata)
				SELECT g.id, m.uuid, m.payload, m.metadata::jsonb
				FROM {s}.bridge_groups g CROSS JOIN m
				WHERE g.topic = $1
				ORDER BY m.ord, g.id
				RETURNING 1
			), n AS (SELECT count(*) AS n FROM ins)
			SELECT CASE WHEN n.n = 0 AND cardinality($2::text[]) > 0
			            THEN {s}.bridge_no_subscriber($1) ELSE n.n END,
			       pg_notify($5, $1)
			FROM n`, "{s}", qs)
}

func newQueries(qs string) queries {
	r := strings.NewReplacer("{s}", qs)
	return queries{
		// $1 topic, $2 group, $3 kind. Returns the existing kind on conflict,
		// so the caller can refuse to join a group as another kind.
		upsertGroup: r.Replace(`
			INSERT INTO {s}.bridge_groups (topic, name, kind) VALUES ($1, $2, $3)
			ON CONFLICT (topic, name) DO UPDATE SET seen_at = now()
			RETURNING id, kind`),

		deleteGroup: r.Replace(`DELETE FROM {s}.bridge_groups WHERE id = $1 AND kind = 'reply'`),

		// $1 staleness in microseconds.
		gcReplies: r.Replace(`
			DELETE FROM {s}.bridge_groups
			WHERE kind = 'reply' AND seen_at < now() - $1::bigint * interval '1 microsecond'`),

		publish: publishSQL(qs),

		// The group-commit statement (see committer): $1 topic of each
		// message, $2 uuids, $3 payloads, $4 metadata, $5 NOTIFY channel.
		// Every message goes to every group of its topic, in order; one
		// row per topic says how many groups it has (0: the caller gets
		// bridge.ErrNoSubscriber, and nothing was stored for it) and
		// NOTIFYs it on commit. The count reads the snapshot the INSERT
		// read.
		publishMany: r.Replace(`
			WITH m AS (
				SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[])
					WITH ORDINALITY AS m(topic, uuid, payload, metadata, ord)
			), ins AS (
				INSERT INTO {s}.bridge_queue (group_id, uuid, payload, metadata)
				SELECT g.id, m.uuid, m.payload, m.metadata::jsonb
				FROM m JOIN {s}.bridge_groups g ON g.topic = m.topic
				ORDER BY m.ord, g.id
			), t AS (SELECT DISTINCT topic FROM m)
			SELECT t.topic, (SELECT count(*) FROM {s}.bridge_groups g WHERE g.topic = t.topic),
			       pg_notify($5, t.topic)::text
			FROM t`),

		// $1 group id, $2 limit, $3 lease (ack deadline) in microseconds.
		// SKIP LOCKED lets every member and every worker claim concurrently
		// without waiting on each other; the lease is the row's visible_at, so
		// no transaction stays open while a handler runs. MATERIALIZED keeps
		// the locking subquery from being inlined and re-evaluated.
		// The same round trip says when to look again: the last column holds
		// the seconds until the group's next row becomes claimable (a nacked
		// message, a lease running out, including those just taken; NULL:
		// none). It is on every row, and on a row of NULLs when nothing was
		// claimed.
		claim: r.Replace(`
			WITH c AS MATERIALIZED (
				SELECT id FROM {s}.bridge_queue
				WHERE group_id = $1 AND visible_at <= now()
				ORDER BY visible_at, id
				LIMIT $2
				FOR UPDATE SKIP LOCKED
			), u AS (
				UPDATE {s}.bridge_queue q
				SET visible_at = now() + $3::bigint * interval '1 microsecond', attempts = q.attempts + 1
				FROM c WHERE q.id = c.id
				RETURNING q.id, q.uuid, q.payload, q.metadata, q.attempts, q.visible_at
			), nv AS (
				SELECT extract(epoch FROM least(
					(SELECT min(visible_at) FROM {s}.bridge_queue
					 WHERE group_id = $1 AND id NOT IN (SELECT id FROM c)),
					(SELECT min(visible_at) FROM u)) - clock_timestamp())::float8 AS secs
			)
			SELECT u.id, u.uuid, u.payload, u.metadata, u.attempts, nv.secs
			FROM nv LEFT JOIN u ON true`),

		// $1 ids of acked rows, $2 their attempts seen at claim (the lease
		// tokens): a row whose lease ended and that was claimed again
		// belongs to its new holder and stays.
		ack: r.Replace(`
			DELETE FROM {s}.bridge_queue q
			USING unnest($1::bigint[], $2::integer[]) AS a(id, attempts)
			WHERE q.id = a.id AND q.attempts = a.attempts`),

		// $1 id, $2 attempts seen at claim (the lease token), $3 delay in µs.
		nack: r.Replace(`
			UPDATE {s}.bridge_queue
			SET visible_at = now() + $3::bigint * interval '1 microsecond'
			WHERE id = $1 AND attempts = $2`),

		// $1 ids, $2 attempts seen at claim (the lease tokens), $3 lease in
		// microseconds: a heartbeat renews the leases of the rows a member
		// holds, in one statement, and returns the ids it renewed.
		extend: r.Replace(`
			UPDATE {s}.bridge_queue q SET visible_at = now() + $3::bigint * interval '1 microsecond'
			FROM unnest($1::bigint[], $2::integer[]) AS a(id, attempts)
			WHERE q.id = a.id AND q.attempts = a.attempts
			RETURNING q.id`),

		// Claimed rows that were never handed to a handler go back as they
		// were, $1 ids, $2 attempts seen at claim; each takes back its place
		// in the group's order (its publication time), not the back of the
		// queue.
		release: r.Replace(`
			UPDATE {s}.bridge_queue q SET visible_at = LEAST(q.published_at, now()), attempts = q.attempts - 1
			FROM unnest($1::bigint[], $2::integer[]) AS a(id, attempts)
			WHERE q.id = a.id AND q.attempts = a.attempts`),
	}
}

// ---------------------------------------------------------------------------
// watermill-sql schema adapter
// ---------------------------------------------------------------------------

// SchemaAdapter is a watermill-sql SchemaAdapter for the bridge's tables. The
// bridge's own publisher is watermill-sql's Publisher with this adapter; use
// the same pair on a transaction to publish atomically with other writes
// (a transactional outbox without a relay):
//
//	pub, _ := wmsql.NewPublisher(wmsql.TxFromPgx(tx),
//		wmsql.PublisherConfig{SchemaAdapter: postgres.SchemaAdapter{Schema: "switchboard"}}, nil)
//
// The insert fans the message out to every consumer group of the topic and
// NOTIFYs the subscribers on commit; it fails with SQLSTATE SB404 when the
// topic has no group. Reading is not done through watermill-sql's Subscriber
// (see the package documentation), so SelectQuery returns an error.
type SchemaAdapter struct {
	// Schema is the PostgreSQL schema holding the tables; empty means
	// DefaultSchema.
	Schema string
}

var _ wmsql.SchemaAdapter = SchemaAdapter{}

func (a SchemaAdapter) schema() (string, error) {
	s := a.Schema
	if s == "" {
		s = DefaultSchema
	}
	if err := (migrations.Config{Schema: s}).Validate(); err != nil {
		return "", fmt.Errorf("postgres: %w", err)
	}
	return s, nil
}

// InsertQuery implements wmsql.SchemaAdapter: one statement that queues
// params.Msgs for every consumer group of params.Topic and notifies
// listeners on commit.
func (a SchemaAdapter) InsertQuery(params wmsql.InsertQueryParams) (wmsql.Query, error) {
	s, err := a.schema()
	if err != nil {
		return wmsql.Query{}, err
	}
	if err := validateTopic(params.Topic); err != nil {
		return wmsql.Query{}, err
	}
	uuids, payloads, metas, err := encodeMessages(params.Msgs)
	if err != nil {
		return wmsql.Query{}, err
	}
	return wmsql.Query{
		Query: publishSQL(quoteIdent(s)),
		Args:  []any{params.Topic, uuids, payloads, metas, s},
	}, nil
}

// encodeMessages turns msgs into the publish statements' array arguments.
func encodeMessages(msgs []*message.Message) (uuids []string, payloads [][]byte, metas []string, err error) {
	uuids = make([]string, len(msgs))
	payloads = make([][]byte, len(msgs))
	metas = make([]string, len(msgs))
	for i, m := range msgs {
		md := m.Metadata
		if md == nil {
			md = message.Metadata{}
		}
		js, err := json.Marshal(md)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("postgres: metadata of message %s: %w", m.UUID, err)
		}
		uuids[i], payloads[i], metas[i] = m.UUID, m.Payload, string(js)
	}
	return uuids, payloads, metas, nil
}

// errNoWatermillSubscriber explains why SelectQuery is not available.
var errNoWatermillSubscriber = errors.New("postgres: the bridge tables are read by this package's Subscriber, not by watermill-sql's (no SKIP LOCKED, head-of-line Nack)")

// SelectQuery implements wmsql.SchemaAdapter. It always fails: use the
// bridge's Subscriber.
func (a SchemaAdapter) SelectQuery(wmsql.SelectQueryParams) (wmsql.Query, error) {
	return wmsql.Query{}, errNoWatermillSubscriber
}

// UnmarshalMessage implements wmsql.SchemaAdapter for rows of id, uuid,
// payload, metadata and attempts of the bridge's queue.
func (a SchemaAdapter) UnmarshalMessage(params wmsql.UnmarshalMessageParams) (wmsql.Row, error) {
	var (
		r        wmsql.Row
		uuid     string
		attempts int32
	)
	if err := params.Row.Scan(&r.Offset, &uuid, &r.Payload, &r.Metadata, &attempts); err != nil {
		return wmsql.Row{}, fmt.Errorf("postgres: scanning message row: %w", err)
	}
	r.UUID = []byte(uuid)
	r.Msg = decodeMessage(uuid, r.Payload, r.Metadata)
	r.ExtraData = map[string]any{"attempts": attempts}
	return r, nil
}

// UnreadableMetadataKey holds, on a delivered message, the metadata column
// of a row whose metadata is not a JSON object (a row another producer
// wrote), as its JSON text.
const UnreadableMetadataKey = "_unreadable_metadata"

// decodeMessage builds a message from a queue row's columns. Metadata is
// a JSON object; a value that is not a string (a row written by another
// producer) is kept as its JSON text (null as ""), and metadata that is
// not an object under UnreadableMetadataKey, rather than failing the row:
// a row that cannot be decoded would be leased again every ack_deadline,
// for ever, and its message never reach a handler or a dead-letter store.
func decodeMessage(uuid string, payload, metadata []byte) *message.Message {
	md := message.Metadata{}
	if len(metadata) > 0 {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(metadata, &raw); err != nil {
			raw = nil
			md[UnreadableMetadataKey] = string(metadata)
		}
		for k, v := range raw {
			var str string
			if json.Unmarshal(v, &str) == nil {
				md[k] = str
			} else {
				md[k] = string(v)
			}
		}
	}
	m := message.NewMessage(uuid, payload)
	m.Metadata = md
	return m
}

// SchemaInitializingQueries implements wmsql.SchemaAdapter with the script
// of package migrations (migrations.SQL) for the adapter's schema: every
// table the library owns, recorded in schema_migrations. The tables do not
// depend on the topic; the script is idempotent but must not run
// concurrently with itself — prefer migrations.Up, which takes a lock (the
// bridge calls it when it opens).
func (a SchemaAdapter) SchemaInitializingQueries(wmsql.SchemaInitializingQueriesParams) ([]wmsql.Query, error) {
	s, err := a.schema()
	if err != nil {
		return nil, err
	}
	script, err := migrations.SQL(migrations.Config{Schema: s})
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return []wmsql.Query{{Query: script}}, nil
}

// SubscribeIsolationLevel implements wmsql.SchemaAdapter; claims are single
// statements under READ COMMITTED.
func (a SchemaAdapter) SubscribeIsolationLevel() stdsql.IsolationLevel {
	return stdsql.LevelReadCommitted
}
