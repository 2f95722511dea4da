package amqp

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

// slowLink forwards TCP connections to the broker and holds every chunk
// the broker sends for delay before passing it on: each round trip to the
// broker takes at least delay, whatever the machine's load.
func slowLink(t *testing.T, upstream string, delay time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	type chunk struct {
		at   time.Time
		data []byte
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				_ = c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			q := make(chan chunk, 4096)
			wg.Add(3)
			go func() { defer wg.Done(); _, _ = io.Copy(u, c); _ = u.Close(); _ = c.Close() }()
			go func() {
				defer wg.Done()
				defer close(q)
				for {
					buf := make([]byte, 64<<10)
					n, err := u.Read(buf)
					if n > 0 {
						q <- chunk{time.Now().Add(delay), buf[:n]}
					}
					if err != nil {
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				for ch := range q {
					time.Sleep(time.Until(ch.at))
					if _, err := c.Write(ch.data); err != nil {
						_ = u.Close()
						_ = c.Close()
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// TestConfirmsArePipelined: publishes share a channel's confirm stream
// instead of waiting for each confirm in turn. Over a link where every
// round trip takes 50 ms, with a pool of one channel, 64 concurrent
// publishes and one publish of 64 messages each take a few round trips;
// waiting for each confirm in turn took 64 (3.2 s). Every message is still
// confirmed (it is in the queue when Publish returns), and an unroutable
// message among routable ones on the same channel still fails with
// bridge.ErrNoSubscriber while the others succeed.
func TestConfirmsArePipelined(t *testing.T) {
	const delay = 50 * time.Millisecond
	const n = 64
	limit := 20 * delay // 1 s; one confirm at a time needs n×delay = 3.2 s
	u, err := url.Parse(testenv.URL(t, testenv.AMQP))
	if err != nil {
		t.Fatal(err)
	}
	u.Host = slowLink(t, u.Host, delay)
	q := u.Query()
	q.Set("queue_expires", "10m")
	q.Set("publish_channels", "1")
	u.RawQuery = q.Encode()
	bb, err := bridge.Open(t.Context(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	b := bb.(*Bridge)

	spec := bridge.Spec{Topic: "pipelined_" + watermill.NewShortUUID(), Group: "svc.v1", Kind: bridge.Event, Concurrency: 1}
	sub, err := b.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	if _, err := sub.Subscribe(ctx, spec.Topic); err != nil { // declares the group's queue
		t.Fatal(err)
	}
	cancel()
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	pub := b.Publisher()
	if err := pub.Publish(spec.Topic, message.NewMessage(watermill.NewUUID(), []byte("warm-up"))); err != nil {
		t.Fatal(err)
	}

	// n concurrent publishes, one in four to a topic nobody consumes.
	start := time.Now()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			topic := spec.Topic
			if i%4 == 3 {
				topic = "nobody_" + watermill.NewShortUUID()
			}
			errs[i] = pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i))))
		})
	}
	wg.Wait()
	concurrent := time.Since(start)
	for i, err := range errs {
		if i%4 == 3 {
			if !errors.Is(err, bridge.ErrNoSubscriber) {
				t.Errorf("publish %d to a topic nobody consumes: %v, want ErrNoSubscriber", i, err)
			}
		} else if err != nil {
			t.Errorf("publish %d: %v", i, err)
		}
	}

	// One publish of n messages.
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte("batch "+strconv.Itoa(i)))
	}
	start = time.Now()
	if err := pub.Publish(spec.Topic, msgs...); err != nil {
		t.Fatal(err)
	}
	batch := time.Since(start)
	t.Logf("round trip ≥ %s: %d concurrent publishes in %s, one publish of %d messages in %s", delay, n, concurrent, n, batch)
	if concurrent > limit {
		t.Errorf("%d concurrent publishes on one channel took %s, want at most %s: confirms are awaited one at a time", n, concurrent, limit)
	}
	if batch > limit {
		t.Errorf("one publish of %d messages took %s, want at most %s: confirms are awaited one at a time", n, batch, limit)
	}

	// Every confirmed message is in the group's queue: 1 + 48 + 64.
	a, _ := b.pub.current()
	ch, err := a.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	qi, err := ch.QueueDeclarePassive("svc.v1@"+spec.Topic, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + n*3/4 + n; qi.Messages != want {
		t.Errorf("the group's queue holds %d messages, want %d (every confirmed one)", qi.Messages, want)
	}
}

// TestPrefetchIsSizedToConcurrency: a subscription consumes on one
// channel (one consumer on the queue, not one per worker) whose prefetch is
// Concurrency + prefetch (default 16), read from the broker: with handlers
// holding their messages, the queue keeps the rest ready. The handlers get Concurrency messages, no more; when the
// subscriber closes, what was prefetched for them goes back to the queue at
// once, while the handlers still hold theirs.
func TestPrefetchIsSizedToConcurrency(t *testing.T) {
	const concurrency, total = 3, 30
	const want = concurrency + DefaultPrefetch
	u, err := url.Parse(testenv.URL(t, testenv.AMQP))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("queue_expires", "10m")
	u.RawQuery = q.Encode()
	bb, err := bridge.Open(t.Context(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	b := bb.(*Bridge)
	spec := bridge.Spec{Topic: "prefetch_" + watermill.NewShortUUID(), Group: "svc.v1", Kind: bridge.Command, Concurrency: concurrency}
	sub, err := b.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := sub.Subscribe(t.Context(), spec.Topic)
	if err != nil {
		t.Fatal(err)
	}
	batch := make([]*message.Message, total)
	for i := range batch {
		batch[i] = message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
	}
	if err := b.Publisher().Publish(spec.Topic, batch...); err != nil {
		t.Fatal(err)
	}

	a, _ := b.pub.current()
	ch, err := a.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	queue := func() amqp091.Queue {
		qi, err := ch.QueueDeclarePassive(spec.Group+"@"+spec.Topic, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return qi
	}
	ready := func() int { return queue().Messages }
	waitReady := func(n int, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for got := ready(); got != n; got = ready() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d messages ready in the queue, want %d", what, got, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	var held []*message.Message
	for range concurrency {
		select {
		case m := <-msgs:
			held = append(held, m)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d messages delivered, want %d", len(held), concurrency)
		}
	}
	waitReady(total-want, "handlers holding their messages")
	if n := queue().Consumers; n != 1 {
		t.Errorf("%d consumers on the group's queue, want 1 (one channel per subscription)", n)
	}
	select {
	case m := <-msgs:
		t.Fatalf("message %s delivered while %d handlers hold theirs: more than Concurrency in flight", m.UUID, concurrency)
	case <-time.After(200 * time.Millisecond):
	}

	closed := make(chan error, 1)
	go func() { closed <- sub.Close() }()
	waitReady(total-concurrency, "closing, handlers still holding theirs")
	for _, m := range held {
		m.Ack()
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the verdicts")
	}
	waitReady(total-concurrency, "closed")
}
