package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// The ceilings: what each broker's Go client does alone, in this process,
// with the same 256-byte JSON payload — no Watermill, no Switchboard. The
// end-to-end ceilings (ceiling-e2e) run the one-publisher topology of
// event-1pub: one publisher, one consumer, at most InFlight messages
// published but not yet handled, a message counting once the consumer
// decoded and acknowledged it. Each is written the way the client's
// documentation recommends for throughput.

// Settings of the ceilings.
const (
	// NATSCeilingPending bounds the JetStream publishes awaiting their ack
	// (PublishAsyncMaxPending).
	NATSCeilingPending = 256
	// NATSCeilingPull is the consumer's PullMaxMessages.
	NATSCeilingPull = 500
	// AMQPCeilingConfirms bounds the publishes awaiting their confirm.
	AMQPCeilingConfirms = 512
	// AMQPCeilingPrefetch is the consumer's prefetch (basic.qos).
	AMQPCeilingPrefetch = 500
	// AMQPCeilingAckEvery bounds the deliveries one multiple ack covers.
	AMQPCeilingAckEvery = 250
	// PostgresCeilingIdle is how long the PostgreSQL consumer sleeps when
	// its claim found nothing (it does not LISTEN).
	PostgresCeilingIdle = 2 * time.Millisecond
)

// cleanup is what a rig must undo, in the order it was set up: close undoes
// it last first and joins the errors.
type cleanup []func() error

func (c *cleanup) push(fs ...func() error) { *c = append(*c, fs...) }

func (c *cleanup) close() error {
	var errs []error
	for i := len(*c) - 1; i >= 0; i-- {
		errs = append(errs, (*c)[i]())
	}
	return errors.Join(errs...)
}

// firstErr keeps the first error reported from a client's callback.
type firstErr struct {
	once sync.Once
	err  atomic.Pointer[error]
}

func (f *firstErr) set(err error) { f.once.Do(func() { f.err.Store(&err) }) }

func (f *firstErr) get() error {
	if p := f.err.Load(); p != nil {
		return *p
	}
	return nil
}

// itemID returns the id of an Item's JSON, "" when data is not one.
func itemID(data []byte) string {
	var it Item
	if json.Unmarshal(data, &it) != nil {
		return ""
	}
	return it.ID
}

// e2eCeiling is a running end-to-end ceiling: publish sends a batch, the
// consumer reports to f.
func e2eCeiling(f *fanout, maxBatch int, publish batchCall, cerr *firstErr, close func() error) *trial {
	return &trial{
		round: func(ctx context.Context, t Timing) (sample, error) {
			n, el, err := f.run(ctx, t, 1, maxBatch, publish)
			if err == nil {
				err = cerr.get()
			}
			return sample{ops: n, el: el}, err
		},
		close: close,
	}
}

// natsCeilingE2E: a stream of its own, jetstream PublishAsync with at most
// NATSCeilingPending publishes unacknowledged, a durable consumer read with
// Consume (PullMaxMessages NATSCeilingPull), explicit acks (Ack: not
// waiting for the server's confirmation).
func natsCeilingE2E(url, prefix string) func(env) (*trial, error) {
	return func(e env) (_ *trial, err error) {
		var cerr firstErr
		nc, err := nats.Connect(url)
		if err != nil {
			return nil, err
		}
		closers := cleanup{func() error { nc.Close(); return nil }}
		defer func() {
			if err != nil {
				err = errors.Join(err, closers.close())
			}
		}()
		js, err := jetstream.New(nc,
			jetstream.WithPublishAsyncMaxPending(NATSCeilingPending),
			jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) { cerr.set(fmt.Errorf("publish: %w", err)) }))
		if err != nil {
			return nil, err
		}
		name := prefix + e.ns
		stream, err := js.CreateStream(e.ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name}})
		if err != nil {
			return nil, err
		}
		closers.push(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return js.DeleteStream(ctx, name)
		})
		cons, err := stream.CreateOrUpdateConsumer(e.ctx, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			return nil, err
		}
		f := newFanout(1, InFlight)
		cc, err := cons.Consume(func(m jetstream.Msg) {
			id := itemID(m.Data())
			if err := m.Ack(); err != nil {
				cerr.set(fmt.Errorf("ack: %w", err))
				return
			}
			f.deliver(0, id)
		}, jetstream.PullMaxMessages(NATSCeilingPull), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrConsumerDeleted) && !errors.Is(err, nats.ErrConnectionClosed) {
				cerr.set(fmt.Errorf("consume: %w", err))
			}
		}))
		if err != nil {
			return nil, err
		}
		closers.push(func() error {
			cc.Stop()
			select { // publishes still unacknowledged, if the round was cut short
			case <-js.PublishAsyncComplete():
			case <-time.After(OpTimeout):
			}
			return nil
		})
		publish := func(_ context.Context, seqs []int64) error {
			for _, s := range seqs {
				data, err := json.Marshal(newItem(s))
				if err != nil {
					return err
				}
				// Blocks while NATSCeilingPending publishes await their ack.
				if _, err := js.PublishAsync(name, data, jetstream.WithStallWait(OpTimeout)); err != nil {
					return err
				}
			}
			return cerr.get()
		}
		return e2eCeiling(f, 1, publish, &cerr, closers.close), nil
	}
}

// natsCeilingReqRep: core NATS request/reply, a responder in a queue group
// echoing the request, HighConcurrency callers on a connection of their own.
func natsCeilingReqRep(url string) func(env) (*trial, error) {
	return func(e env) (*trial, error) {
		srv, err := nats.Connect(url)
		if err != nil {
			return nil, err
		}
		subject := e.ns + ".echo"
		if _, err := srv.QueueSubscribe(subject, "echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
			srv.Close()
			return nil, err
		}
		if err := srv.Flush(); err != nil {
			srv.Close()
			return nil, err
		}
		cli, err := nats.Connect(url)
		if err != nil {
			srv.Close()
			return nil, err
		}
		op := func(ctx context.Context, seq int64) error {
			in := newItem(seq)
			data, err := json.Marshal(in)
			if err != nil {
				return err
			}
			m, err := cli.RequestWithContext(ctx, subject, data)
			if err != nil {
				return err
			}
			if id := itemID(m.Data); id != in.ID {
				return fmt.Errorf("reply %q to call %s", id, in.ID)
			}
			return nil
		}
		return &trial{
			round: func(ctx context.Context, t Timing) (sample, error) {
				n, el, to, err := rate(ctx, t, HighConcurrency, op)
				return sample{ops: n, el: el, timeouts: to}, err
			},
			close: func() error { cli.Close(); srv.Close(); return nil },
		}, nil
	}
}

// amqpCeilingE2E: amqp091-go directly, a durable queue of its own,
// persistent messages published to it on a channel in confirm mode with at
// most AMQPCeilingConfirms unconfirmed (the confirms are awaited in order by
// another goroutine: pipelined), consumed with prefetch AMQPCeilingPrefetch
// and multiple acks (one ack for the deliveries at hand, at most
// AMQPCeilingAckEvery). Publisher and consumer have a connection each, as
// RabbitMQ recommends.
func amqpCeilingE2E(url, prefix string) func(env) (*trial, error) {
	return func(e env) (_ *trial, err error) {
		var cerr firstErr
		var closers cleanup
		defer func() {
			if err != nil {
				err = errors.Join(err, closers.close())
			}
		}()
		pubConn, err := amqp091.Dial(url)
		if err != nil {
			return nil, err
		}
		closers.push(pubConn.Close)
		subConn, err := amqp091.Dial(url)
		if err != nil {
			return nil, err
		}
		closers.push(subConn.Close)
		pubCh, err := pubConn.Channel()
		if err != nil {
			return nil, err
		}
		q := prefix + e.ns
		if _, err := pubCh.QueueDeclare(q, true, false, false, false, nil); err != nil {
			return nil, err
		}
		closers.push(func() error {
			_, err := pubCh.QueueDelete(q, false, false, false)
			return err
		})
		if err := pubCh.Confirm(false); err != nil {
			return nil, err
		}
		confirms := make(chan *amqp091.DeferredConfirmation, AMQPCeilingConfirms)
		confirmerDone := make(chan struct{})
		go func() {
			defer close(confirmerDone)
			for dc := range confirms {
				ctx, cancel := context.WithTimeout(context.Background(), OpTimeout)
				ok, err := dc.WaitContext(ctx)
				cancel()
				if err == nil && !ok {
					err = errors.New("nacked")
				}
				if err != nil {
					cerr.set(fmt.Errorf("confirm: %w", err))
				}
			}
		}()
		closers.push(func() error { close(confirms); <-confirmerDone; return nil })
		subCh, err := subConn.Channel()
		if err != nil {
			return nil, err
		}
		if err := subCh.Qos(AMQPCeilingPrefetch, 0, false); err != nil {
			return nil, err
		}
		deliveries, err := subCh.Consume(q, "c", false, false, false, false, nil)
		if err != nil {
			return nil, err
		}
		f := newFanout(1, InFlight)
		consumerDone := make(chan struct{})
		go func() {
			defer close(consumerDone)
			ids := make([]string, 0, AMQPCeilingAckEvery)
			for d := range deliveries {
				ids = append(ids[:0], itemID(d.Body))
				last := d
			ready: // the deliveries already at hand share the ack
				for len(ids) < AMQPCeilingAckEvery {
					select {
					case d, ok := <-deliveries:
						if !ok {
							break ready
						}
						ids, last = append(ids, itemID(d.Body)), d
					default:
						break ready
					}
				}
				if err := last.Ack(true); err != nil {
					cerr.set(fmt.Errorf("ack: %w", err))
					continue
				}
				for _, id := range ids {
					f.deliver(0, id)
				}
			}
		}()
		closers.push(func() error {
			err := subCh.Cancel("c", false)
			<-consumerDone
			return err
		})
		publish := func(ctx context.Context, seqs []int64) error {
			for _, s := range seqs {
				data, err := json.Marshal(newItem(s))
				if err != nil {
					return err
				}
				dc, err := pubCh.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, amqp091.Publishing{
					ContentType: "application/json", DeliveryMode: amqp091.Persistent, Body: data,
				})
				if err != nil {
					return err
				}
				select { // blocks while AMQPCeilingConfirms await their confirm
				case confirms <- dc:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return cerr.get()
		}
		return e2eCeiling(f, 1, publish, &cerr, closers.close), nil
	}
}

// pgCeilingE2E: pgx directly, the SKIP LOCKED queue Switchboard's
// PostgreSQL bridge keeps, written by hand in a schema of its own: the
// publisher inserts the messages at hand (at most CeilingBatch) in one
// multi-row INSERT; the consumer claims up to CeilingBatch rows with one
// UPDATE … FOR UPDATE SKIP LOCKED … RETURNING, decodes them and deletes them
// with one DELETE … = ANY (its ack); when a claim finds nothing it sleeps
// PostgresCeilingIdle. Every statement is its own transaction
// (synchronous_commit as the server has it).
func pgCeilingE2E(url, prefix string, admin *pgxpool.Pool) func(env) (*trial, error) {
	return func(e env) (_ *trial, err error) {
		var cerr firstErr
		schema := prefix + e.ns
		if _, err := admin.Exec(e.ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
			return nil, err
		}
		closers := cleanup{func() error { return dropSchema(context.Background(), admin, schema) }}
		defer func() {
			if err != nil {
				err = errors.Join(err, closers.close())
			}
		}()
		q := pgx.Identifier{schema, "queue"}.Sanitize()
		if _, err := admin.Exec(e.ctx, "CREATE TABLE "+q+" (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload bytea NOT NULL, claimed_at timestamptz)"); err != nil {
			return nil, err
		}
		pool, err := pgxpool.New(e.ctx, url)
		if err != nil {
			return nil, err
		}
		closers.push(func() error { pool.Close(); return nil })
		claim := "UPDATE " + q + " SET claimed_at = now() WHERE id IN (SELECT id FROM " + q +
			" WHERE claimed_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id, payload"
		ack := "DELETE FROM " + q + " WHERE id = ANY($1)"
		f := newFanout(1, InFlight)
		cctx, cancel := context.WithCancel(context.WithoutCancel(e.ctx))
		consumerDone := make(chan struct{})
		go func() {
			defer close(consumerDone)
			var ids []int64
			var items []string
			for cctx.Err() == nil {
				ids, items = ids[:0], items[:0]
				rows, _ := pool.Query(cctx, claim, CeilingBatch)
				var id int64
				var payload []byte
				_, err := pgx.ForEachRow(rows, []any{&id, &payload}, func() error {
					ids, items = append(ids, id), append(items, itemID(payload))
					return nil
				})
				if err == nil && len(ids) > 0 {
					_, err = pool.Exec(cctx, ack, ids)
				}
				switch {
				case cctx.Err() != nil:
					return
				case err != nil:
					cerr.set(err)
					sleep(cctx, time.Second)
				case len(ids) == 0:
					sleep(cctx, PostgresCeilingIdle)
				default:
					for _, it := range items {
						f.deliver(0, it)
					}
				}
			}
		}()
		closers.push(func() error { cancel(); <-consumerDone; return nil })
		insert := "INSERT INTO " + q + " (payload) SELECT unnest($1::bytea[])"
		publish := func(ctx context.Context, seqs []int64) error {
			batch := make([][]byte, len(seqs))
			for i, s := range seqs {
				data, err := json.Marshal(newItem(s))
				if err != nil {
					return err
				}
				batch[i] = data
			}
			if _, err := pool.Exec(ctx, insert, batch); err != nil {
				return err
			}
			return cerr.get()
		}
		return e2eCeiling(f, CeilingBatch, publish, &cerr, closers.close), nil
	}
}
