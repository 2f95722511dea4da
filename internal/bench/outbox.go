package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for migrations.Up

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/outbox"
)

// The outbox workloads: a transaction writes one business row and one event
// to the outbox and commits; the figures are the time from Commit to the
// subscribing handler and, under a burst, the rows handled per second.
// outbox-c1 relays to an in-process bus (Switchboard's gochannel bridge,
// Watermill's GoChannel) so that the figure is the outbox path alone:
// Switchboard's outbox.Relay (woken by the commit's NOTIFY) against
// watermill's forwarder reading the forwarder topic with the SQL subscriber
// at its default poll (1 s). outbox-burst relays to the backend's broker.

// waiter hands the ids the handler saw to the operation waiting for them.
type waiter chan string

func (w waiter) deliver(id string) {
	select {
	case w <- id:
	default: // nobody will wait for it (a leftover of a timed-out operation)
	}
}

// wait returns once id was delivered.
func (w waiter) wait(ctx context.Context, id string) error {
	tm := time.NewTimer(30 * time.Second)
	defer tm.Stop()
	for {
		select {
		case got := <-w:
			if got == id {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-tm.C:
			return fmt.Errorf("event %s not delivered within 30s of its commit", id)
		}
	}
}

// commitLatencies pairs each row's commit with its delivery, whichever is
// recorded first, and keeps the latency of the rows committed from since on.
type commitLatencies struct {
	since time.Time
	// absolute records how far from its start time each row was handled,
	// early or late (the schedule figures); else how long after, at least 0.
	absolute bool
	mu       sync.Mutex
	seen     map[string]stamp // rows seen once, by id
	lat      []time.Duration
}

type stamp struct {
	t      time.Time
	commit bool
}

func newCommitLatencies(since time.Time) *commitLatencies {
	return &commitLatencies{since: since, seen: map[string]stamp{}}
}

// committed records that the row id was committed at t (when Commit
// returned: the relay may deliver it before).
func (c *commitLatencies) committed(id string, t time.Time) { c.pair(id, stamp{t, true}) }

// delivered records that the handler got the row id now.
func (c *commitLatencies) delivered(id string) { c.pair(id, stamp{time.Now(), false}) }

func (c *commitLatencies) pair(id string, s stamp) {
	c.mu.Lock()
	defer c.mu.Unlock()
	other, ok := c.seen[id]
	if !ok || other.commit == s.commit {
		c.seen[id] = s // first of the pair (or a redelivery, kept until the round ends)
		return
	}
	delete(c.seen, id)
	commit, delivery := s, other
	if other.commit {
		commit, delivery = other, s
	}
	if !commit.t.Before(c.since) {
		d := delivery.t.Sub(commit.t)
		if c.absolute {
			d = d.Abs()
		}
		c.lat = append(c.lat, max(0, d))
	}
}

// sorted returns the latencies recorded so far, sorted.
func (c *commitLatencies) sorted() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := slices.Clone(c.lat)
	slices.Sort(out)
	return out
}

// outboxConns is the pool size of the transactions' pool, both sides: the
// burst's writers each hold a connection, with room for the rest.
const outboxConns = 2 * OutboxWriters

// ordersTable creates the business table in schema and returns its
// qualified name.
func ordersTable(ctx context.Context, exec func(context.Context, string) error, schema string) (string, error) {
	t := pgx.Identifier{schema, "orders"}.Sanitize()
	return t, exec(ctx, "CREATE TABLE "+t+" (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, item text NOT NULL)")
}

// sbOutbox is Switchboard's transactional outbox as package outbox and
// examples/outbox show it: outbox.WithPgxTx + Emit inside the transaction,
// outbox.Relay forwarding to the engine's bridge (bridgeURL), default
// settings.
func sbOutbox(ctx context.Context, pgURL, bridgeURL, ns string, deliver func(string)) (_ *outboxRig, err error) {
	schema := "sbo_" + ns
	var closers cleanup
	defer func() {
		if err != nil {
			err = errors.Join(err, closers.close())
		}
	}()
	unlock, err := lockServer(ctx, Postgres)
	if err != nil {
		return nil, err
	}
	closers.push(func() error { unlock(); return nil })
	db, err := sql.Open("pgx", pgURL)
	if err != nil {
		return nil, err
	}
	closers.push(db.Close, func() error {
		_, err := db.Exec("DROP SCHEMA IF EXISTS " + pgx.Identifier{schema}.Sanitize() + " CASCADE")
		return err
	})
	if _, err := migrations.Up(ctx, db, migrations.Config{Schema: schema}); err != nil {
		return nil, err
	}
	orders, err := ordersTable(ctx, func(ctx context.Context, q string) error { _, err := db.ExecContext(ctx, q); return err }, schema)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(pgURL)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = outboxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	closers.push(func() error { pool.Close(); return nil })
	ev := engine.NewEvent[Item](ns + ".placed")
	svc := engine.NewService(ns+"-a", "1")
	engine.Subscribe(svc, ev, func(_ context.Context, it Item) error { deliver(it.ID); return nil })
	e, err := engine.New(engine.Config{Bridge: bridgeURL, Logger: quiet})
	if err != nil {
		return nil, err
	}
	if err := e.Register(svc); err != nil {
		return nil, errors.Join(err, stopper(e)())
	}
	if err := e.Start(ctx); err != nil {
		return nil, err
	}
	closers.push(stopper(e))
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	relayDone := make(chan error, 1)
	go func() {
		relayDone <- outbox.Relay{DatabaseURL: pgURL, Schema: schema, Target: e.Bridge(), Logger: quiet}.Run(rctx)
	}()
	closers.push(func() error { cancel(); return <-relayDone })
	return &outboxRig{
		commit: func(ctx context.Context, seq int64) (time.Time, error) {
			in := newItem(seq)
			tx, err := pool.Begin(ctx)
			if err != nil {
				return time.Time{}, err
			}
			if _, err := tx.Exec(ctx, "INSERT INTO "+orders+" (item) VALUES ($1)", in.ID); err != nil {
				return time.Time{}, errors.Join(err, tx.Rollback(ctx))
			}
			if err := ev.Emit(outbox.WithPgxTx(engine.WithEngine(ctx, e), tx, schema), in); err != nil {
				return time.Time{}, errors.Join(err, tx.Rollback(ctx))
			}
			err = tx.Commit(ctx)
			return time.Now(), err
		},
		close: closers.close,
	}, nil
}

// rawOutbox is watermill's outbox as its forwarder documentation shows it:
// in the transaction, an SQL publisher on the tx (TxFromPgx, default
// PostgreSQL schema) wrapped in forwarder.NewPublisher under a cqrs event
// bus; a forwarder.Forwarder reading the forwarder topic with the SQL
// subscriber (defaults: 1 s poll) and publishing with target's event
// publisher, whose subscriber an event processor handles. The rig closes
// target. Without PostgreSQL (pgURL empty) it is nil.
func rawOutbox(pgURL, prefix string) func(context.Context, string, *transport, func(string)) (*outboxRig, error) {
	if pgURL == "" {
		return nil
	}
	return func(ctx context.Context, ns string, target *transport, deliver func(string)) (_ *outboxRig, err error) {
		closers := cleanup{target.close}
		defer func() {
			if err != nil {
				err = errors.Join(err, closers.close())
			}
		}()
		unlock, err := lockServer(ctx, Postgres)
		if err != nil {
			return nil, err
		}
		closers.push(func() error { unlock(); return nil })
		admin, err := pgxpool.New(ctx, pgURL)
		if err != nil {
			return nil, err
		}
		closers.push(func() error { admin.Close(); return nil })
		// Not prefix+ns: the PostgreSQL target's transport has that one.
		schema := prefix + ns + "_ob"
		if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
			return nil, err
		}
		closers.push(func() error { return dropSchema(context.Background(), admin, schema) })
		orders, err := ordersTable(ctx, func(ctx context.Context, q string) error { _, err := admin.Exec(ctx, q); return err }, schema)
		if err != nil {
			return nil, err
		}
		cfg, err := pgxpool.ParseConfig(pgURL)
		if err != nil {
			return nil, err
		}
		cfg.ConnConfig.RuntimeParams["search_path"] = schema
		cfg.MaxConns = outboxConns
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		closers.push(func() error { pool.Close(); return nil })
		sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(pool), wsql.SubscriberConfig{
			SchemaAdapter:    wsql.DefaultPostgreSQLSchema{},
			OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
			InitializeSchema: true,
		}, wlog)
		if err != nil {
			return nil, err
		}
		fwdCfg := forwarder.Config{}
		// The transactions' publishers cannot create the table (no DDL in
		// a tx through watermill-sql): create it up front.
		if err := sub.SubscribeInitialize("forwarder_topic"); err != nil {
			return nil, errors.Join(err, sub.Close())
		}
		fwd, err := forwarder.NewForwarder(sub, target.evtPub, wlog, fwdCfg)
		if err != nil {
			return nil, errors.Join(err, sub.Close())
		}
		go func() { _ = fwd.Run(context.WithoutCancel(ctx)) }()
		<-fwd.Running()
		closers.push(fwd.Close) // closes sub
		router, err := newRouter()
		if err != nil {
			return nil, err
		}
		if err := (rawSide{}).consumers(router, target, 1, func(_ int, id string) { deliver(id) }); err != nil {
			return nil, err
		}
		if err := run(ctx, router); err != nil {
			return nil, err
		}
		closers.push(router.Close)
		return &outboxRig{
			commit: func(ctx context.Context, seq int64) (time.Time, error) {
				ev := ItemEvent(newItem(seq))
				tx, err := pool.Begin(ctx)
				if err != nil {
					return time.Time{}, err
				}
				if _, err := tx.Exec(ctx, "INSERT INTO "+orders+" (item) VALUES ($1)", ev.ID); err != nil {
					return time.Time{}, errors.Join(err, tx.Rollback(ctx))
				}
				pub, err := wsql.NewPublisher(wsql.TxFromPgx(tx), wsql.PublisherConfig{SchemaAdapter: wsql.DefaultPostgreSQLSchema{}}, wlog)
				if err != nil {
					return time.Time{}, errors.Join(err, tx.Rollback(ctx))
				}
				bus, err := cqrs.NewEventBusWithConfig(forwarder.NewPublisher(pub, forwarder.PublisherConfig{}), cqrs.EventBusConfig{
					GeneratePublishTopic: func(p cqrs.GenerateEventPublishTopicParams) (string, error) { return target.topic(p.EventName), nil },
					Marshaler:            marshaler,
					Logger:               wlog,
				})
				if err != nil {
					return time.Time{}, errors.Join(err, tx.Rollback(ctx))
				}
				if err := bus.Publish(ctx, &ev); err != nil {
					return time.Time{}, errors.Join(err, tx.Rollback(ctx))
				}
				err = tx.Commit(ctx)
				return time.Now(), err
			},
			close: closers.close,
		}, nil
	}
}
