package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/migrations"
)

// DefaultSchema is the schema of the outbox and inbox tables unless told
// otherwise (the same default as package migrations).
const DefaultSchema = migrations.DefaultSchema

// quote validates schema and returns it quoted; "" means DefaultSchema.
func quote(schema string) (string, error) {
	cfg := migrations.Config{Schema: schema}
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	if schema == "" {
		schema = DefaultSchema
	}
	return `"` + schema + `"`, nil
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
	return &Publisher{exec: exec, insert: `INSERT INTO ` + qs + `.outbox (topic, uuid, payload, metadata) VALUES `}, nil
}

// Publish inserts one row per message, in order, in one statement. The
// first message's context is the statement's (it carries the caller's).
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString(p.insert)
	args := make([]any, 0, 4*len(msgs))
	for i, m := range msgs {
		md, err := json.Marshal(m.Metadata)
		if err != nil {
			return fmt.Errorf("outbox: metadata of %s: %w", m.UUID, err)
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "($%d, $%d, $%d, $%d)", 4*i+1, 4*i+2, 4*i+3, 4*i+4)
		args = append(args, topic, m.UUID, m.Payload, md)
	}
	if _, err := p.exec.ExecContext(msgs[0].Context(), b.String(), args...); err != nil {
		return fmt.Errorf("outbox: writing %d message(s) to %s: %w", len(msgs), topic, err)
	}
	return nil
}

// Close implements message.Publisher; it does nothing.
func (p *Publisher) Close() error { return nil }
