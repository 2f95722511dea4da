package amqp_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/amqp"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/engine/backendtest"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

// testURL is the broker's URL with queue_expires, so that the durable queues
// of finished tests (unique names) disappear ten minutes after their last
// consumer, plus extra parameters.
func testURL(t testing.TB, extra ...string) string {
	t.Helper()
	raw := testenv.URL(t, testenv.AMQP)
	sep := "?"
	if strings.Contains(raw, "?") {
		sep = "&"
	}
	return raw + sep + strings.Join(append([]string{"queue_expires=10m"}, extra...), "&")
}

func openBridge(t *testing.T, extra ...string) bridge.Bridge {
	t.Helper()
	b, err := bridge.Open(t.Context(), testURL(t, extra...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// TestConformance runs the whole suite: bridge level, engine level, and
// the chaos run (with a broker restart in each of the three).
func TestConformance(t *testing.T) {
	h := bridgetest.Harness{
		URL:    testURL(t),
		Outage: func(t *testing.T) func() { return testenv.Outage(t, testenv.AMQP) },
	}
	t.Run("Bridge", func(t *testing.T) { bridgetest.Run(t, h) })
	backendtest.Run(t, h)
}

// openErr opens rawURL, requires an error within limit, and returns it.
func openErr(t *testing.T, rawURL string, limit time.Duration) error {
	t.Helper()
	start := time.Now()
	b, err := bridge.Open(context.Background(), rawURL)
	if took := time.Since(start); took > limit {
		t.Errorf("Open(%q) took %s, want at most %s", bridge.Redact(rawURL), took, limit)
	}
	if err == nil {
		_ = b.Close()
		t.Fatalf("Open(%q) succeeded", bridge.Redact(rawURL))
	}
	return err
}

func TestBadURL(t *testing.T) {
	base := testenv.URL(t, testenv.AMQP)
	u, _ := url.Parse(base)
	u.RawQuery = ""
	base = u.String()
	cases := map[string]string{
		base + "?colour=blue":                        "unknown parameter colour",
		base + "?nack_delay=2s":                      "unknown parameter nack_delay", // removed: bridge.DefaultNackDelay
		base + "?prefetch=-1":                        "prefetch",
		base + "?prefetch=1&prefetch=2":              "prefetch",
		base + "?publish_channels=":                  "publish_channels",
		base + "?exchange=amq.direct":                "exchange",
		base + "?exchange=has%20space":               "exchange",
		base + "?queue_expires=-1s":                  "queue_expires",
		base + "?connect_timeout=1s":                 "unknown parameter connect_timeout", // removed: Open's context
		base + "?tls_ca=/etc/ssl/ca.pem":             "amqps",
		base + "#frag":                               "fragment",
		"amqp://guest:guest@127.0.0.1:notaport/":     "",
		"amqps://127.0.0.1:5671/?tls_cert=/nonexist": "tls_cert",
		"amqps://127.0.0.1:5671/?tls_ca=/nonexist":   "tls_ca",
	}
	for raw, want := range cases {
		err := openErr(t, raw, time.Second)
		if !errors.Is(err, bridge.ErrBadURL) {
			t.Errorf("Open(%q) = %v, want an error wrapping bridge.ErrBadURL", raw, err)
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q) = %v, want it to name %s", raw, err, want)
		}
	}
	// Every problem is reported at once.
	raw := base + "?prefetch=-1&colour=blue&exchange=amq.x&heartbeat=soon"
	err := openErr(t, raw, time.Second)
	for _, want := range []string{"prefetch", "colour", "exchange", "heartbeat"} {
		if !errors.Is(err, bridge.ErrBadURL) || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q) = %v, want ErrBadURL naming %s", raw, err, want)
		}
	}
}

func TestWrongCredentials(t *testing.T) {
	u, _ := url.Parse(testenv.URL(t, testenv.AMQP))
	u.User = url.UserPassword("guest", "not-the-password")
	err := openErr(t, u.String(), 10*time.Second)
	if !errors.Is(err, amqp.ErrAccessRefused) || !errors.Is(err, bridge.ErrUnreachable) {
		t.Fatalf("got %v, want ErrAccessRefused and ErrUnreachable", err)
	}
	if strings.Contains(err.Error(), "not-the-password") {
		t.Fatalf("error leaks the password: %v", err)
	}
	if !strings.Contains(err.Error(), u.Host) {
		t.Fatalf("error does not name the broker %s: %v", u.Host, err)
	}

	u.User = url.UserPassword("guest", "guest")
	u.Path = "/no-such-vhost-" + watermill.NewShortUUID()
	if err := openErr(t, u.String(), 10*time.Second); !errors.Is(err, amqp.ErrAccessRefused) {
		t.Fatalf("unknown vhost: got %v, want ErrAccessRefused", err)
	}
}

func TestUnreachable(t *testing.T) {
	// A port nobody listens on: refused at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	err = openErr(t, "amqp://guest:secret@"+addr+"/", 10*time.Second)
	if !errors.Is(err, bridge.ErrUnreachable) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("got %v, want ErrUnreachable naming %s", err, addr)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Fatalf("error leaks the password: %v", err)
	}

	// A server that accepts and never answers: bounded by Open's context.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	hangUp, accepting := make(chan struct{}), make(chan struct{})
	var conns sync.WaitGroup
	defer func() { // the connections stay silent until the test ends
		close(hangUp)
		_ = silent.Close()
		<-accepting
		conns.Wait()
	}()
	go func() {
		defer close(accepting)
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { defer conns.Done(); <-hangUp; _ = c.Close() }()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	b, err := bridge.Open(ctx, "amqp://"+silent.Addr().String()+"/")
	if err == nil {
		_ = b.Close()
		t.Fatal("Open succeeded against a silent server")
	}
	if !errors.Is(err, bridge.ErrUnreachable) {
		t.Fatalf("silent server: got %v, want ErrUnreachable", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Open ignored its context: took %s", took)
	}

	// Without a deadline of its own, each attempt is bounded by DialTimeout.
	err = openErr(t, "amqp://"+silent.Addr().String()+"/", amqp.DialTimeout+3*time.Second)
	if !errors.Is(err, bridge.ErrUnreachable) {
		t.Fatalf("silent server, no deadline: got %v, want ErrUnreachable", err)
	}
}

// consumer records the deliveries of a channel, acking (or nacking) each.
type consumer struct {
	mu    sync.Mutex
	times []time.Time
	msgs  []*message.Message
}

func (c *consumer) run(ch <-chan *message.Message, nack bool) {
	go func() {
		for m := range ch {
			c.mu.Lock()
			c.times = append(c.times, time.Now())
			c.msgs = append(c.msgs, m)
			c.mu.Unlock()
			if nack {
				m.Nack()
			} else {
				m.Ack()
			}
		}
	}()
}

func (c *consumer) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.times)
}

func subscribe(t *testing.T, b bridge.Bridge, spec bridge.Spec) <-chan *message.Message {
	ch, _ := bridgetest.Subscribe(t, b, spec)
	return ch
}

// A message one group keeps nacking comes back to that group only, after
// bridge.DefaultNackDelay each time: no hot loop, no copy for the other
// group.
func TestNackRedeliversToItsGroupOnlyWithoutHotLoop(t *testing.T) {
	const delay = bridge.DefaultNackDelay
	b := openBridge(t)
	topic := bridgetest.Unique("nackloop")
	failing, healthy := &consumer{}, &consumer{}
	failing.run(subscribe(t, b, bridge.Spec{Topic: topic, Group: "failing.v1", Kind: bridge.Command, Concurrency: 1}), true)
	healthy.run(subscribe(t, b, bridge.Spec{Topic: topic, Group: "healthy.v1", Kind: bridge.Event, Concurrency: 1}), false)
	bridgetest.Publish(t, b, topic, "poison")

	bridgetest.WaitFor(t, 10*time.Second, "the first delivery", func() bool { return failing.count() >= 1 })
	const window = 3*delay + delay/2
	time.Sleep(window)
	n := failing.count()
	// One delivery at once, then one per delay (plus broker latency).
	if maximum := int(window/delay) + 2; n > maximum {
		t.Fatalf("%d deliveries in %s with a nack delay of %s: hot loop (want at most %d)", n, window, delay, maximum)
	}
	if n < 3 {
		t.Fatalf("only %d deliveries in %s with a nack delay of %s: not redelivered", n, window, delay)
	}
	failing.mu.Lock()
	for i := 1; i < len(failing.times); i++ {
		if gap := failing.times[i].Sub(failing.times[i-1]); gap < delay*3/4 {
			t.Errorf("redelivery %d came %s after the previous one, want about %s", i, gap, delay)
		}
	}
	first, last := failing.msgs[0], failing.msgs[len(failing.msgs)-1]
	if last.UUID != first.UUID || string(last.Payload) != "poison" {
		t.Errorf("redelivered %s %q, want %s poison", last.UUID, last.Payload, first.UUID)
	}
	for i, m := range failing.msgs {
		if got, want := m.Metadata.Get(bridge.DeliveryKey), strconv.Itoa(i+1); got != want {
			t.Errorf("delivery %d has %s=%q, want %s", i+1, bridge.DeliveryKey, got, want)
		}
	}
	failing.mu.Unlock()
	if got := healthy.count(); got != 1 {
		t.Fatalf("the other group got %d deliveries, want exactly 1", got)
	}
}

// Metadata survives the trip; so does a message nobody subscribed to yet,
// once its group's queue exists (durability across bridges).
func TestDurableQueueAndMetadata(t *testing.T) {
	spec := bridge.Spec{Topic: bridgetest.Unique("durable"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	b1 := openBridge(t)
	sub, err := b1.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Subscribe(t.Context(), spec.Topic); err != nil {
		t.Fatal(err)
	}
	if err := sub.Close(); err != nil { // the queue stays
		t.Fatal(err)
	}
	m := message.NewMessage(watermill.NewUUID(), []byte("kept"))
	m.Metadata.Set("correlation_id", "c-1")
	if err := b1.Publisher().Publish(spec.Topic, m); err != nil {
		t.Fatal(err)
	}
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}

	b2 := openBridge(t)
	select {
	case got := <-subscribe(t, b2, spec):
		got.Ack()
		if got.UUID != m.UUID || string(got.Payload) != "kept" || got.Metadata.Get("correlation_id") != "c-1" {
			t.Fatalf("got %s %q %v, want %s kept correlation_id=c-1", got.UUID, got.Payload, got.Metadata, m.UUID)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("message published while the group had no consumer was lost")
	}
}

// Closing a subscriber leaves the bridge and its publisher working; closing
// the bridge twice is fine; everything fails cleanly after Close.
func TestCloseSemantics(t *testing.T) {
	b, err := bridge.Open(t.Context(), testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	spec := bridge.Spec{Topic: bridgetest.Unique("close"), Group: "svc.v1", Kind: bridge.Event, Concurrency: 3}
	sub, err := b.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(t.Context(), spec.Topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Fatal("channel still open after Close")
	}
	if err := b.Publisher().Close(); err != nil {
		t.Fatal(err)
	}
	bridgetest.Publish(t, b, spec.Topic, "still works")
	if err := b.Health(t.Context()); err != nil {
		t.Fatal(err)
	}
	again := subscribe(t, b, spec)
	select {
	case m := <-again:
		m.Ack()
	case <-time.After(20 * time.Second):
		t.Fatal("no delivery after a subscriber was closed")
	}
	if _, err := b.Subscriber(t.Context(), bridge.Spec{Topic: "x@y", Group: "g", Kind: bridge.Command, Concurrency: 1}); err == nil {
		t.Fatal("a topic with '@' was accepted")
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Publisher().Publish(spec.Topic, message.NewMessage("1", nil)); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := b.Subscriber(t.Context(), spec); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("Subscriber after Close: %v, want ErrClosed", err)
	}
	if err := b.Health(t.Context()); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("Health after Close: %v, want ErrClosed", err)
	}
}

// A reply queue belongs to one connection: another bridge cannot consume it.
func TestReplyQueueIsExclusive(t *testing.T) {
	spec := bridge.Spec{Topic: bridgetest.Unique("reply"), Group: "inst-1", Kind: bridge.Reply, Concurrency: 1}
	subscribe(t, openBridge(t), spec)
	other := openBridge(t)
	sub, err := other.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Subscribe(t.Context(), spec.Topic); err == nil {
		t.Fatal("a second connection consumed another instance's reply queue")
	}
	_ = sub.Close()
	if err := other.Health(t.Context()); err != nil {
		t.Fatalf("the refused subscribe broke the bridge: %v", err)
	}
}

// Events fan out to groups, replies reach their instance and Concurrency
// holds after the broker restarts: the topology is declared again.
func TestTopologyAfterBrokerRestart(t *testing.T) {
	b := openBridge(t)
	topic, replyTopic := bridgetest.Unique("evt"), bridgetest.Unique("reply")
	a, c, r := &consumer{}, &consumer{}, &consumer{}
	a.run(subscribe(t, b, bridge.Spec{Topic: topic, Group: "a.v1", Kind: bridge.Event, Concurrency: 3}), false)
	c.run(subscribe(t, b, bridge.Spec{Topic: topic, Group: "c.v1", Kind: bridge.Event, Concurrency: 1}), false)
	r.run(subscribe(t, b, bridge.Spec{Topic: replyTopic, Group: "inst", Kind: bridge.Reply, Concurrency: 2}), false)
	bridgetest.Publish(t, b, topic, "e1")
	bridgetest.Publish(t, b, replyTopic, "r1")
	bridgetest.WaitFor(t, 20*time.Second, "deliveries before the restart", func() bool {
		return a.count() == 1 && c.count() == 1 && r.count() == 1
	})

	restore := testenv.Outage(t, testenv.AMQP)
	bridgetest.WaitFor(t, 20*time.Second, "Health to report the outage", func() bool { return b.Health(t.Context()) != nil })
	restore()
	bridgetest.WaitFor(t, 60*time.Second, "Health to recover", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return b.Health(ctx) == nil
	})
	// The reply queue is exclusive, so it comes back only when the
	// subscription's consumers are back: keep publishing until it is.
	deadline := time.Now().Add(40 * time.Second)
	for r.count() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("reply subscription did not resume after the restart")
		}
		_ = b.Publisher().Publish(replyTopic, message.NewMessage(watermill.NewUUID(), []byte("r2")))
		time.Sleep(200 * time.Millisecond)
	}
	for {
		err := b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("e2")))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish after the restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	bridgetest.WaitFor(t, 40*time.Second, "both event groups after the restart", func() bool { return a.count() >= 2 && c.count() >= 2 })
	time.Sleep(300 * time.Millisecond)
	if a.count() != 2 || c.count() != 2 {
		t.Fatalf("group a got %d events, group c %d, want 2 each", a.count(), c.count())
	}
}

// A topic no queue is bound to fails at once with ErrNoSubscriber; a
// command or event group's queue outlives its consumers, a reply queue does
// not.
func TestMissingHandler(t *testing.T) {
	b := openBridge(t)
	if !b.Capabilities().DetectsMissingHandler {
		t.Fatal("DetectsMissingHandler is false")
	}
	start := time.Now()
	err := b.Publisher().Publish(bridgetest.Unique("nobody"), message.NewMessage(watermill.NewUUID(), nil))
	if !errors.Is(err, bridge.ErrNoSubscriber) {
		t.Fatalf("publish to a topic nobody consumes: %v, want ErrNoSubscriber", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("ErrNoSubscriber took %s", took)
	}

	for kind, wantAfterClose := range map[bridge.Kind]error{bridge.Command: nil, bridge.Event: nil, bridge.Reply: bridge.ErrNoSubscriber} {
		spec := bridge.Spec{Topic: bridgetest.Unique(kind.String()), Group: "g1", Kind: kind, Concurrency: 1}
		sub, err := b.Subscriber(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sub.Subscribe(t.Context(), spec.Topic); err != nil {
			t.Fatal(err)
		}
		bridgetest.Publish(t, b, spec.Topic, "while subscribed")
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		err = b.Publisher().Publish(spec.Topic, message.NewMessage(watermill.NewUUID(), nil))
		if !errors.Is(err, wantAfterClose) || (wantAfterClose == nil && err != nil) {
			t.Errorf("%s: publish after the subscriber closed: %v, want %v", kind, err, wantAfterClose)
		}
	}
	// The bridge is still fine after the returns.
	if err := b.Health(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkPublish measures confirmed publishes, from parallel goroutines,
// to a topic one group consumes.
func BenchmarkPublish(b *testing.B) {
	br, err := bridge.Open(context.Background(), testURL(b))
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	spec := bridge.Spec{Topic: bridgetest.Unique("bench"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 8}
	sub, err := br.Subscriber(context.Background(), spec)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(context.Background(), spec.Topic)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for m := range ch {
			m.Ack()
		}
	}()
	payload := make([]byte, 256)
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := br.Publisher().Publish(spec.Topic, message.NewMessage(watermill.NewUUID(), payload)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

// A Nack with bridge.NackDelayKey comes back after that delay (not the
// default), to its group only, with its metadata and a growing delivery
// count.
func TestNackDelayPerMessage(t *testing.T) {
	b := openBridge(t) // plain nacks wait bridge.DefaultNackDelay, 1s
	topic := bridgetest.Unique("nackdelay")
	delays := []time.Duration{700 * time.Millisecond, 150 * time.Millisecond}
	type seen struct {
		at  time.Time
		msg *message.Message
	}
	got := make(chan seen, 10)
	ch := subscribe(t, b, bridge.Spec{Topic: topic, Group: "failing.v1", Kind: bridge.Command, Concurrency: 1})
	go func() {
		n := 0
		for m := range ch {
			got <- seen{time.Now(), m}
			if n < len(delays) {
				m.Metadata.Set(bridge.NackDelayKey, delays[n].String())
				m.Nack()
			} else {
				m.Ack()
			}
			n++
		}
	}()
	other := &consumer{}
	other.run(subscribe(t, b, bridge.Spec{Topic: topic, Group: "other.v1", Kind: bridge.Event, Concurrency: 1}), false)

	sent := message.NewMessage(watermill.NewUUID(), []byte("retry me"))
	sent.Metadata.Set("correlation_id", "c-42")
	if err := b.Publisher().Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	var all []seen
	for range len(delays) + 1 {
		select {
		case s := <-got:
			all = append(all, s)
		case <-time.After(20 * time.Second):
			t.Fatalf("got %d deliveries, want %d", len(all), len(delays)+1)
		}
	}
	for i, s := range all {
		m := s.msg
		if m.UUID != sent.UUID || string(m.Payload) != "retry me" || m.Metadata.Get("correlation_id") != "c-42" {
			t.Errorf("delivery %d: %s %q %v", i+1, m.UUID, m.Payload, m.Metadata)
		}
		if got, want := m.Metadata.Get(bridge.DeliveryKey), strconv.Itoa(i+1); got != want {
			t.Errorf("delivery %d: %s=%q, want %s", i+1, bridge.DeliveryKey, got, want)
		}
		if i == 0 {
			continue
		}
		gap, asked := s.at.Sub(all[i-1].at), delays[i-1]
		if gap < asked-20*time.Millisecond || gap > asked+600*time.Millisecond {
			t.Errorf("delivery %d came %s after the previous one, asked for %s", i+1, gap, asked)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := other.count(); n != 1 {
		t.Errorf("the other group got %d deliveries, want 1", n)
	}
}

// A retry queue declared earlier with another TTL (by a version with a
// nack_delay parameter) makes the broker refuse the declaration with
// PRECONDITION_FAILED. Subscribe keeps the queue as it is, with a warning
// saying how to migrate, instead of failing; a nacked message comes back
// through it, after its own TTL.
func TestRetryQueueWithAnotherTTLIsKept(t *testing.T) {
	const ttl = 2 * time.Second
	spec := bridge.Spec{Topic: bridgetest.Unique("oldretry"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	queue := spec.Group + "@" + spec.Topic
	retry := queue + "@retry"
	conn, err := amqp091.Dial(testenv.URL(t, testenv.AMQP))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the bridge is closed (cleanups run last first)
		_, _ = ch.QueueDelete(retry, false, false, false)
		_, _ = ch.QueueDelete(queue, false, false, false)
	})
	// As the bridge declares it (testURL's queue_expires=10m), but the TTL.
	if _, err := ch.QueueDeclare(retry, true, false, false, false, amqp091.Table{
		"x-message-ttl":             ttl.Milliseconds(),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": queue,
		"x-expires":                 (10 * time.Minute).Milliseconds(),
	}); err != nil {
		t.Fatal(err)
	}

	logs := captureDefaultLog(t) // before Open: the bridge keeps the logger it found
	b := openBridge(t)
	msgs := subscribe(t, b, spec)
	bridgetest.Publish(t, b, spec.Topic, "x")
	first := bridgetest.Receive(t, msgs, 20*time.Second)
	nacked := time.Now()
	first.Nack()
	again := bridgetest.Receive(t, msgs, ttl+20*time.Second)
	again.Ack()
	if again.UUID != first.UUID {
		t.Errorf("got %s back, want the nacked %s", again.UUID, first.UUID)
	}
	if waited := time.Since(nacked); waited < ttl-100*time.Millisecond {
		t.Errorf("nacked message back after %s, want the kept queue's TTL %s", waited, ttl)
	}
	if l := logs.String(); !strings.Contains(l, retry) || !strings.Contains(l, "delete the queue once it is empty") || !strings.Contains(l, "x-message-ttl") {
		t.Errorf("no warning naming the retry queue, the argument and how to migrate:\n%s", l)
	}
}
