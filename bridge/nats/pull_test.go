package nats_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/bridge/nats"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

// pullSnoop counts the pull requests sent for topic's consumers: a plain
// subscriber on the JetStream API subject of pull requests sees every one,
// with its batch size.
type pullSnoop struct {
	mu       sync.Mutex
	requests int
	asked    int // sum of the batch sizes
}

func snoopPulls(t *testing.T, topic string) *pullSnoop {
	t.Helper()
	nc, err := natsgo.Connect(testenv.URL(t, testenv.NATS))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	stream, err := jetStream(t).StreamNameBySubject(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	p := &pullSnoop{}
	_, err = nc.Subscribe("$JS.API.CONSUMER.MSG.NEXT."+stream+".*", func(m *natsgo.Msg) {
		var req struct {
			Batch int `json:"batch"`
		}
		_ = json.Unmarshal(m.Data, &req)
		p.mu.Lock()
		p.requests++
		p.asked += req.Batch
		p.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *pullSnoop) counts() (requests, asked int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests, p.asked
}

// A subscription with Concurrency N asks for a backlog in batches, one pull
// request for as many messages as it has idle slots, not one request per
// message; and while it is idle it keeps a single pull request waiting, not
// one per slot.
func TestPullsInBatches(t *testing.T) {
	const n = 32
	b := openURL(t, withParams(t, ""))
	spec := bridge.Spec{Topic: "sbtest." + bridgetest.Unique("batch"), Group: "svc.v1", Kind: bridge.Command, Concurrency: n}
	sub, err := b.Subscriber(t.Context(), spec) // creates the stream and the consumer
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	snoop := snoopPulls(t, spec.Topic)
	payloads := make([]string, n)
	for i := range payloads {
		payloads[i] = fmt.Sprint(i)
	}
	bridgetest.Publish(t, b, spec.Topic, payloads...)

	ch, err := sub.Subscribe(t.Context(), spec.Topic)
	if err != nil {
		t.Fatal(err)
	}
	held := make([]*message.Message, 0, n)
	for range n { // all n at once: none is acked before the last arrives
		held = append(held, bridgetest.Receive(t, ch, 10*time.Second))
	}
	requests, asked := snoop.counts()
	if requests > n/8 {
		t.Errorf("%d messages of a backlog took %d pull requests (asking for %d), want at most %d", n, requests, asked, n/8)
	}
	if asked > n+nats.DefaultPrefetch {
		t.Errorf("pull requests asked for %d messages with %d slots (Concurrency %d + prefetch %d)", asked, n+nats.DefaultPrefetch, n, nats.DefaultPrefetch)
	}
	for _, m := range held {
		m.Ack()
	}

	// Idle: the waiting pull requests of the consumer, sampled for 2 s.
	cons := consumerOf(t, spec.Topic)
	most := 0
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		info, err := cons.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, info.NumWaiting)
	}
	if most != 1 {
		t.Errorf("an idle subscription with Concurrency %d kept up to %d pull requests waiting, want 1", n, most)
	}
	before, _ := snoop.counts()
	time.Sleep(2 * time.Second)
	after, _ := snoop.counts()
	if idle := after - before; idle > 6 {
		t.Errorf("an idle subscription sent %d pull requests in 2 s, want at most 6 (one per fetch wait)", idle)
	}
}

// Publish with many messages pipelines them: all are stored, once, in order,
// and a batch the server cannot take fails.
func TestPublishBatch(t *testing.T) {
	const n = 700 // more than the publish window
	b := openURL(t, withParams(t, ""))
	spec := bridge.Spec{Topic: "sbtest." + bridgetest.Unique("pubbatch"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	ch, _ := bridgetest.Subscribe(t, b, spec)
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, "%d", i))
	}
	if err := b.Publisher().Publish(spec.Topic, msgs...); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m := bridgetest.Receive(t, ch, 10*time.Second)
		m.Ack()
		if got := string(m.Payload); got != fmt.Sprint(i) {
			t.Fatalf("message %d is %q: the batch was not stored in order", i, got)
		}
	}
	bridgetest.ExpectNothing(t, ch, 300*time.Millisecond)

	limit := b.Capabilities().MaxMessageBytes
	big := []*message.Message{
		message.NewMessage(watermill.NewUUID(), []byte("small")),
		message.NewMessage(watermill.NewUUID(), make([]byte, limit+2048)),
		message.NewMessage(watermill.NewUUID(), []byte("after")),
	}
	if err := b.Publisher().Publish(spec.Topic, big...); !errors.Is(err, bridge.ErrTooLarge) {
		t.Errorf("a batch with a message over the limit: %v, want ErrTooLarge", err)
	}
	orphan := "reply." + bridgetest.Unique("gone")
	err := b.Publisher().Publish(orphan, message.NewMessage(watermill.NewUUID(), []byte("a")), message.NewMessage(watermill.NewUUID(), []byte("b")))
	if !errors.Is(err, bridge.ErrNoSubscriber) {
		t.Errorf("a batch to an unowned reply topic: %v, want ErrNoSubscriber", err)
	}
}

// consumerOf returns the only consumer of topic's stream.
func consumerOf(t *testing.T, topic string) jetstream.Consumer {
	t.Helper()
	js := jetStream(t)
	name, err := js.StreamNameBySubject(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	var consumers []string
	for n := range s.ConsumerNames(t.Context()).Name() {
		consumers = append(consumers, n)
	}
	if len(consumers) != 1 {
		t.Fatalf("consumers of %s: %v, want one", name, consumers)
	}
	c, err := s.Consumer(t.Context(), consumers[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}
