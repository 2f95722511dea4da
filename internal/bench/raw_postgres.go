package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// RawPostgresConns is the pool size raw Watermill gets on PostgreSQL.
// pgxpool's default (the greater of 4 and the CPU count) starves the
// per-request reply subscriptions at concurrency 64, each of which polls in
// its own transaction; Switchboard keeps its own default.
const RawPostgresConns = 32

// The tuned variant's subscriber settings: watermill-sql's batch knob
// (default 100) and the shortest poll interval that does not turn an idle
// subscriber into a busy loop on the database (default 1 s).
const (
	PostgresTunedBatch = 500
	PostgresTunedPoll  = 10 * time.Millisecond
)

// postgresTransport is watermill-sql v4 as its documentation shows it:
// DefaultPostgreSQLSchema (a table per topic) with
// DefaultPostgreSQLOffsetsAdapter, a consumer group per handler, pgx through
// BeginnerFromPgx, subscribers with InitializeSchema and every other
// setting at its default (PollInterval 1 s, SubscribeBatchSize 100). Command
// and event publishers auto-initialize their topic's table.
//
// Request/reply subscribes once per request to a topic of its own ("r_" +
// operation id), so every request creates its table and offsets table
// (under watermill-sql's schema-initialisation advisory lock) and then
// polls; the reply publisher does not initialise (the subscriber did).
//
// Tuned (the "tuned" variant, not the documented setup): subscribers read
// batches of PostgresTunedBatch rows (SubscribeBatchSize) and poll every
// PostgresTunedPoll when there is nothing to read.
//
// Every figure gets its own PostgreSQL schema (the pool's search_path),
// dropped when the figure ends.
func postgresTransport(url, prefix string, admin *pgxpool.Pool, tuned bool) func(context.Context, string) (*transport, error) {
	subSchema, poll := wsql.DefaultPostgreSQLSchema{}, time.Duration(0)
	if tuned {
		subSchema.SubscribeBatchSize, poll = PostgresTunedBatch, PostgresTunedPoll
	}
	return func(ctx context.Context, ns string) (_ *transport, err error) {
		schema := prefix + ns
		if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
			return nil, err
		}
		cfg, err := pgxpool.ParseConfig(url)
		if err != nil {
			return nil, err
		}
		cfg.ConnConfig.RuntimeParams["search_path"] = schema
		cfg.MaxConns = RawPostgresConns
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, errors.Join(err, dropSchema(context.WithoutCancel(ctx), admin, schema))
		}
		closeAll := func() error {
			pool.Close()
			return dropSchema(context.Background(), admin, schema)
		}
		db := wsql.BeginnerFromPgx(pool)
		pub, err := wsql.NewPublisher(db, wsql.PublisherConfig{SchemaAdapter: wsql.DefaultPostgreSQLSchema{}, AutoInitializeSchema: true}, wlog)
		if err != nil {
			return nil, errors.Join(err, closeAll())
		}
		replyPub, err := wsql.NewPublisher(db, wsql.PublisherConfig{SchemaAdapter: wsql.DefaultPostgreSQLSchema{}}, wlog)
		if err != nil {
			return nil, errors.Join(err, closeAll())
		}
		group := func(g string) (message.Subscriber, error) {
			return wsql.NewSubscriber(db, wsql.SubscriberConfig{
				ConsumerGroup:    g,
				SchemaAdapter:    subSchema,
				OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
				InitializeSchema: true,
				PollInterval:     poll,
			}, wlog)
		}
		replySub, err := group("")
		if err != nil {
			return nil, errors.Join(err, closeAll())
		}
		return &transport{
			cmdPub: pub, evtPub: pub, replyPub: replyPub,
			cmdSub: group, evtSub: group, replySub: replySub,
			topic:      func(name string) string { return name },
			replyTopic: func(opID string) string { return "r_" + opID },
			durable:    true,
			close: func() error {
				return errors.Join(replySub.Close(), closeAll())
			},
		}, nil
	}
}

// dropSchema drops schema and everything in it. Request/reply leaves two
// tables per request, more than one DROP SCHEMA … CASCADE can lock, so
// tables go first, in batches.
func dropSchema(ctx context.Context, admin *pgxpool.Pool, schema string) error {
	for {
		rows, err := admin.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = $1 LIMIT 200", schema)
		if err != nil {
			return err
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if len(names) == 0 {
			break
		}
		q := make([]string, len(names))
		for i, n := range names {
			q[i] = pgx.Identifier{schema, n}.Sanitize()
		}
		if _, err := admin.Exec(ctx, "DROP TABLE IF EXISTS "+strings.Join(q, ", ")+" CASCADE"); err != nil {
			return fmt.Errorf("dropping tables of %s: %w", schema, err)
		}
	}
	_, err := admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	return err
}
