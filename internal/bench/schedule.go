package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync/atomic"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/delay"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/migrations"
	"github.com/switchboard-go/switchboard/outbox"
)

// The schedule workloads (PostgreSQL): an event scheduled ScheduleAhead
// ahead, delivered to a subscribing handler; the figures are its timing
// error (how far from its due time it was handled, late or early:
// Watermill's delay keeps due times to the second) and, under a burst, the scheduled messages
// delivered per second. Switchboard: Event.Schedule with outbox.Scheduler
// over the backend's bridge, defaults. Raw Watermill: components/delay
// with watermill-sql's delayed PostgreSQL publisher and subscriber, as
// Watermill's documentation shows them (delay.Until per message, the
// subscriber's defaults: a 1 s poll when idle).

// ScheduleAhead is how far ahead the schedule workloads schedule each
// message.
const ScheduleAhead = 100 * time.Millisecond

// scheduleRig is a running schedule topology.
type scheduleRig struct {
	// schedule schedules the event of newItem(seq), due at at.
	schedule func(ctx context.Context, seq int64, at time.Time) error
	close    func() error
}

// scheduleTrial: one message at a time, after a random idle pause (as in
// outbox-c1), due ScheduleAhead ahead; the sample is its lateness.
func scheduleTrial(e env) (*trial, error) {
	w := make(waiter, 1)
	r, err := e.side.scheduled(e.ctx, e.ns, w.deliver)
	if err != nil {
		return nil, err
	}
	op := func(ctx context.Context, seq int64) (time.Duration, error) {
		if !sleep(ctx, time.Duration(mrand.Int64N(int64(OutboxPause)))) {
			return 0, ctx.Err()
		}
		due := time.Now().Add(ScheduleAhead)
		if err := r.schedule(ctx, seq, due); err != nil {
			return 0, err
		}
		if err := w.wait(ctx, newItem(seq).ID); err != nil {
			return 0, err
		}
		late := time.Since(due)
		if late < -time.Millisecond && e.sideID == "sb" {
			return 0, fmt.Errorf("message %d delivered %s before it was due", seq, -late)
		}
		return late.Abs(), nil // Watermill's delay is kept to the second: its messages may come early
	}
	return &trial{
		round: func(ctx context.Context, t Timing) (sample, error) {
			if !e.opts.Quick {
				t.MinSamples = max(t.MinSamples, ceilDiv(OutboxMinSamples, e.opts.Rounds))
			}
			lat, err := latencies(ctx, t, op)
			return sample{lat: lat}, err
		},
		close: r.close,
	}, nil
}

// scheduleBurstTrial: OutboxWriters schedule back to back, each message
// due ScheduleAhead ahead, at most InFlight scheduled but not delivered;
// each round yields the lateness of every message scheduled after the
// warm-up and the messages delivered per second in the window.
func scheduleBurstTrial(e env) (*trial, error) {
	type burst struct {
		f   *fanout
		rec *commitLatencies
	}
	var cur atomic.Pointer[burst]
	r, err := e.side.scheduled(e.ctx, e.ns, func(id string) {
		if b := cur.Load(); b != nil {
			b.rec.delivered(id)
			b.f.deliver(0, id)
		}
	})
	if err != nil {
		return nil, err
	}
	return &trial{
		round: func(ctx context.Context, t Timing) (sample, error) {
			if !e.opts.Quick {
				t.MinSamples = max(t.MinSamples, ceilDiv(OutboxBurstMinRows, e.opts.Rounds))
			}
			rec := newCommitLatencies(time.Now().Add(t.Warmup))
			rec.absolute = true
			b := &burst{newFanout(1, InFlight), rec}
			cur.Store(b)
			n, el, err := b.f.run(ctx, t, OutboxWriters, 1, single(func(ctx context.Context, seq int64) error {
				due := time.Now().Add(ScheduleAhead)
				err := r.schedule(ctx, seq, due)
				if err == nil {
					b.rec.committed(newItem(seq).ID, due) // the latency is from the due time
				}
				return err
			}))
			return sample{lat: b.rec.sorted(), ops: n, el: el}, err
		},
		close: r.close,
	}, nil
}

func (s sbSide) scheduled(ctx context.Context, ns string, deliver func(string)) (_ *scheduleRig, err error) {
	if s.pgURL == "" {
		return nil, errSkip
	}
	schema := "sbs_" + ns
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
	db, err := sql.Open("pgx", s.pgURL)
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
	sched := &outbox.Scheduler{DatabaseURL: s.pgURL, Schema: schema, Logger: quiet}
	closers.push(sched.Close)
	ev := engine.NewEvent[Item](ns + ".due")
	svc := engine.NewService(ns+"-a", "1")
	engine.Subscribe(svc, ev, func(_ context.Context, it Item) error { deliver(it.ID); return nil })
	e, err := engine.New(engine.Config{Bridge: s.url, Logger: quiet, Scheduler: sched})
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
	return &scheduleRig{
		schedule: func(ctx context.Context, seq int64, at time.Time) error {
			_, err := ev.Schedule(engine.WithEngine(ctx, e), at, newItem(seq))
			return err
		},
		close: closers.close,
	}, nil
}

func (r rawSide) scheduled(ctx context.Context, ns string, deliver func(string)) (*scheduleRig, error) {
	if r.scheduleRig == nil {
		return nil, errSkip
	}
	return r.scheduleRig(ctx, ns, deliver)
}

// rawSchedule is Watermill's delayed messages on PostgreSQL: the delayed
// publisher (delay.Until on each message) and the delayed subscriber, a
// router handler unmarshalling the event. Without PostgreSQL (pgURL
// empty) it is nil.
func rawSchedule(pgURL, prefix string) func(context.Context, string, func(string)) (*scheduleRig, error) {
	if pgURL == "" {
		return nil
	}
	return func(ctx context.Context, ns string, deliver func(string)) (_ *scheduleRig, err error) {
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
		admin, err := pgxpool.New(ctx, pgURL)
		if err != nil {
			return nil, err
		}
		closers.push(func() error { admin.Close(); return nil })
		schema := prefix + ns + "_sc"
		if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
			return nil, err
		}
		closers.push(func() error { return dropSchema(context.Background(), admin, schema) })
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
		db := wsql.BeginnerFromPgx(pool)
		pub, err := wsql.NewDelayedPostgreSQLPublisher(db, wsql.DelayedPostgreSQLPublisherConfig{Logger: wlog})
		if err != nil {
			return nil, err
		}
		sub, err := wsql.NewDelayedPostgreSQLSubscriber(db, wsql.DelayedPostgreSQLSubscriberConfig{DeleteOnAck: true, Logger: wlog})
		if err != nil {
			return nil, err
		}
		topic := "due"
		if err := sub.(message.SubscribeInitializer).SubscribeInitialize(topic); err != nil {
			return nil, errors.Join(err, sub.Close())
		}
		router, err := newRouter()
		if err != nil {
			return nil, errors.Join(err, sub.Close())
		}
		router.AddConsumerHandler("due", topic, sub, func(msg *message.Message) error {
			var ev ItemEvent
			if err := marshaler.Unmarshal(msg, &ev); err != nil {
				return err
			}
			deliver(ev.ID)
			return nil
		})
		if err := run(ctx, router); err != nil {
			return nil, err
		}
		closers.push(router.Close)
		return &scheduleRig{
			schedule: func(ctx context.Context, seq int64, at time.Time) error {
				ev := ItemEvent(newItem(seq))
				msg, err := marshaler.Marshal(&ev)
				if err != nil {
					return err
				}
				msg.SetContext(ctx)
				delay.Message(msg, delay.Until(at))
				return pub.Publish(topic, msg)
			},
			close: closers.close,
		}, nil
	}
}
