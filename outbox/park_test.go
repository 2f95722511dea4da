package outbox_test

import (
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/outbox"
)

// A command nobody consumes (a retired service version) waits with backoff
// and holds back only the later rows of its own topic: every other topic is
// forwarded. When its service appears, the held-back rows follow in order.
func TestRelayFailingRowBlocksOnlyItsTopic(t *testing.T) {
	url, db, schema := setup(t)
	bus := inproc.New()
	events := collect(t, bus, "event.orders.placed", "g")
	e := newEngine(t, inproc.New())
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	ctx := outbox.WithTx(engine.WithEngine(t.Context(), e), tx, schema)
	for _, id := range []int{1, 2} {
		if err := ShipOrder.Send(ctx, Order{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	emitOrders(t, e, db, schema, 0, 5) // written after the stuck commands
	runRelay(t, outbox.Relay{DatabaseURL: url, Schema: schema, Target: bus, Retention: -1, LeaderPoll: 50 * time.Millisecond, Logger: discard()})
	waitFor(t, 10*time.Second, "the events behind the stuck command", func() bool { return len(events.snapshot()) == 5 })
	waitFor(t, 10*time.Second, "the stuck command to count as retrying", func() bool {
		s, err := outbox.ReadStats(t.Context(), db, schema)
		return err == nil && s.Retrying == 1 && s.Parked == 0 && s.Backlog == 2
	})
	if n := rows(t, db, `SELECT count(*) FROM "`+schema+`".outbox WHERE topic = 'shipping.v1.ship' AND attempts > 0`); n != 1 {
		t.Errorf("%d command rows attempted, want 1 (the second waits behind the first)", n)
	}
	got := collect(t, bus, "shipping.v1.ship", "shipping.v1") // the service starts
	waitFor(t, 20*time.Second, "both commands", func() bool { return len(got.snapshot()) == 2 })
	if ids := got.snapshot(); ids[0] != 1 || ids[1] != 2 {
		t.Errorf("commands arrived as %v, want [1 2]", ids)
	}
}

// A message the broker refuses for what it is (NATS: over max_payload,
// which counts headers, so an event within the engine's own limit) is parked
// at once, visibly, and does not hold back anything. Retry makes it
// deliverable again.
func TestRelayParksMessageTheBrokerRefuses(t *testing.T) {
	url, db, schema := setup(t)
	target := openServer(t, testenv.NATS)
	ev := engine.NewEvent[Order](bridgetest.Unique("parktest"))
	got := collect(t, target, "event."+ev.String(), "g")
	e := newEngine(t, inproc.New())
	for i, item := range []string{"small", strings.Repeat("x", 1<<20-100), "after"} {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if err := ev.Emit(outbox.WithTx(engine.WithEngine(t.Context(), e), tx, schema), Order{ID: i, Item: item}); err != nil {
			t.Fatalf("order %d: %v", i, err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	logs := &testenv.LogBuffer{}
	runRelay(t, outbox.Relay{DatabaseURL: url, Schema: schema, Target: target, Retention: -1, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	has := func(id int) bool { return slices.Contains(got.snapshot(), id) }
	waitFor(t, 20*time.Second, "the messages around the refused one", func() bool { return has(0) && has(2) })
	if has(1) {
		t.Fatal("the broker delivered the message it refused")
	}
	// The relay marks the delivered rows after publishing them.
	waitForStats(t, db, schema, 10*time.Second, "1 parked and no backlog", func(s outbox.Stats) bool {
		return s.Parked == 1 && s.Backlog == 0
	})
	parked, err := outbox.ListFailed(t.Context(), db, schema, 10)
	if err != nil || len(parked) != 1 {
		t.Fatalf("parked rows %+v, %v; want 1", parked, err)
	}
	if p := parked[0]; p.Topic != "event."+ev.String() || !strings.Contains(p.LastError, "max_payload") || p.Attempts != 1 || p.ParkedAt.IsZero() {
		t.Errorf("parked row %+v", p)
	}
	// The log points the operator at the command that lists it.
	if l := logs.String(); !strings.Contains(l, "parked") || !strings.Contains(l, "switchboard outbox failed") {
		t.Errorf("the parking is logged without naming `switchboard outbox failed`:\n%s", l)
	}
	// Retried, it is refused again and parked again: nothing is lost.
	var none []int64 // a filter that matched nothing retries nothing
	if n, err := outbox.Retry(t.Context(), db, schema, none...); err != nil || n != 0 {
		t.Fatalf("retry of no ids: %d, %v; want 0", n, err)
	}
	if n, err := outbox.Retry(t.Context(), db, schema, parked[0].ID); err != nil || n != 1 {
		t.Fatalf("retry: %d, %v", n, err)
	}
	waitFor(t, 20*time.Second, "the retried row to be parked again", func() bool {
		p, err := outbox.ListFailed(t.Context(), db, schema, 10)
		return err == nil && len(p) == 1 && p[0].Attempts == 2 && !p[0].ParkedAt.IsZero()
	})
}

// A backlog with refused rows in it is forwarded without pause: a round
// that parks a row (or holds one back for a retry) forwards fewer rows than
// it read, which is no sign that the backlog is empty. With a sweep a minute
// away, only the relay going on at once delivers the rows behind them.
func TestRelayDrainsBacklogPastParkedRows(t *testing.T) {
	url, db, schema := setup(t)
	target := openServer(t, testenv.NATS)
	ev := engine.NewEvent[Order](bridgetest.Unique("parkdrain"))
	got := collect(t, target, "event."+ev.String(), "g")
	e := newEngine(t, inproc.New())
	const total, batch = 60, 10
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	ctx := outbox.WithTx(engine.WithEngine(t.Context(), e), tx, schema)
	big := strings.Repeat("x", 1<<20-100)
	for i := range total {
		item := "small"
		if i%batch == 0 {
			item = big // refused by NATS: parked
		}
		if err := ev.Emit(ctx, Order{ID: i, Item: item}); err != nil {
			t.Fatalf("order %d: %v", i, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// Committed before the relay listens: no notification will come.
	runRelay(t, outbox.Relay{DatabaseURL: url, Schema: schema, Target: target, BatchSize: batch, PollInterval: time.Minute,
		Retention: -1, Logger: discard()})
	want := total - total/batch
	waitFor(t, 20*time.Second, "the backlog behind the parked rows", func() bool { return len(got.snapshot()) == want })
	// Every row is delivered: the relay only has to mark the last batch.
	waitForStats(t, db, schema, 10*time.Second, strconv.Itoa(total/batch)+" parked and no backlog", func(s outbox.Stats) bool {
		return s.Parked == total/batch && s.Backlog == 0
	})
}

// The trigger of the audit on every broker the relay forwards to: a command
// to a service with no consumer (a retired version), written first, among
// events of several other topics. Every event is forwarded at once; the
// command waits with backoff where the broker says nobody consumes it
// (RabbitMQ, PostgreSQL; NATS stores it for the consumer to come) and
// reaches the service, in order, once it subscribes.
func TestRelayStuckCommandOnEveryBroker(t *testing.T) {
	for _, name := range []string{testenv.NATS, testenv.AMQP, testenv.Postgres} {
		t.Run(name, func(t *testing.T) {
			url, db, schema := setup(t)
			target := openServer(t, name)
			s := bridgetest.Unique("")
			retired := engine.NewCommand[Order, Order]("retired"+s, "1", "ship")
			var events []*collector
			var evs []*engine.Event[Order]
			for _, n := range []string{"a", "b", "c"} {
				ev := engine.NewEvent[Order](n + s)
				evs = append(evs, ev)
				events = append(events, collect(t, target, "event."+ev.String(), "g"+s))
			}
			e := newEngine(t, inproc.New())
			tx, err := db.Begin()
			if err != nil {
				t.Fatal(err)
			}
			ctx := outbox.WithTx(engine.WithEngine(t.Context(), e), tx, schema)
			const n = 150
			if err := retired.Send(ctx, Order{ID: 1}); err != nil {
				t.Fatal(err)
			}
			for i := range n {
				if err := evs[i%len(evs)].Emit(ctx, Order{ID: i}); err != nil {
					t.Fatal(err)
				}
			}
			if err := retired.Send(ctx, Order{ID: 2}); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			runRelay(t, outbox.Relay{DatabaseURL: url, Schema: schema, Target: target, Retention: -1, LeaderPoll: 50 * time.Millisecond, Logger: discard()})
			waitFor(t, 10*time.Second, "every event behind the stuck command", func() bool {
				got := 0
				for _, c := range events {
					got += len(c.snapshot())
				}
				return got == n
			})
			if name != testenv.NATS {
				waitFor(t, 10*time.Second, "the command to count as retrying", func() bool {
					st, err := outbox.ReadStats(t.Context(), db, schema)
					return err == nil && st.Retrying == 1 && st.Backlog == 2 && st.Parked == 0
				})
			}
			sub, err := target.Subscriber(t.Context(), bridge.Spec{Topic: retired.String(), Group: "retired" + s + ".v1", Kind: bridge.Command, Concurrency: 1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Close() })
			ch, err := sub.Subscribe(t.Context(), retired.String())
			if err != nil {
				t.Fatal(err)
			}
			for want := 1; want <= 2; want++ {
				select {
				case m := <-ch:
					var o Order
					_ = jsonUnmarshal(m.Payload, &o)
					m.Ack()
					if o.ID != want {
						t.Fatalf("command %d arrived as number %d", o.ID, want)
					}
				case <-time.After(20 * time.Second):
					t.Fatalf("command %d never arrived", want)
				}
			}
		})
	}
}

// A row the target refuses with an error text that PostgreSQL's text type
// would refuse as it is (a topic outside the target's alphabet, quoted in
// the error and cut at the stored length in the middle of a character) is
// recorded, and the rows behind it are forwarded: the relay does not fail
// on recording the failure, round after round. The rows come from a
// Watermill producer writing through outbox.NewPublisher, which takes any
// topic; PostgreSQL as the target refuses it for what it is, not as an
// unreachable server.
func TestRelayRecordsAnyRefusal(t *testing.T) {
	url, db, schema := setup(t)
	target := openServer(t, testenv.Postgres)
	got := collect(t, target, "event.orders.placed", "g"+schema)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := outbox.NewPublisher(wmsql.TxFromStdSQL(tx), schema)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{900, 901} { // one of the two is cut inside an é
		topic := strings.Repeat("a", n) + strings.Repeat("é", (1020-n)/2)
		m := message.NewMessage(watermill.NewUUID(), []byte(`{}`))
		m.Metadata.Set(envelope.KeyKind, envelope.KindCommand)
		if err := pub.Publish(topic, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, inproc.New())
	emitOrders(t, e, db, schema, 0, 1)
	runRelay(t, outbox.Relay{DatabaseURL: url, Schema: schema, Target: target, Retention: -1, LeaderPoll: 50 * time.Millisecond, Logger: discard()})
	waitFor(t, 10*time.Second, "the event behind the refused rows", func() bool { return len(got.snapshot()) == 1 })
	waitFor(t, 10*time.Second, "both refusals recorded, and parked (the topic can never be carried)", func() bool {
		f, err := outbox.ListFailed(t.Context(), db, schema, 10)
		return err == nil && len(f) == 2 && !f[0].ParkedAt.IsZero() && !f[1].ParkedAt.IsZero() && strings.Contains(f[1].LastError, "aaaa")
	})
}

// A row whose metadata NATS headers cannot carry (a key with a space, a
// value with a line break: possible with outbox.NewPublisher) is refused
// for what it is: parked at once, holding back nothing, not retried as if
// the broker were down.
func TestRelayParksMetadataTheBrokerCannotEncode(t *testing.T) {
	url, db, schema := setup(t)
	target := openServer(t, testenv.NATS)
	topic := "event.parkhdr" + watermill.NewShortUUID()
	got := collect(t, target, topic, "g")
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := outbox.NewPublisher(wmsql.TxFromStdSQL(tx), schema)
	if err != nil {
		t.Fatal(err)
	}
	for i, md := range []message.Metadata{{"ok": "1"}, {"bad key": "1"}, {"ok": "line\r\nbreak"}, {"ok": "3"}} {
		m := message.NewMessage(watermill.NewUUID(), []byte(`{"id":`+strconv.Itoa(i)+`}`))
		m.Metadata = md
		if err := pub.Publish(topic, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	runRelay(t, outbox.Relay{DatabaseURL: url, Schema: schema, Target: target, Retention: -1, Logger: discard()})
	waitFor(t, 20*time.Second, "the messages around the refused ones", func() bool {
		ids := got.snapshot()
		return slices.Contains(ids, 0) && slices.Contains(ids, 3)
	})
	waitFor(t, 10*time.Second, "both refused rows parked", func() bool {
		s, err := outbox.ReadStats(t.Context(), db, schema)
		return err == nil && s.Parked == 2 && s.Retrying == 0 && s.Backlog == 0
	})
	for _, id := range got.snapshot() { // at least once: 0 may come twice (its batch is re-sent row by row)
		if id != 0 && id != 3 {
			t.Errorf("delivered message %d, which NATS cannot carry", id)
		}
	}
}
