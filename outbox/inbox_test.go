package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/outbox"
	"github.com/switchboard-go/switchboard/router"
)

// An awaited command redelivered after its first run committed (the process
// died between the commit and the reply) is answered again with the stored
// reply, not with an error, and its handler does not run twice.
func TestInboxAnswersRedeliveredCommandAgain(t *testing.T) {
	_, db, schema := setup(t)
	var (
		mu   sync.Mutex
		runs int
	)
	svc := engine.NewService("shipping", "1")
	engine.Handle(svc, ShipOrder, func(ctx context.Context, o Order) (Order, error) {
		mu.Lock()
		defer mu.Unlock()
		runs++
		return Order{ID: o.ID, Item: "shipped", Trace: fmt.Sprint("run ", runs)}, nil
	}, engine.Use(outbox.Inbox{DB: db, Schema: schema}.Middleware()))
	bus := inproc.New()
	newEngine(t, bus, svc)

	const replyTopic = "reply.test-caller"
	sub, err := bus.Subscriber(t.Context(), bridge.Spec{Topic: replyTopic, Group: "test-caller", Kind: bridge.Reply, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	replies, err := sub.Subscribe(t.Context(), replyTopic)
	if err != nil {
		t.Fatal(err)
	}
	id := watermill.NewUUID()
	var got []*message.Message
	for range 2 { // the broker delivers the same command twice
		m := message.NewMessage(id, []byte(`{"id":5}`))
		m.Metadata.Set(envelope.KeyCorrelationID, "c")
		m.Metadata.Set(envelope.KeyKind, envelope.KindCommand)
		m.Metadata.Set(envelope.KeyReplyTo, replyTopic)
		if err := bus.Publisher().Publish("shipping.v1.ship", m); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-replies:
			r.Ack()
			got = append(got, r)
		case <-time.After(10 * time.Second):
			t.Fatal("no reply")
		}
	}
	for i, r := range got {
		if r.Metadata.Get(envelope.KeyError) != "" {
			t.Errorf("reply %d is an error: %s", i+1, r.Payload)
		}
	}
	if string(got[0].Payload) != string(got[1].Payload) {
		t.Errorf("the redelivery was answered %s, the first delivery %s", got[1].Payload, got[0].Payload)
	}
	mu.Lock()
	defer mu.Unlock()
	if runs != 1 {
		t.Errorf("handler ran %d times, want 1", runs)
	}
}

// The inbox keys a message by topic too: a message id reused on another
// topic consumed by the same group (two commands of one service) is a new
// message, not a duplicate.
func TestInboxKeysByTopic(t *testing.T) {
	_, db, schema := setup(t)
	cancelOrder := engine.NewCommand[Order, Order]("shipping", "1", "cancel")
	var (
		mu  sync.Mutex
		ran = map[string]int{}
	)
	handler := func(name string) func(context.Context, Order) (Order, error) {
		return func(_ context.Context, o Order) (Order, error) {
			mu.Lock()
			defer mu.Unlock()
			ran[name]++
			return o, nil
		}
	}
	inbox := engine.Use(outbox.Inbox{DB: db, Schema: schema}.Middleware())
	svc := engine.NewService("shipping", "1")
	engine.Handle(svc, ShipOrder, handler("ship"), inbox)
	engine.Handle(svc, cancelOrder, handler("cancel"), inbox)
	bus := inproc.New()
	newEngine(t, bus, svc)

	id := watermill.NewUUID()
	for _, topic := range []string{"shipping.v1.ship", "shipping.v1.cancel", "shipping.v1.ship"} {
		m := message.NewMessage(id, []byte(`{"id":1}`))
		m.Metadata.Set(envelope.KeyCorrelationID, "c")
		m.Metadata.Set(envelope.KeyKind, envelope.KindCommand)
		if err := bus.Publisher().Publish(topic, m); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "an inbox row per topic", func() bool {
		return rows(t, db, `SELECT count(*) FROM "`+schema+`".inbox`) >= 2
	})
	time.Sleep(200 * time.Millisecond) // the duplicate on ship, if it were to run
	mu.Lock()
	defer mu.Unlock()
	if ran["ship"] != 1 || ran["cancel"] != 1 {
		t.Errorf("handlers ran %v; want ship 1 and cancel 1", ran)
	}
}

// A row recorded before the inbox keyed by topic (empty topic) still marks the
// message as processed, whatever its topic.
func TestInboxHonoursRowsRecordedBeforeTopics(t *testing.T) {
	_, db, schema := setup(t)
	id := watermill.NewUUID()
	if _, err := db.Exec(`INSERT INTO "`+schema+`".inbox (message_id, group_name) VALUES ($1, 'shipping.v1')`, id); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		runs int
	)
	svc := engine.NewService("shipping", "1")
	engine.Handle(svc, ShipOrder, func(_ context.Context, o Order) (Order, error) {
		mu.Lock()
		defer mu.Unlock()
		runs++
		return o, nil
	}, engine.Use(outbox.Inbox{DB: db, Schema: schema}.Middleware()))
	bus := inproc.New()
	newEngine(t, bus, svc)
	for _, uuid := range []string{id, watermill.NewUUID()} { // the old one, then a new one
		m := message.NewMessage(uuid, []byte(`{"id":1}`))
		m.Metadata.Set(envelope.KeyCorrelationID, "c")
		m.Metadata.Set(envelope.KeyKind, envelope.KindCommand)
		if err := bus.Publisher().Publish("shipping.v1.ship", m); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the new message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return runs >= 1
	})
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if runs != 1 {
		t.Errorf("handler ran %d times, want 1 (the message recorded before migration 6 ran again)", runs)
	}
}

// On every broker: an awaited command whose handler fails the first time
// is answered with the error and recorded nowhere (it runs again when
// redelivered); once it succeeded, every redelivery is answered with the
// stored reply and the handler does not run again.
func TestInboxStoredReplyOnEveryBroker(t *testing.T) {
	for _, name := range []string{testenv.NATS, testenv.AMQP, testenv.Postgres} {
		t.Run(name, func(t *testing.T) {
			_, db, schema := setup(t)
			s := bridgetest.Unique("")
			cmd := engine.NewCommand[Order, Order]("inbox"+s, "1", "ship")
			var (
				mu   sync.Mutex
				runs int
			)
			svc := engine.NewService("inbox"+s, "1")
			engine.Handle(svc, cmd, func(_ context.Context, o Order) (Order, error) {
				mu.Lock()
				defer mu.Unlock()
				runs++
				if runs == 1 {
					return Order{}, errors.New("the first run fails")
				}
				return Order{ID: o.ID, Trace: fmt.Sprint("run ", runs)}, nil
			}, engine.Use(outbox.Inbox{DB: db, Schema: schema, Logger: discard()}.Middleware()))
			b := openServer(t, name)
			newEngine(t, b, svc)
			replyTopic := router.ReplyTopic("inboxtest" + s)
			sub, err := b.Subscriber(t.Context(), bridge.Spec{Topic: replyTopic, Group: "inboxtest" + s, Kind: bridge.Reply, Concurrency: 1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Close() })
			replies, err := sub.Subscribe(t.Context(), replyTopic)
			if err != nil {
				t.Fatal(err)
			}
			id := watermill.NewUUID()
			var got []string
			for range 3 { // the same command, delivered three times
				m := message.NewMessage(id, []byte(`{"id":5}`))
				m.Metadata.Set(envelope.KeyCorrelationID, "c")
				m.Metadata.Set(envelope.KeyKind, envelope.KindCommand)
				m.Metadata.Set(envelope.KeyReplyTo, replyTopic)
				if err := b.Publisher().Publish(cmd.String(), m); err != nil {
					t.Fatal(err)
				}
				select {
				case r := <-replies:
					r.Ack()
					got = append(got, r.Metadata.Get(envelope.KeyError)+" "+string(r.Payload))
				case <-time.After(15 * time.Second):
					t.Fatal("no reply")
				}
			}
			want := `{"id":5,"item":"","trace":"run 2"}`
			if !strings.HasPrefix(got[0], "1 ") || got[1] != " "+want || got[2] != " "+want {
				t.Errorf("replies %q; want an error, then %s twice", got, want)
			}
			mu.Lock()
			defer mu.Unlock()
			if runs != 2 {
				t.Errorf("handler ran %d times, want 2", runs)
			}
		})
	}
}
