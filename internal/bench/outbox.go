package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for migrations.Up

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/outbox"
)

// The outbox workload: a transaction writes one event to the outbox and
// commits; the figure is the time from Commit to the subscribing handler.
// On both sides the relay forwards to an in-process bus (Switchboard's
// gochannel bridge, Watermill's GoChannel) so that the figure is the outbox
// path alone: Switchboard's outbox.Relay (woken by the commit's NOTIFY)
// against watermill's forwarder reading the forwarder topic with the SQL
// subscriber at its default poll (1 s).

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

// sbOutbox is Switchboard's transactional outbox as package outbox shows it:
// outbox.WithPgxTx + Emit inside the transaction, outbox.Relay forwarding
// to the bridge, default settings.
func sbOutbox(ctx context.Context, pgURL, ns string) (_ *rig, err error) {
	schema := "sbo_" + ns
	var closers []func() error
	closeAll := func() error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, closeAll())
		}
	}()
	db, err := sql.Open("pgx", pgURL)
	if err != nil {
		return nil, err
	}
	closers = append(closers, db.Close, func() error {
		_, err := db.Exec("DROP SCHEMA IF EXISTS " + pgx.Identifier{schema}.Sanitize() + " CASCADE")
		return err
	})
	if _, err := migrations.Up(ctx, db, migrations.Config{Schema: schema}); err != nil {
		return nil, err
	}
	pool, err := pgxpool.New(ctx, pgURL)
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() error { pool.Close(); return nil })
	b, err := bridge.Open(ctx, "gochannel://"+ns)
	if err != nil {
		return nil, err
	}
	closers = append(closers, b.Close)
	w := make(waiter, 1)
	ev := engine.NewEvent[Item](ns + ".placed")
	svc := engine.NewService(ns+"-a", "1")
	engine.Subscribe(svc, ev, func(_ context.Context, it Item) error { w.deliver(it.ID); return nil })
	e, err := engine.New(engine.Config{SharedBridge: b, Logger: quiet})
	if err != nil {
		return nil, err
	}
	if err := e.Register(svc); err != nil {
		return nil, err
	}
	if err := e.Start(ctx); err != nil {
		return nil, err
	}
	closers = append(closers, stopper(e))
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	relayDone := make(chan error, 1)
	go func() {
		relayDone <- outbox.Relay{DatabaseURL: pgURL, Schema: schema, Target: b, Logger: quiet}.Run(rctx)
	}()
	closers = append(closers, func() error { cancel(); return <-relayDone })
	return &rig{
		timed: func(ctx context.Context, seq int64) (time.Duration, error) {
			in := newItem(seq)
			tx, err := pool.Begin(ctx)
			if err != nil {
				return 0, err
			}
			if err := ev.Emit(outbox.WithPgxTx(engine.WithEngine(ctx, e), tx, schema), in); err != nil {
				return 0, errors.Join(err, tx.Rollback(ctx))
			}
			t0 := time.Now()
			if err := tx.Commit(ctx); err != nil {
				return 0, err
			}
			err = w.wait(ctx, in.ID)
			return time.Since(t0), err
		},
		close: closeAll,
	}, nil
}

// rawOutbox is watermill's outbox as its forwarder documentation shows it:
// in the transaction, an SQL publisher on the tx (TxFromPgx, default
// PostgreSQL schema) wrapped in forwarder.NewPublisher under a cqrs event
// bus; a forwarder.Forwarder reading the forwarder topic with the SQL
// subscriber (defaults: 1 s poll) and publishing to GoChannel, where an
// event processor handles the event.
func rawOutbox(pgURL, prefix string, admin *pgxpool.Pool) func(context.Context, string, waiter) (*rig, error) {
	return func(ctx context.Context, ns string, w waiter) (_ *rig, err error) {
		schema := prefix + ns
		if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
			return nil, err
		}
		var closers []func() error
		closeAll := func() error {
			var errs []error
			for i := len(closers) - 1; i >= 0; i-- {
				errs = append(errs, closers[i]())
			}
			return errors.Join(errs...)
		}
		closers = append(closers, func() error { return dropSchema(context.Background(), admin, schema) })
		defer func() {
			if err != nil {
				err = errors.Join(err, closeAll())
			}
		}()
		cfg, err := pgxpool.ParseConfig(pgURL)
		if err != nil {
			return nil, err
		}
		cfg.ConnConfig.RuntimeParams["search_path"] = schema
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		closers = append(closers, func() error { pool.Close(); return nil })
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
		ps := gochannel.NewGoChannel(gochannel.Config{}, wlog)
		fwd, err := forwarder.NewForwarder(sub, ps, wlog, fwdCfg)
		if err != nil {
			return nil, errors.Join(err, sub.Close(), ps.Close())
		}
		go func() { _ = fwd.Run(context.WithoutCancel(ctx)) }()
		<-fwd.Running()
		closers = append(closers, fwd.Close) // closes sub and ps too
		router, err := newRouter()
		if err != nil {
			return nil, err
		}
		proc, err := cqrs.NewEventProcessorWithConfig(router, cqrs.EventProcessorConfig{
			GenerateSubscribeTopic: func(p cqrs.EventProcessorGenerateSubscribeTopicParams) (string, error) {
				return p.EventName, nil
			},
			SubscriberConstructor: func(cqrs.EventProcessorSubscriberConstructorParams) (message.Subscriber, error) {
				return ps, nil
			},
			Marshaler: marshaler,
			Logger:    wlog,
		})
		if err != nil {
			return nil, err
		}
		if err := proc.AddHandlers(cqrs.NewEventHandler("svc_a", func(_ context.Context, e *ItemEvent) error {
			w.deliver(e.ID)
			return nil
		})); err != nil {
			return nil, err
		}
		if err := run(ctx, router); err != nil {
			return nil, err
		}
		closers = append(closers, router.Close)
		return &rig{
			timed: func(ctx context.Context, seq int64) (time.Duration, error) {
				ev := ItemEvent(newItem(seq))
				tx, err := pool.Begin(ctx)
				if err != nil {
					return 0, err
				}
				pub, err := wsql.NewPublisher(wsql.TxFromPgx(tx), wsql.PublisherConfig{SchemaAdapter: wsql.DefaultPostgreSQLSchema{}}, wlog)
				if err != nil {
					return 0, errors.Join(err, tx.Rollback(ctx))
				}
				bus, err := cqrs.NewEventBusWithConfig(forwarder.NewPublisher(pub, forwarder.PublisherConfig{}), cqrs.EventBusConfig{
					GeneratePublishTopic: func(p cqrs.GenerateEventPublishTopicParams) (string, error) { return p.EventName, nil },
					Marshaler:            marshaler,
					Logger:               wlog,
				})
				if err != nil {
					return 0, errors.Join(err, tx.Rollback(ctx))
				}
				if err := bus.Publish(ctx, &ev); err != nil {
					return 0, errors.Join(err, tx.Rollback(ctx))
				}
				t0 := time.Now()
				if err := tx.Commit(ctx); err != nil {
					return 0, err
				}
				err = w.wait(ctx, ev.ID)
				return time.Since(t0), err
			},
			close: closeAll,
		}, nil
	}
}
