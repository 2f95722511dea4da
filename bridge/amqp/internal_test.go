package amqp

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

func TestMarshalerNeverFails(t *testing.T) {
	m := marshaler{}
	// No headers at all: watermill's own Unmarshal would panic (make with -1).
	got, err := m.Unmarshal(amqp091.Delivery{MessageId: "id-1", Body: []byte("x")})
	if err != nil || got.UUID != "id-1" || got.Metadata.Get(bridge.DeliveryKey) != "1" {
		t.Fatalf("Unmarshal without headers: %v, %v", got, err)
	}
	// What the broker adds when it dead-letters, a count of deliveries
	// before a move to a delay queue, a foreign int header, a requeue.
	d := amqp091.Delivery{Redelivered: true, Headers: amqp091.Table{
		wamqp.DefaultMessageUUIDHeaderKey: "u-1",
		"x-death": []any{
			amqp091.Table{"queue": "g@t", "reason": "rejected", "count": int64(3)},
			amqp091.Table{"queue": "g@t@retry", "reason": "expired", "count": int64(3)},
		},
		"x-first-death-queue":  "g@t",
		"x-first-death-reason": "rejected",
		headerDeliveries:       "5",
		bridge.NackDelayKey:    "1s",
		"priority":             int32(5),
		"correlation_id":       "c",
	}}
	got, err = m.Unmarshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := message.Metadata{bridge.DeliveryKey: "10", wamqp.MetadataRedeliveredKey: "true", "priority": "5", "correlation_id": "c"}
	if got.UUID != "u-1" || len(got.Metadata) != len(want) {
		t.Fatalf("got %s %v, want u-1 %v", got.UUID, got.Metadata, want)
	}
	for k, v := range want {
		if got.Metadata.Get(k) != v {
			t.Errorf("metadata %s = %q, want %q", k, got.Metadata.Get(k), v)
		}
	}
	// Per-delivery metadata copied into a new message is not sent on.
	out := message.NewMessage("u-2", nil)
	out.Metadata.Set(bridge.DeliveryKey, "3")
	out.Metadata.Set(bridge.NackDelayKey, "1s")
	out.Metadata.Set("kept", "yes")
	p, err := m.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Headers[bridge.DeliveryKey]; ok || p.Headers[bridge.NackDelayKey] != nil || p.Headers["kept"] != "yes" ||
		p.MessageId != "u-2" || p.DeliveryMode != amqp091.Persistent {
		t.Fatalf("Marshal: %+v", p)
	}
	// A delayed copy keeps the message and records the deliveries so far.
	c := delayedCopy(d, 10, true)
	if c.Headers[headerDeliveries] != "10" || c.Headers["x-death"] != nil || c.Headers[wamqp.DefaultMessageUUIDHeaderKey] != "u-1" || c.DeliveryMode != amqp091.Persistent {
		t.Fatalf("delayedCopy: %+v", c)
	}
}

func TestRoundDelay(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{
		0:                             time.Millisecond,
		time.Microsecond:              time.Millisecond,
		time.Millisecond:              time.Millisecond,
		7 * time.Millisecond:          7 * time.Millisecond,
		11 * time.Millisecond:         12 * time.Millisecond,
		400 * time.Millisecond:        400 * time.Millisecond,
		401 * time.Millisecond:        500 * time.Millisecond,
		1100 * time.Millisecond:       1200 * time.Millisecond,
		1501 * time.Millisecond:       1700 * time.Millisecond,
		45 * time.Second:              50 * time.Second,
		61 * time.Second:              70 * time.Second,
		100 * time.Hour:               maxDelay,
		maxDelay - time.Second:        maxDelay,
		3*time.Hour + time.Nanosecond: 200 * time.Minute,
	} {
		got := roundDelay(in)
		if got != want {
			t.Errorf("roundDelay(%s) = %s, want %s", in, got, want)
		}
		if got < in && in <= maxDelay {
			t.Errorf("roundDelay(%s) = %s is earlier", in, got)
		}
		if in > 10*time.Millisecond && in < maxDelay && float64(got) > 1.25*float64(in) {
			t.Errorf("roundDelay(%s) = %s is more than 25 %% later", in, got)
		}
	}
}

// proxy forwards TCP connections to the broker and can cut them all at
// once: a network failure as the client sees it (amqp091 gets EOF and
// reports a connection error), without stopping the broker other tests use.
type proxy struct {
	l        net.Listener
	upstream string
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func newProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, upstream: upstream, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { _ = l.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go func() { _, _ = io.Copy(u, c); _ = u.Close(); _ = c.Close() }()
		go func() { _, _ = io.Copy(c, u); _ = u.Close(); _ = c.Close() }()
	}
}

// cut closes every proxied connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// Connections dropped (network failure) while 8 goroutines publish without
// pause: publishes fail with ErrUnreachable while the connection is down,
// never block, never lose the pool, and both publishing and consuming work
// after every drop. Cheaper than a broker restart, so it runs several.
func TestConnectionDropsUnderLoad(t *testing.T) {
	raw := testenv.URL(t, testenv.AMQP)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	px := newProxy(t, u.Host)
	u.Host = px.l.Addr().String()
	q := u.Query()
	q.Set("queue_expires", "10m")
	q.Set("publish_channels", "2")
	q.Set("reconnect_max", "200ms")
	u.RawQuery = q.Encode()
	bb, err := bridge.Open(t.Context(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	b := bb.(*Bridge)
	spec := bridge.Spec{Topic: "drops_" + watermill.NewShortUUID(), Group: "svc.v1", Kind: bridge.Command, Concurrency: 4}
	sub, err := b.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(context.Background(), spec.Topic)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	go func() {
		for m := range ch {
			mu.Lock()
			seen[string(m.Payload)] = true
			mu.Unlock()
			m.Ack()
		}
	}()

	var stop atomic.Bool
	var ok, unreachable, other atomic.Int64
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				err := b.Publisher().Publish(spec.Topic, message.NewMessage(watermill.NewUUID(), []byte("load")))
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, bridge.ErrUnreachable):
					unreachable.Add(1)
				default:
					other.Add(1)
				}
				if err != nil {
					time.Sleep(time.Duration(i) * time.Millisecond)
				}
			}
		}()
	}
	// Cut every connection 15 times, sometimes before the previous
	// reconnect is complete, sometimes after.
	for i := range 15 {
		time.Sleep(time.Duration(50+100*(i%4)) * time.Millisecond)
		px.cut()
	}
	time.Sleep(300 * time.Millisecond)
	stop.Store(true)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("publishers blocked: the channel pool was exhausted")
	}
	t.Logf("under load: %d publishes confirmed, %d failed as unreachable, %d failed otherwise", ok.Load(), unreachable.Load(), other.Load())

	deadline := time.Now().Add(30 * time.Second)
	for {
		err := b.Publisher().Publish(spec.Topic, message.NewMessage(watermill.NewUUID(), []byte("final")))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish after the drops: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got := seen["final"]
		mu.Unlock()
		if got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the subscription did not resume after the drops")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := b.Health(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestCoalesceOnlyTheRunOfHeldTags(t *testing.T) {
	c := &consumer{held: map[uint64]struct{}{}}
	for tag := uint64(1); tag <= 6; tag++ {
		c.held[tag] = struct{}{}
	}
	for _, tc := range []struct {
		tags []uint64
		want bool
	}{
		{[]uint64{1, 2, 3}, true},
		{[]uint64{3, 1, 2}, true}, // verdicts out of order
		{[]uint64{2, 3}, false},   // 1 is still held: a multiple ack would settle it
		{[]uint64{1, 3}, false},
		{[]uint64{1}, false}, // one tag: a plain ack
		{[]uint64{1, 2, 3, 4, 5, 6}, true},
	} {
		if got := c.coalesce(tc.tags); got != tc.want {
			t.Errorf("coalesce(%v) with 1..6 held = %v, want %v", tc.tags, got, tc.want)
		}
	}
	c.settled(1, 2)
	if !c.coalesce([]uint64{4, 3}) || c.coalesce([]uint64{4, 5}) {
		t.Error("after 1 and 2 settled, {3,4} is the run and {4,5} is not")
	}
}

// Handlers holding Concurrency messages settle them in a shuffled order,
// nacking some: acks go out in batches, some as multiple acks, and none may
// settle a nacked message or one still held. Every nacked message comes
// back once, nothing else does.
func TestMultipleAckSettlesOnlyItsRun(t *testing.T) {
	const concurrency, total = 8, 80
	u, err := url.Parse(testenv.URL(t, testenv.AMQP))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("queue_expires", "10m")
	u.RawQuery = q.Encode()
	b, err := bridge.Open(t.Context(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	spec := bridge.Spec{Topic: "multi_" + watermill.NewShortUUID(), Group: "svc.v1", Kind: bridge.Command, Concurrency: concurrency}
	sub, err := b.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(t.Context(), spec.Topic)
	if err != nil {
		t.Fatal(err)
	}
	batch := make([]*message.Message, total)
	for i := range batch {
		batch[i] = message.NewMessage(watermill.NewUUID(), []byte{byte(i)})
	}
	if err := b.Publisher().Publish(spec.Topic, batch...); err != nil {
		t.Fatal(err)
	}
	deliveries := map[byte]int{}
	acked := 0
	deadline := time.After(30 * time.Second)
	for acked < total {
		var held []*message.Message
		wait := 10 * time.Second
	collect:
		for len(held) < concurrency {
			select {
			case m := <-msgs:
				held = append(held, m)
				wait = 200 * time.Millisecond
			case <-time.After(wait):
				break collect
			case <-deadline:
				t.Fatalf("%d of %d messages acked", acked, total)
			}
		}
		if len(held) == 0 {
			t.Fatalf("%d of %d messages acked, nothing more delivered", acked, total)
		}
		rand.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
		for _, m := range held {
			i := m.Payload[0]
			deliveries[i]++
			if i%5 == 0 && deliveries[i] == 1 {
				m.Metadata.Set(bridge.NackDelayKey, "10ms")
				m.Nack()
				continue
			}
			m.Ack()
			acked++
		}
	}
	select {
	case m := <-msgs:
		t.Fatalf("message %d delivered again after every message was acked", m.Payload[0])
	case <-time.After(500 * time.Millisecond):
	}
	for i := range byte(total) {
		want := 1
		if i%5 == 0 {
			want = 2
		}
		if deliveries[i] != want {
			t.Errorf("message %d delivered %d times, want %d", i, deliveries[i], want)
		}
	}
}
