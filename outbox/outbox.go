package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/migrations"
)

// DefaultSchema is the schema of the outbox and inbox tables unless told
// otherwise (the same default as package migrations).
const DefaultSchema = migrations.DefaultSchema

// quote validates schema and returns it quoted; "" means DefaultSchema.
func quote(schema string) (string, error) {
	return migrations.Config{Schema: schema}.Quoted()
}

// WithTx returns ctx whose Emit and Send write to the outbox in schema
// inside tx. It panics on an invalid schema name (a programming error).
func WithTx(ctx context.Context, tx *sql.Tx, schema string) context.Context {
	return engine.WithPublisher(ctx, mustPublisher(wmsql.TxFromStdSQL(tx), schema))
}

// WithPgxTx is WithTx for a pgx transaction.
func WithPgxTx(ctx context.Context, tx pgx.Tx, schema string) context.Context {
	return engine.WithPublisher(ctx, mustPublisher(wmsql.TxFromPgx(tx), schema))
}

func mustPublisher(exec wmsql.ContextExecutor, schema string) *Publisher {
	p, err := NewPublisher(exec, schema)
	if err != nil {
		panic("outbox: " + err.Error())
	}
	return p
}

// Publisher writes messages to the outbox through exec, which is normally a
// transaction (wmsql.TxFromStdSQL, wmsql.TxFromPgx). Close is a no-op.
type Publisher struct {
	exec   wmsql.ContextExecutor
	insert string
}

// NewPublisher returns a publisher writing to schema's outbox through exec.
func NewPublisher(exec wmsql.ContextExecutor, schema string) (*Publisher, error) {
	qs, err := quote(schema)
	if err != nil {
		return nil, err
	}
	return &Publisher{exec: exec, insert: `INSERT INTO ` + qs + `.outbox (topic, uuid, payload, metadata, deliver_at) VALUES `}, nil
}

// ErrAlreadyScheduled is returned when a message is scheduled with the id
// of a scheduled message that still waits.
var ErrAlreadyScheduled = errors.New("outbox: a scheduled message with this id already waits")

// dueTime returns m's due time from its "scheduled_for", or nil (at once)
// when it has none.
func dueTime(m *message.Message) (*time.Time, error) {
	v := m.Metadata.Get(envelope.KeyScheduledFor)
	if v == "" {
		return nil, nil
	}
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return nil, fmt.Errorf("outbox: message %s: metadata %q: %w", m.UUID, envelope.KeyScheduledFor, err)
	}
	return &at, nil
}

// Publish inserts one row per message, in order, in one statement. The
// first message's context is the statement's (it carries the caller's).
// A message whose metadata holds "scheduled_for" (RFC 3339) is forwarded
// once that time has come: written in the caller's transaction, it is
// scheduled if and only if the transaction commits. A malformed
// "scheduled_for" is an error, and so is the id of a scheduled message
// that still waits (ErrAlreadyScheduled).
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString(p.insert)
	args := make([]any, 0, 5*len(msgs))
	for i, m := range msgs {
		md, err := json.Marshal(m.Metadata)
		if err != nil {
			return fmt.Errorf("outbox: metadata of %s: %w", m.UUID, err)
		}
		at, err := dueTime(m)
		if err != nil {
			return err
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d)", 5*i+1, 5*i+2, 5*i+3, 5*i+4, 5*i+5)
		args = append(args, topic, m.UUID, m.Payload, md, at)
	}
	if _, err := p.exec.ExecContext(msgs[0].Context(), b.String(), args...); err != nil {
		if duplicateSchedule(err) {
			err = fmt.Errorf("%w: %w", ErrAlreadyScheduled, err)
		}
		return fmt.Errorf("outbox: writing %d message(s) to %s: %w", len(msgs), topic, err)
	}
	return nil
}

// Close implements message.Publisher; it does nothing.
func (p *Publisher) Close() error { return nil }

// duplicateSchedule reports whether err is the refusal of a second waiting
// scheduled message with one id (index outbox_scheduled_uuid).
func duplicateSchedule(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "outbox_scheduled_uuid"
}
