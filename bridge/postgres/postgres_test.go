package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/bridge/postgres"
	"github.com/switchboard-go/switchboard/engine/backendtest"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

// wait bounds every wait for a delivery in this file's own tests.
const wait = 20 * time.Second

// baseURL returns the test database's URL (testenv.URL creates the
// database if needed).
func baseURL(t testing.TB) string {
	t.Helper()
	return testenv.URL(t, testenv.Postgres)
}

// schemaURL returns a URL on a fresh schema that is dropped when the test
// ends, with extra query parameters added.
func schemaURL(t testing.TB, params ...string) string {
	t.Helper()
	raw := baseURL(t)
	schema := strings.ToLower(bridgetest.Unique("sbtest"))
	t.Cleanup(func() { // registered first: runs after every bridge is closed
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, raw)
		if err != nil {
			t.Logf("dropping schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Logf("dropping schema %s: %v", schema, err)
		}
	})
	return withParams(raw, append([]string{"schema", schema}, params...)...)
}

func withParams(raw string, kv ...string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func openBridge(t testing.TB, raw string) bridge.Bridge {
	t.Helper()
	b, err := bridge.Open(context.Background(), raw)
	if err != nil {
		t.Fatalf("Open(%s): %v", bridge.Redact(raw), err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	// A lease shorter than the default 30 s, so that KilledConsumerLosesNothing
	// sees a dead consumer's messages again within the suite's waits; no
	// handler of the suite holds its message that long.
	const ackDeadline = 10 * time.Second
	h := bridgetest.Harness{
		URL:               schemaURL(t, "ack_deadline", ackDeadline.String()),
		Outage:            func(t *testing.T) func() { return testenv.Outage(t, testenv.Postgres) },
		DeadConsumerDelay: ackDeadline,
	}
	t.Run("Bridge", func(t *testing.T) { bridgetest.Run(t, h) })
	backendtest.Run(t, h)
}

// The default schema (no ?schema=) is created on first use and shared.
func TestDefaultSchema(t *testing.T) {
	b := openBridge(t, baseURL(t))
	if got := b.(*postgres.Bridge).Adapter().Schema; got != postgres.DefaultSchema {
		t.Fatalf("schema %q, want %q", got, postgres.DefaultSchema)
	}
	spec := bridge.Spec{Topic: bridgetest.Unique("email.v1.sendWelcome"), Group: "email.v1", Kind: bridge.Command, Concurrency: 1}
	t.Cleanup(func() { // the default schema is shared: remove this test's group
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := b.(*postgres.Bridge).Pool().Exec(ctx, `DELETE FROM switchboard.bridge_groups WHERE topic = $1`, spec.Topic); err != nil {
			t.Errorf("removing the test group: %v", err)
		}
	})
	ch, sub := bridgetest.Subscribe(t, b, spec)
	bridgetest.Publish(t, b, spec.Topic, "hello")
	m := bridgetest.Receive(t, ch, wait)
	m.Ack()
	if string(m.Payload) != "hello" {
		t.Fatalf("got %q", m.Payload)
	}
	_ = sub.Close()
}

func TestMetadataAndBatchOrder(t *testing.T) {
	b := openBridge(t, schemaURL(t))
	spec := bridge.Spec{Topic: bridgetest.Unique("event.user.created"), Group: "audit.v1", Kind: bridge.Event, Concurrency: 1}
	ch, _ := bridgetest.Subscribe(t, b, spec)
	var msgs []*message.Message
	for _, p := range []string{"a", "b", "c"} {
		m := message.NewMessage(watermill.NewUUID(), []byte(p))
		m.Metadata.Set("correlation_id", "c-"+p)
		msgs = append(msgs, m)
	}
	if err := b.Publisher().Publish(spec.Topic, msgs...); err != nil {
		t.Fatal(err)
	}
	for _, want := range msgs {
		got := bridgetest.Receive(t, ch, wait)
		got.Ack()
		if got.UUID != want.UUID || string(got.Payload) != string(want.Payload) || got.Metadata.Get("correlation_id") != want.Metadata.Get("correlation_id") {
			t.Fatalf("got %s %q %v, want %s %q %v", got.UUID, got.Payload, got.Metadata, want.UUID, want.Payload, want.Metadata)
		}
	}
	if msgs[0].Context() != context.Background() {
		t.Error("Publish changed the caller's message context")
	}
}

func TestNoSubscriber(t *testing.T) {
	b := openBridge(t, schemaURL(t))
	topic := bridgetest.Unique("nobody")
	err := b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("x")))
	if !errors.Is(err, bridge.ErrNoSubscriber) {
		t.Fatalf("Publish to a topic without groups: %v, want ErrNoSubscriber", err)
	}
}

// A command group that exists but has no running member still gets its
// commands, and the next member receives them.
func TestCommandsQueuedWhileGroupOffline(t *testing.T) {
	raw := schemaURL(t)
	b1 := openBridge(t, raw)
	spec := bridge.Spec{Topic: bridgetest.Unique("email.v1.sendWelcome"), Group: "email.v1", Kind: bridge.Command, Concurrency: 1}
	sub, err := b1.Subscriber(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.Close()
	_ = b1.Close()

	b2 := openBridge(t, raw)
	bridgetest.Publish(t, b2, spec.Topic, "queued-1", "queued-2")
	b3 := openBridge(t, raw)
	ch, _ := bridgetest.Subscribe(t, b3, spec)
	for _, want := range []string{"queued-1", "queued-2"} {
		m := bridgetest.Receive(t, ch, wait)
		m.Ack()
		if string(m.Payload) != want {
			t.Fatalf("got %q, want %q", m.Payload, want)
		}
	}
}

// Reply groups disappear with their last member: publishing to them fails.
func TestReplyGroupDeletedOnClose(t *testing.T) {
	b := openBridge(t, schemaURL(t))
	spec := bridge.Spec{Topic: "reply." + watermill.NewUUID(), Group: "inst-" + watermill.NewShortUUID(), Kind: bridge.Reply, Concurrency: 1}
	ch, sub := bridgetest.Subscribe(t, b, spec)
	bridgetest.Publish(t, b, spec.Topic, "r")
	bridgetest.Receive(t, ch, wait).Ack()
	_ = sub.Close()
	err := b.Publisher().Publish(spec.Topic, message.NewMessage(watermill.NewUUID(), []byte("late")))
	if !errors.Is(err, bridge.ErrNoSubscriber) {
		t.Fatalf("Publish to a closed reply group: %v, want ErrNoSubscriber", err)
	}
}

func TestGroupKindMismatch(t *testing.T) {
	b := openBridge(t, schemaURL(t))
	topic := bridgetest.Unique("mixed")
	bridgetest.Subscribe(t, b, bridge.Spec{Topic: topic, Group: "g", Kind: bridge.Command, Concurrency: 1})
	if _, err := b.Subscriber(context.Background(), bridge.Spec{Topic: topic, Group: "g", Kind: bridge.Event, Concurrency: 1}); err == nil {
		t.Fatal("joined a command group as an event group")
	}
}

func TestBadTopic(t *testing.T) {
	b := openBridge(t, schemaURL(t))
	for _, topic := range []string{"a b", "x;drop table y", strings.Repeat("t", 2000)} {
		if _, err := b.Subscriber(context.Background(), bridge.Spec{Topic: topic, Group: "g", Kind: bridge.Command, Concurrency: 1}); err == nil {
			t.Errorf("Subscriber accepted topic %.20q", topic)
		}
		// Refused for what it is, not for want of a server: a caller that
		// retries an unreachable backend (the outbox relay, a reply) would
		// otherwise wait for it forever.
		if err := b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), nil)); !errors.Is(err, bridge.ErrRefused) {
			t.Errorf("Publish to topic %.20q: %.80v, want bridge.ErrRefused", topic, err)
		} else if errors.Is(err, bridge.ErrUnreachable) {
			t.Errorf("Publish to topic %.20q: %.80v; a bad topic is no unreachable backend", topic, err)
		}
	}
}

// A message PostgreSQL cannot store as it is (a NUL in its metadata, which
// jsonb refuses: SQLSTATE 22P05) is refused for what it is: retrying it,
// as the outbox relay or a reply would for an unreachable server, can
// never succeed.
func TestUnstorableMessageIsRefused(t *testing.T) {
	b := openBridge(t, schemaURL(t))
	spec := bridge.Spec{Topic: bridgetest.Unique("nul"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	bridgetest.Subscribe(t, b, spec)
	m := message.NewMessage(watermill.NewUUID(), []byte("{}"))
	m.Metadata.Set("k", "a\x00b")
	err := b.Publisher().Publish(spec.Topic, m)
	if !errors.Is(err, bridge.ErrRefused) || errors.Is(err, bridge.ErrUnreachable) {
		t.Fatalf("publish with a NUL in the metadata: %v, want bridge.ErrRefused", err)
	}
}

// A nacked message does not hold up the rest of its group, and comes back
// after bridge.DefaultNackDelay.
func TestNackDoesNotBlockGroup(t *testing.T) {
	b := openBridge(t, schemaURL(t))
	spec := bridge.Spec{Topic: bridgetest.Unique("nackhol"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	ch, _ := bridgetest.Subscribe(t, b, spec)
	bridgetest.Publish(t, b, spec.Topic, "poison", "a", "b", "c")
	first := bridgetest.Receive(t, ch, wait)
	if string(first.Payload) != "poison" {
		t.Fatalf("first delivery %q, want poison", first.Payload)
	}
	nacked := time.Now()
	first.Nack()
	for _, want := range []string{"a", "b", "c"} {
		m := bridgetest.Receive(t, ch, wait)
		m.Ack()
		if string(m.Payload) != want {
			t.Fatalf("got %q while the nacked message waits, want %q", m.Payload, want)
		}
	}
	again := bridgetest.Receive(t, ch, wait)
	again.Ack()
	if string(again.Payload) != "poison" || again.UUID != first.UUID {
		t.Fatalf("redelivered %q, want the nacked message", again.Payload)
	}
	if waited := time.Since(nacked); waited < bridge.DefaultNackDelay-50*time.Millisecond {
		t.Errorf("redelivered after %s, want bridge.DefaultNackDelay (%s)", waited, bridge.DefaultNackDelay)
	}
}

// A message delivered and never acked comes back after the ack deadline: to
// the same subscription, and to another member when its holder is gone.
func TestAckDeadline(t *testing.T) {
	raw := schemaURL(t, "ack_deadline", "1s")
	// A live member keeps its lease as long as its handler runs (the
	// runtime's heartbeats renew it): a slow handler is not raced by
	// another member. The ack deadline bounds how long a message stays
	// with a member that died (CrashedConsumer).
	t.Run("SlowHandlerKeepsItsLease", func(t *testing.T) {
		b := openBridge(t, raw)
		spec := bridge.Spec{Topic: bridgetest.Unique("deadline"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
		ch, _ := bridgetest.Subscribe(t, b, spec)
		other, _ := bridgetest.Subscribe(t, openBridge(t, raw), spec)
		bridgetest.Publish(t, b, spec.Topic, "slow")
		var first *message.Message
		select {
		case first = <-ch:
		case first = <-other:
		case <-time.After(wait):
			t.Fatal("nothing delivered")
		}
		bridgetest.ExpectNothing(t, ch, 2500*time.Millisecond) // 2.5 × ack_deadline
		bridgetest.ExpectNothing(t, other, 100*time.Millisecond)
		first.Ack()
		bridgetest.ExpectNothing(t, ch, 1500*time.Millisecond)
		bridgetest.ExpectNothing(t, other, 100*time.Millisecond)
	})
	t.Run("CrashedConsumer", func(t *testing.T) {
		spec := bridge.Spec{Topic: bridgetest.Unique("crash"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
		dead, err := bridge.Open(context.Background(), raw)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := dead.Subscriber(context.Background(), spec)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := sub.Subscribe(context.Background(), spec.Topic)
		if err != nil {
			t.Fatal(err)
		}
		bridgetest.Publish(t, dead, spec.Topic, "held")
		held := bridgetest.Receive(t, ch, wait)
		_ = dead.Close() // the "process" dies holding the message
		held.Ack()       // after Close: must not be written or panic

		ch2, _ := bridgetest.Subscribe(t, openBridge(t, raw), spec)
		m := bridgetest.Receive(t, ch2, wait)
		m.Ack()
		if m.UUID != held.UUID {
			t.Fatalf("got %s, want the abandoned %s", m.UUID, held.UUID)
		}
	})
}

func TestPublisherCloseIsNoop(t *testing.T) {
	b := openBridge(t, schemaURL(t))
	spec := bridge.Spec{Topic: bridgetest.Unique("pubclose"), Group: "g", Kind: bridge.Command, Concurrency: 1}
	ch, _ := bridgetest.Subscribe(t, b, spec)
	if err := b.Publisher().Close(); err != nil {
		t.Fatal(err)
	}
	bridgetest.Publish(t, b, spec.Topic, "still")
	bridgetest.Receive(t, ch, wait).Ack()
	_ = b.Close()
	if err := b.Publisher().Publish(spec.Topic, message.NewMessage("x", nil)); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := b.Health(context.Background()); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("Health after Close: %v, want ErrClosed", err)
	}
	if _, err := b.Subscriber(context.Background(), spec); !errors.Is(err, bridge.ErrClosed) {
		t.Fatalf("Subscriber after Close: %v, want ErrClosed", err)
	}
}

func TestBadURL(t *testing.T) {
	base := baseURL(t)
	for _, c := range []struct {
		raw      string
		mentions []string
	}{
		{withParams(base, "poll_interval", "soon"), []string{"poll_interval"}},
		{withParams(base, "poll_interval", "0s"), []string{"poll_interval"}},
		{withParams(base, "ack_deadline", "-1s"), []string{"ack_deadline"}},
		{withParams(base, "nack_delay", "1s"), []string{"nack_delay", "not taken"}},          // removed: bridge.DefaultNackDelay
		{withParams(base, "connect_timeout", "5"), []string{"connect_timeout", "not taken"}}, // removed: Open's context, DialTimeout
		{withParams(base, "schema", `bad"name`), []string{"schema"}},
		{withParams(base, "schema", strings.Repeat("s", 64)), []string{"schema"}},
		{withParams(base, "sslmode", "sometimes"), []string{"sslmode"}}, // pgx's own parameter, invalid
		{withParams(base, "colour", "blue"), []string{"colour"}},        // unknown: sent to the server, which refuses it
		// Every problem at once.
		{withParams(base, "poll_interval", "soon", "ack_deadline", "1ms", "schema", "1x", "nack_delay", "1s"),
			[]string{"poll_interval", "ack_deadline", "schema", "nack_delay"}},
		{"postgres://[::1", nil},
	} {
		raw := c.raw
		start := time.Now()
		b, err := bridge.Open(context.Background(), raw)
		if err == nil {
			_ = b.Close()
			t.Errorf("Open(%s) succeeded", raw)
			continue
		}
		if !errors.Is(err, bridge.ErrBadURL) {
			t.Errorf("Open(%s): %v, want ErrBadURL", raw, err)
		}
		for _, m := range c.mentions {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("Open(%s): %v, want it to name %s", raw, err, m)
			}
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Open(%s) took %s", raw, d)
		}
		t.Logf("%s → %v", raw, err)
	}
}

func TestUnreachable(t *testing.T) {
	base, err := url.Parse(baseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	refused := *base
	refused.Host = "127.0.0.1:1"
	refused.User = url.UserPassword("postgres", "s3cret")
	wrongDB := *base
	wrongDB.Path = "/" + strings.ToLower(bridgetest.Unique("no_such_db"))
	wrongUser := *base
	wrongUser.User = url.User(strings.ToLower(bridgetest.Unique("nobody")))
	for _, c := range []struct {
		raw   string
		bound time.Duration // Open's context; 0: none (DialTimeout bounds it)
	}{
		{refused.String(), 0},
		{"postgres://postgres@10.255.255.1:5432/x?sslmode=disable", time.Second}, // black hole
		{"postgres://postgres@no-such-host.invalid:5432/x?sslmode=disable", 0},
		{wrongDB.String(), 0},
		{wrongUser.String(), 0},
	} {
		raw, limit := c.raw, postgres.DialTimeout+5*time.Second
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if c.bound > 0 {
			ctx, cancel = context.WithTimeout(ctx, c.bound)
			limit = c.bound + 2*time.Second
		}
		start := time.Now()
		b, err := bridge.Open(ctx, raw)
		cancel()
		if err == nil {
			_ = b.Close()
			t.Errorf("Open(%s) succeeded", raw)
			continue
		}
		if d := time.Since(start); d > limit {
			t.Errorf("Open(%s) took %s, want at most %s", raw, d, limit)
		}
		if !errors.Is(err, bridge.ErrUnreachable) {
			t.Errorf("Open(%s): %v, want ErrUnreachable", raw, err)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error leaks the password: %v", err)
		}
		if !strings.Contains(err.Error(), "postgres") {
			t.Errorf("error does not name the backend: %v", err)
		}
		t.Logf("%s → %v", bridge.Redact(raw), err)
	}
}

// The same subscriber set on Postgres under concurrent publishers: every
// command once, across members with several workers each.
func TestCompetingUnderLoad(t *testing.T) {
	raw := schemaURL(t)
	spec := bridge.Spec{Topic: bridgetest.Unique("load"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 4}
	var mu sync.Mutex
	seen := map[string]int{}
	for range 3 {
		ch, _ := bridgetest.Subscribe(t, openBridge(t, raw), spec)
		go func() {
			for m := range ch {
				mu.Lock()
				seen[string(m.Payload)]++
				mu.Unlock()
				m.Ack()
			}
		}()
	}
	pub := openBridge(t, raw)
	const n, publishers = 100, 4
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range n {
				m := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, "p%d-%d", p, i))
				if err := pub.Publisher().Publish(spec.Topic, m); err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(wait)
	for {
		mu.Lock()
		got := len(seen)
		mu.Unlock()
		if got == n*publishers {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d commands delivered", got, n*publishers)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for p, k := range seen {
		if k != 1 {
			t.Errorf("%s delivered %d times", p, k)
		}
	}
}

// BenchmarkRoundTrip measures publish → receive → ack on an idle group, from
// one bridge to another (as between two processes): the latency a command
// sees, dominated by NOTIFY wake-up and one claim round trip.
func BenchmarkRoundTrip(b *testing.B) {
	raw := schemaURL(b)
	pub, sub := openBridge(b, raw), openBridge(b, raw)
	spec := bridge.Spec{Topic: bridgetest.Unique("bench"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	ch, _ := bridgetest.Subscribe(b, sub, spec)
	for b.Loop() {
		if err := pub.Publisher().Publish(spec.Topic, message.NewMessage(watermill.NewUUID(), []byte("ping"))); err != nil {
			b.Fatal(err)
		}
		bridgetest.Receive(b, ch, wait).Ack()
	}
}

// With the fallback poll pushed out of reach, messages published after an
// outage can only arrive through the re-established LISTEN connection (and
// the wake-up that follows it); messages in flight during the outage are
// acked once the database is back (or, if a lease was lost with its
// connection, redelivered after the ack deadline).
func TestOutageListenerReconnects(t *testing.T) {
	raw := schemaURL(t, "poll_interval", "10m", "ack_deadline", "20s")
	b := openBridge(t, raw)
	spec := bridge.Spec{Topic: bridgetest.Unique("relisten"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 2}
	ch, _ := bridgetest.Subscribe(t, b, spec)
	var mu sync.Mutex
	seen := map[string]int{}
	count := func(prefix string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for p := range seen {
			if strings.HasPrefix(p, prefix) {
				n++
			}
		}
		return n
	}
	go func() {
		for m := range ch {
			time.Sleep(5 * time.Millisecond) // keep messages in flight across the cut
			mu.Lock()
			seen[string(m.Payload)]++
			mu.Unlock()
			m.Ack()
		}
	}()
	const n = 60
	for i := range n {
		bridgetest.Publish(t, b, spec.Topic, fmt.Sprintf("before-%d", i))
	}
	bridgetest.WaitFor(t, wait, "some messages before the outage", func() bool { return count("before-") >= 10 })

	restore := testenv.Outage(t, testenv.Postgres)
	bridgetest.WaitFor(t, wait, "Health to report the outage", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return b.Health(ctx) != nil
	})
	time.Sleep(2 * time.Second) // long enough for the reconnect backoff to grow
	restore()
	bridgetest.WaitFor(t, wait, "Health to recover", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return b.Health(ctx) == nil
	})
	// Let the subscription drain the backlog and go idle: from here on only
	// a wake-up from the listener can make it claim again.
	bridgetest.WaitFor(t, 2*wait, "every message published before the outage", func() bool { return count("before-") == n })
	time.Sleep(3 * time.Second) // acks that failed during the cut are retried with backoff up to 2 s
	for i := range n {
		m := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, "after-%d", i))
		deadline := time.Now().Add(wait)
		for {
			err := b.Publisher().Publish(spec.Topic, m)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("publish after the outage: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Well before the next-visible timer (armed by leases of the last claim,
	// at most ack_deadline away) could fire instead of a wake-up.
	bridgetest.WaitFor(t, 10*time.Second, "every message published after the outage", func() bool { return count("after-") == n })
}

// BenchmarkPublish measures one Publish (one message, one consumer group):
// a single INSERT … pg_notify statement and its commit.
func BenchmarkPublish(b *testing.B) {
	raw := schemaURL(b)
	pub := openBridge(b, raw)
	spec := bridge.Spec{Topic: bridgetest.Unique("benchpub"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	if _, err := pub.Subscriber(context.Background(), spec); err != nil { // registers the group
		b.Fatal(err)
	}
	for b.Loop() {
		if err := pub.Publisher().Publish(spec.Topic, message.NewMessage(watermill.NewUUID(), []byte("ping"))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkThroughput publishes b.N messages from 4 goroutines to a group of
// two members with 8 workers each and waits until all are acked; ns/op is
// the cost per message end to end.
func BenchmarkThroughput(b *testing.B) {
	raw := schemaURL(b)
	pub := openBridge(b, raw)
	spec := bridge.Spec{Topic: bridgetest.Unique("benchtp"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 8}
	var mu sync.Mutex
	got := 0
	for range 2 {
		ch, _ := bridgetest.Subscribe(b, openBridge(b, raw), spec)
		go func() {
			for m := range ch {
				m.Ack()
				mu.Lock()
				got++
				mu.Unlock()
			}
		}()
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/4 + 1
	for range 4 {
		wg.Go(func() {
			for range per {
				if err := pub.Publisher().Publish(spec.Topic, message.NewMessage(watermill.NewUUID(), []byte("x"))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	bridgetest.WaitFor(b, time.Minute, "every message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got >= 4*per
	})
}
