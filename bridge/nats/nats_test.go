package nats_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	_ "github.com/switchboard-go/switchboard/bridge/nats"
	"github.com/switchboard-go/switchboard/engine/backendtest"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

// testParams keep the test server tidy: streams made by tests are named
// apart and drop their messages after an hour (production streams keep
// them: max_age defaults to none). cleanStaleStreams removes old ones.
const (
	testPrefix = "SBTEST_"
	testParams = "stream_prefix=" + testPrefix + "&max_age=1h"
)

// withParams returns the test server's URL with testParams and params.
func withParams(t testing.TB, params string) string {
	t.Helper()
	u := testenv.URL(t, testenv.NATS)
	all := testParams
	if params != "" {
		all += "&" + params
	}
	if strings.Contains(u, "?") {
		return u + "&" + all
	}
	return strings.TrimSuffix(u, "/") + "?" + all
}

// cleanStaleStreams deletes test streams created more than an hour ago by
// earlier runs (a run in progress in another process is younger).
func cleanStaleStreams(t *testing.T) {
	t.Helper()
	js := jetStream(t)
	list := js.ListStreams(t.Context())
	for info := range list.Info() {
		if strings.HasPrefix(info.Config.Name, testPrefix) && time.Since(info.Created) > time.Hour {
			if err := js.DeleteStream(t.Context(), info.Config.Name); err != nil {
				t.Logf("deleting stale test stream %s: %v", info.Config.Name, err)
			}
		}
	}
}

func openURL(t *testing.T, rawURL string) bridge.Bridge {
	t.Helper()
	b, err := bridge.Open(t.Context(), rawURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	cleanStaleStreams(t)
	// ack_wait shorter than the default 30 s, so that KilledConsumerLosesNothing
	// sees a dead consumer's messages again within the suite's waits; a
	// handler still running keeps its message (progress every ack_wait/2).
	const ackWait = 10 * time.Second
	h := bridgetest.Harness{
		URL:               withParams(t, "ack_wait="+ackWait.String()),
		Outage:            func(t *testing.T) func() { return testenv.Outage(t, testenv.NATS) },
		DeadConsumerDelay: ackWait,
	}
	t.Run("Bridge", func(t *testing.T) { bridgetest.Run(t, h) })
	backendtest.Run(t, h)
}

// A handler that never settles its message must not lose it, whether the
// connection drops (bridge closed) or the subscriber gives up on Close:
// the client never acks on the handler's behalf, so JetStream delivers the
// message again after ack_wait. (nats.go auto-acks callback subscriptions
// unless told otherwise; this backend pulls, so nothing acks implicitly.)
func TestUnsettledMessageIsRedelivered(t *testing.T) {
	url := withParams(t, "ack_wait=1s")
	spec := bridge.Spec{Topic: "sbtest." + bridgetest.Unique("noack"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}

	t.Run("ConnectionDropped", func(t *testing.T) {
		spec := spec
		spec.Topic += ".drop"
		b1, err := bridge.Open(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		ch1, _ := bridgetest.Subscribe(t, b1, spec)
		bridgetest.Publish(t, b1, spec.Topic, "keep-me")
		m := bridgetest.Receive(t, ch1, 10*time.Second) // handed to a handler that never acks
		start := time.Now()
		if err := b1.Close(); err != nil { // drops the connection under it
			t.Fatal(err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("bridge Close with a message in flight took %s", d)
		}
		m.Ack() // too late: the connection is gone, nothing may be lost either way

		ch2, _ := bridgetest.Subscribe(t, openURL(t, url), spec)
		again := bridgetest.Receive(t, ch2, 15*time.Second)
		again.Ack()
		if string(again.Payload) != "keep-me" || again.UUID != m.UUID {
			t.Fatalf("got %q (uuid %s), want keep-me (uuid %s)", again.Payload, again.UUID, m.UUID)
		}
	})

	t.Run("SubscriberGaveUp", func(t *testing.T) {
		spec := spec
		spec.Topic += ".close"
		b := openURL(t, url)
		sub, err := b.Subscriber(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := sub.Subscribe(context.Background(), spec.Topic)
		if err != nil {
			t.Fatal(err)
		}
		bridgetest.Publish(t, b, spec.Topic, "stuck")
		m := bridgetest.Receive(t, ch, 10*time.Second)
		start := time.Now()
		err = sub.Close() // waits for the verdict up to ack_wait (1 s), then gives up
		if err == nil {
			t.Error("Close returned nil with a message never settled")
		}
		if d := time.Since(start); d < 900*time.Millisecond || d > 5*time.Second {
			t.Errorf("Close took %s, want about ack_wait (1s)", d)
		}
		if _, ok := <-ch; ok {
			t.Error("channel still open after Close")
		}
		ch2, _ := bridgetest.Subscribe(t, b, spec) // same bridge: Close left the connection alone
		again := bridgetest.Receive(t, ch2, 15*time.Second)
		again.Ack()
		if again.UUID != m.UUID {
			t.Fatalf("got uuid %s, want %s", again.UUID, m.UUID)
		}
	})
}

// Closing every subscriber must not delete the group's durable consumer
// (nats.go deletes consumers it created itself on Unsubscribe): commands
// published while nobody listens wait for the next subscriber, and commands
// published before the first subscriber ever existed are kept too.
func TestCommandsWaitForTheirGroup(t *testing.T) {
	b := openURL(t, withParams(t, ""))
	spec := bridge.Spec{Topic: "sbtest." + bridgetest.Unique("wait"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	bridgetest.Publish(t, b, spec.Topic, "before-any-subscriber")

	sub, err := b.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(context.Background(), spec.Topic)
	if err != nil {
		t.Fatal(err)
	}
	m := bridgetest.Receive(t, ch, 10*time.Second)
	m.Ack()
	if string(m.Payload) != "before-any-subscriber" {
		t.Fatalf("got %q", m.Payload)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	bridgetest.Publish(t, b, spec.Topic, "while-away-1", "while-away-2")

	ch2, _ := bridgetest.Subscribe(t, b, spec)
	got := map[string]bool{}
	for range 2 {
		m := bridgetest.Receive(t, ch2, 10*time.Second)
		got[string(m.Payload)] = true
		m.Ack()
	}
	if !got["while-away-1"] || !got["while-away-2"] {
		t.Fatalf("got %v", got)
	}
	bridgetest.ExpectNothing(t, ch2, 300*time.Millisecond) // acked ones stay acked
}

// An Event group receives what is published after it first subscribed, and
// keeps its place while it has no member.
func TestEventGroupStartsAtSubscription(t *testing.T) {
	b := openURL(t, withParams(t, ""))
	topic := "sbtest.event." + bridgetest.Unique("evt")
	bridgetest.Publish(t, b, topic, "before-the-group")
	spec := bridge.Spec{Topic: topic, Group: "audit.v1", Kind: bridge.Event, Concurrency: 1}
	sub, err := b.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Close(); err != nil { // the group exists, nobody listens
		t.Fatal(err)
	}
	bridgetest.Publish(t, b, topic, "after-the-group")
	ch, _ := bridgetest.Subscribe(t, b, spec)
	m := bridgetest.Receive(t, ch, 10*time.Second)
	m.Ack()
	if string(m.Payload) != "after-the-group" {
		t.Fatalf("got %q, want after-the-group", m.Payload)
	}
	bridgetest.ExpectNothing(t, ch, 300*time.Millisecond)
}

// Metadata and the UUID survive the trip (watermill-nats header format).
func TestMetadataRoundTrip(t *testing.T) {
	b := openURL(t, withParams(t, ""))
	spec := bridge.Spec{Topic: "sbtest." + bridgetest.Unique("meta"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	ch, _ := bridgetest.Subscribe(t, b, spec)
	msg := message.NewMessage(watermill.NewUUID(), []byte("payload"))
	msg.Metadata.Set("correlation_id", "c-1")
	msg.Metadata.Set("kind", "command")
	if err := b.Publisher().Publish(spec.Topic, msg); err != nil {
		t.Fatal(err)
	}
	m := bridgetest.Receive(t, ch, 10*time.Second)
	m.Ack()
	if m.UUID != msg.UUID || string(m.Payload) != "payload" || m.Metadata.Get("correlation_id") != "c-1" || m.Metadata.Get("kind") != "command" {
		t.Fatalf("got uuid=%s payload=%q metadata=%v", m.UUID, m.Payload, m.Metadata)
	}
}

// Reply streams belong to their subscriber: publishing to a reply topic
// nobody owns fails with ErrNoSubscriber instead of creating a stream that
// no one would read, and closing the owner deletes its stream.
func TestReplyTopics(t *testing.T) {
	url := withParams(t, "")
	b := openURL(t, url)
	topic := "reply." + bridgetest.Unique("inst")
	err := b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("orphan")))
	if !errors.Is(err, bridge.ErrNoSubscriber) {
		t.Fatalf("publish to an unowned reply topic: %v, want ErrNoSubscriber", err)
	}

	spec := bridge.Spec{Topic: topic, Group: "inst", Kind: bridge.Reply, Concurrency: 1}
	sub, err := b.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	other := openURL(t, url)
	bridgetest.Publish(t, other, topic, "r1")
	m := bridgetest.Receive(t, ch, 10*time.Second)
	m.Nack() // a nacked reply comes back
	m = bridgetest.Receive(t, ch, 10*time.Second)
	m.Ack()
	if string(m.Payload) != "r1" {
		t.Fatalf("got %q", m.Payload)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	js := jetStream(t)
	if _, err := js.StreamNameBySubject(t.Context(), topic); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("reply stream still there after Close: %v", err)
	}
	// The other bridge cached the stream; it must notice it is gone.
	err = other.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("late")))
	if !errors.Is(err, bridge.ErrNoSubscriber) {
		t.Fatalf("publish after the owner closed: %v, want ErrNoSubscriber", err)
	}
}

// Concurrency N keeps N messages in flight on one subscriber, and no more.
func TestConcurrencyLimit(t *testing.T) {
	b := openURL(t, withParams(t, ""))
	spec := bridge.Spec{Topic: "sbtest." + bridgetest.Unique("conc"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 3}
	ch, _ := bridgetest.Subscribe(t, b, spec)
	bridgetest.Publish(t, b, spec.Topic, "1", "2", "3", "4", "5")
	held := []*message.Message{bridgetest.Receive(t, ch, 10*time.Second), bridgetest.Receive(t, ch, 10*time.Second), bridgetest.Receive(t, ch, 10*time.Second)}
	bridgetest.ExpectNothing(t, ch, 500*time.Millisecond)
	held[0].Ack()
	held = append(held[1:], bridgetest.Receive(t, ch, 10*time.Second))
	for _, m := range held {
		m.Ack()
	}
	bridgetest.Receive(t, ch, 10*time.Second).Ack()
}

func jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := natsgo.Connect(testenv.URL(t, testenv.NATS))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// Streams get a valid, deterministic name from the topic, and the settings
// of the URL.
func TestStreamSettings(t *testing.T) {
	topic := "sbtest." + bridgetest.Unique("cfg") + ".send-Welcome"
	b := openURL(t, withParams(t, "ack_wait=7s"))
	spec := bridge.Spec{Topic: topic, Group: "email.v1", Kind: bridge.Command, Concurrency: 1}
	if _, err := b.Subscriber(t.Context(), spec); err != nil {
		t.Fatal(err)
	}
	js := jetStream(t)
	name, err := js.StreamNameBySubject(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, testPrefix+"sbtest_") || strings.ContainsAny(name, ".*> ") {
		t.Errorf("stream name %q", name)
	}
	s, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.MaxAge != time.Hour || cfg.Storage != jetstream.FileStorage || cfg.Retention != jetstream.LimitsPolicy {
		t.Errorf("stream config: max_age=%s storage=%s retention=%s", cfg.MaxAge, cfg.Storage, cfg.Retention)
	}
	names := s.ConsumerNames(t.Context())
	var consumers []string
	for n := range names.Name() {
		consumers = append(consumers, n)
	}
	if len(consumers) != 1 || !strings.HasPrefix(consumers[0], "email_v1_") {
		t.Fatalf("consumers %v", consumers)
	}
	c, err := s.Consumer(t.Context(), consumers[0])
	if err != nil {
		t.Fatal(err)
	}
	cc := c.CachedInfo().Config
	if cc.AckWait != 7*time.Second || cc.AckPolicy != jetstream.AckExplicitPolicy || cc.MaxDeliver != -1 || cc.Durable == "" {
		t.Errorf("consumer config: %+v", cc)
	}
}

func TestBadURL(t *testing.T) {
	base := testenv.URL(t, testenv.NATS)
	for _, tc := range []struct{ url, mention string }{
		{base + "?colour=blue", "unknown parameter colour"},
		{base + "?ack_wait=soon", "ack_wait"},
		{base + "?ack_wait=0s", "ack_wait"},
		{base + "?nack_delay=1s", "unknown parameter nack_delay"},           // removed: bridge.DefaultNackDelay
		{base + "?connect_timeout=1s", "unknown parameter connect_timeout"}, // removed: Open's context
		{base + "?retention=workqueue", "retention"},
		{base + "?replicas=0", "replicas"},
		{base + "?stream_prefix=a.b", "stream_prefix"},
		{base + "?ack_wait=1s&ack_wait=2s", "ack_wait"},
		{base + "?ack_wait=25h", "ack_wait"},
		{base + "?max_age=-1s", "max_age"},
		{"nats:///", "host"},
		{"nats://127.0.0.1:4222/some/path", "path"},
		{"nats://127.0.0.1:99999", "port"},
	} {
		start := time.Now()
		b, err := bridge.Open(t.Context(), tc.url)
		if err == nil {
			_ = b.Close()
			t.Errorf("Open(%q) succeeded", tc.url)
			continue
		}
		if !errors.Is(err, bridge.ErrBadURL) || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("Open(%q): %v; want ErrBadURL mentioning %s", tc.url, err, tc.mention)
		}
		if time.Since(start) > time.Second {
			t.Errorf("Open(%q) took %s to reject", tc.url, time.Since(start))
		}
	}

	// Every problem at once, the host's and the parameters'.
	_, err := bridge.Open(t.Context(), "nats://127.0.0.1:4222/some/path?ack_wait=soon&replicas=9&retention=workqueue&colour=blue")
	if !errors.Is(err, bridge.ErrBadURL) {
		t.Fatalf("got %v, want ErrBadURL", err)
	}
	for _, want := range []string{"path", "ack_wait", "replicas", "retention", "colour"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
}

func TestUnreachable(t *testing.T) {
	for _, raw := range []string{"nats://127.0.0.1:1", "nats://user:secret@127.0.0.1:1"} {
		start := time.Now()
		b, err := bridge.Open(t.Context(), raw)
		if err == nil {
			_ = b.Close()
			t.Fatalf("Open(%q) succeeded", raw)
		}
		if !errors.Is(err, bridge.ErrUnreachable) || !strings.Contains(err.Error(), "nats") || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("Open(%q): %v; want ErrUnreachable naming nats and the address", raw, err)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("error leaks the password: %v", err)
		}
		if d := time.Since(start); d > 6*time.Second {
			t.Errorf("Open(%q) took %s", raw, d)
		}
	}

	// A server that accepts TCP but never speaks NATS: bounded by Open's
	// context.
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := bridge.Open(ctx, "nats://127.0.0.1:"+silentServer(t))
	if !errors.Is(err, bridge.ErrUnreachable) {
		t.Errorf("Open on a silent server: %v, want ErrUnreachable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Open on a silent server took %s", d)
	}
}

func TestClosedBridge(t *testing.T) {
	b := openURL(t, withParams(t, ""))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Health(t.Context()); err == nil {
		t.Error("Health on a closed bridge returned nil")
	}
	if err := b.Publisher().Publish("sbtest.x", message.NewMessage("1", nil)); !errors.Is(err, bridge.ErrClosed) {
		t.Errorf("Publish after Close: %v", err)
	}
	if _, err := b.Subscriber(t.Context(), bridge.Spec{Topic: "sbtest.x", Group: "g", Kind: bridge.Command, Concurrency: 1}); !errors.Is(err, bridge.ErrClosed) {
		t.Errorf("Subscriber after Close: %v", err)
	}
	if err := b.Publisher().Close(); err != nil {
		t.Errorf("Publisher().Close: %v", err)
	}
}

func TestInvalidTopic(t *testing.T) {
	b := openURL(t, withParams(t, ""))
	for _, topic := range []string{"a..b", "a.*", "a.>", "has space", ".a", "a."} {
		if err := b.Publisher().Publish(topic, message.NewMessage("1", nil)); !errors.Is(err, bridge.ErrRefused) {
			t.Errorf("Publish(%q): %v, want bridge.ErrRefused", topic, err)
		}
		if _, err := b.Subscriber(t.Context(), bridge.Spec{Topic: topic, Group: "g", Kind: bridge.Command, Concurrency: 1}); err == nil {
			t.Errorf("Subscriber(%q) succeeded", topic)
		}
	}
}

// silentServer listens on a free port, accepts connections and never
// answers; it returns the port.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// A handler slower than ack_wait keeps its message: the subscriber reports
// progress, so no other member gets a duplicate while it runs.
func TestSlowHandlerIsNotRedelivered(t *testing.T) {
	url := withParams(t, "ack_wait=1s")
	spec := bridge.Spec{Topic: "sbtest." + bridgetest.Unique("slow"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	ch1, _ := bridgetest.Subscribe(t, openURL(t, url), spec)
	ch2, _ := bridgetest.Subscribe(t, openURL(t, url), spec)
	bridgetest.Publish(t, openURL(t, url), spec.Topic, "slow")
	var m *message.Message
	var other <-chan *message.Message
	select {
	case m = <-ch1:
		other = ch2
	case m = <-ch2:
		other = ch1
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
	bridgetest.ExpectNothing(t, other, 2500*time.Millisecond) // 2.5 × ack_wait
	m.Ack()
	bridgetest.ExpectNothing(t, other, 1500*time.Millisecond)
}

// Every kind of subscription resumes after the server restarts: the
// durable Command and Event consumers where they were, the Reply stream
// (kept in memory, so lost with the server) re-created by its subscriber.
func TestSubscriptionsSurviveServerRestart(t *testing.T) {
	url := withParams(t, "")
	b := openURL(t, url)
	pub := openURL(t, url)
	cmd := bridge.Spec{Topic: "sbtest." + bridgetest.Unique("rcmd"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	evt := bridge.Spec{Topic: "sbtest.event." + bridgetest.Unique("revt"), Group: "audit.v1", Kind: bridge.Event, Concurrency: 1}
	rep := bridge.Spec{Topic: "reply." + bridgetest.Unique("rinst"), Group: "inst", Kind: bridge.Reply, Concurrency: 1}
	chans := map[string]<-chan *message.Message{}
	for _, spec := range []bridge.Spec{cmd, evt, rep} {
		ch, _ := bridgetest.Subscribe(t, b, spec)
		chans[spec.Topic] = ch
		bridgetest.Publish(t, pub, spec.Topic, "before")
		m := bridgetest.Receive(t, ch, 10*time.Second)
		m.Ack()
	}
	bridgetest.Publish(t, pub, cmd.Topic, "queued-before-outage")

	restore := testenv.Outage(t, testenv.NATS)
	time.Sleep(500 * time.Millisecond) // let the subscriptions notice
	restore()

	deadline := time.Now().Add(30 * time.Second)
	for _, spec := range []bridge.Spec{cmd, evt, rep} {
		for { // publishes fail until the connection is back (and, for the reply, its stream)
			err := pub.Publisher().Publish(spec.Topic, message.NewMessage(watermill.NewUUID(), []byte("after")))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("publish to %s after the restart: %v", spec.Topic, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	want := map[string][]string{cmd.Topic: {"queued-before-outage", "after"}, evt.Topic: {"after"}, rep.Topic: {"after"}}
	for topic, payloads := range want {
		got := map[string]bool{}
		for range payloads {
			m := bridgetest.Receive(t, chans[topic], 30*time.Second)
			got[string(m.Payload)] = true
			m.Ack()
		}
		for _, p := range payloads {
			if !got[p] {
				t.Errorf("%s: got %v, want %v", topic, got, payloads)
			}
		}
	}
}

// retention=interest: a topic's stream keeps a message only while a
// consumer has not acked it.
func TestInterestRetention(t *testing.T) {
	b := openURL(t, withParams(t, "retention=interest"))
	spec := bridge.Spec{Topic: "sbtest.event." + bridgetest.Unique("int"), Group: "audit.v1", Kind: bridge.Event, Concurrency: 1}
	ch, _ := bridgetest.Subscribe(t, b, spec)
	bridgetest.Publish(t, b, spec.Topic, "e1")
	m := bridgetest.Receive(t, ch, 10*time.Second)
	m.Ack()
	js := jetStream(t)
	name, err := js.StreamNameBySubject(t.Context(), spec.Topic)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Retention != jetstream.InterestPolicy || info.State.Msgs != 0 {
		t.Fatalf("retention %s, %d messages left after the only group acked", info.Config.Retention, info.State.Msgs)
	}
}

// BenchmarkPublish measures one publish to a topic whose stream is known.
func BenchmarkPublish(b *testing.B) {
	br, err := bridge.Open(b.Context(), withParams(b, ""))
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	topic := "sbtest." + bridgetest.Unique("bench")
	msg := message.NewMessage(watermill.NewUUID(), []byte("payload"))
	for b.Loop() {
		if err := br.Publisher().Publish(topic, msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublishBatch publishes 100 messages per Publish call: the
// messages of one call are pipelined.
func BenchmarkPublishBatch(b *testing.B) {
	br, err := bridge.Open(b.Context(), withParams(b, ""))
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	topic := "sbtest." + bridgetest.Unique("benchbatch")
	msgs := make([]*message.Message, 100)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte("payload"))
	}
	for b.Loop() {
		if err := br.Publisher().Publish(topic, msgs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "msg/s")
}
