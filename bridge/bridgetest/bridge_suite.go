package bridgetest

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
)

// Harness tells the suite how to reach one backend.
type Harness struct {
	// URL opens the backend (bridge.Open), once per connection the suite
	// needs, as another process would. The suite closes what it opens.
	URL string
	// Open, when set, is used instead of URL to open a connection.
	Open func(t *testing.T) bridge.Bridge
	// Outage, when set, takes the backend away (stops the broker, or kills
	// every connection) and returns a function that brings it back. Backends
	// without one do not run the outage tests; every durable backend must
	// provide it.
	Outage func(t *testing.T) (restore func())
	// Wait bounds every wait for a delivery; zero means 20 s.
	Wait time.Duration
	// DeadConsumerDelay is how long a message held by a consumer whose
	// process died takes to be delivered again: the ack wait or ack
	// deadline the URL sets (NATS ack_wait, PostgreSQL ack_deadline). Zero:
	// at once, as when the broker requeues on the closed connection
	// (RabbitMQ). KilledConsumerLosesNothing waits WaitLimit plus this.
	DeadConsumerDelay time.Duration
}

// WaitLimit is how long a suite waits for one delivery: Wait, or 20 s.
func (h Harness) WaitLimit() time.Duration {
	if h.Wait > 0 {
		return h.Wait
	}
	return 20 * time.Second
}

// Unique returns a name no earlier test run used, for topics and groups on
// durable backends.
func Unique(prefix string) string {
	return prefix + "_" + watermill.NewShortUUID()[:10]
}

// Connect opens one connection to the backend (Open, or bridge.Open of
// URL), closed when the test ends.
func (h Harness) Connect(t *testing.T) bridge.Bridge {
	t.Helper()
	var b bridge.Bridge
	if h.Open != nil {
		b = h.Open(t)
	} else {
		var err error
		if b, err = bridge.Open(t.Context(), h.URL); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// Subscribe subscribes to spec on b; the subscriber is closed when the test
// ends.
func Subscribe(t testing.TB, b bridge.Bridge, spec bridge.Spec) (<-chan *message.Message, message.Subscriber) {
	t.Helper()
	sub, err := b.Subscriber(context.Background(), spec)
	if err != nil {
		t.Fatalf("Subscriber(%+v): %v", spec, err)
	}
	ch, err := sub.Subscribe(context.Background(), spec.Topic)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", spec.Topic, err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return ch, sub
}

// Publish publishes one message per payload to topic on b.
func Publish(t testing.TB, b bridge.Bridge, topic string, payloads ...string) {
	t.Helper()
	for _, p := range payloads {
		if err := b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(p))); err != nil {
			t.Fatalf("Publish(%q, %q): %v", topic, p, err)
		}
	}
}

func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// counter collects payloads from several channels, acking each.
type counter struct {
	mu    sync.Mutex
	seen  map[string]int
	by    map[string]map[string]int // consumer → payload → count
	first map[string]string         // payload → bridge.DeliveryKey of its first delivery
}

func newCounter() *counter {
	return &counter{seen: map[string]int{}, by: map[string]map[string]int{}, first: map[string]string{}}
}

func (c *counter) consume(name string, ch <-chan *message.Message) {
	go func() {
		for m := range ch {
			c.mu.Lock()
			if c.seen[string(m.Payload)] == 0 {
				c.first[string(m.Payload)] = m.Metadata.Get(bridge.DeliveryKey)
			}
			c.seen[string(m.Payload)]++
			if c.by[name] == nil {
				c.by[name] = map[string]int{}
			}
			c.by[name][string(m.Payload)]++
			c.mu.Unlock()
			m.Ack()
		}
	}()
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.seen {
		n += v
	}
	return n
}

// WaitFor polls cond until it holds, failing the test after d.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Run runs the bridge-level conformance suite on one backend, each case of
// the package documentation a named subtest.
func Run(t *testing.T, h Harness) {
	for _, c := range cases {
		if c.outage && h.Outage == nil {
			continue
		}
		t.Run(c.name, func(t *testing.T) { c.run(t, h) })
	}
}

// bridgeCase is one named case of the suite.
type bridgeCase struct {
	name   string
	outage bool // runs only when the Harness has an Outage
	run    func(t *testing.T, h Harness)
}

// cases are Run's cases, in order; the package documentation lists their
// names (TestDocListsTheCases keeps the two the same).
var cases = []bridgeCase{
	{name: "Health", run: func(t *testing.T, h Harness) {
		b := h.Connect(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Health(ctx); err != nil {
			t.Fatalf("Health on a fresh bridge: %v", err)
		}
		if b.Name() == "" {
			t.Fatal("Name() is empty")
		}
		_ = b.Close()
		if err := b.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}},
	{name: "InvalidSpec", run: func(t *testing.T, h Harness) {
		b := h.Connect(t)
		if _, err := b.Subscriber(context.Background(), bridge.Spec{}); err == nil {
			t.Fatal("Subscriber accepted an empty spec")
		}
		noWorkers := bridge.Spec{Topic: Unique("spec"), Group: "svc.v1", Kind: bridge.Command}
		if sub, err := b.Subscriber(context.Background(), noWorkers); err == nil {
			_ = sub.Close()
			t.Fatal("Subscriber accepted Concurrency 0")
		}
	}},
	{name: "CompetingConsumers", run: testCompeting},
	{name: "EventFanOut", run: testFanOut},
	{name: "ReplyGoesToItsOwner", run: testReply},
	{name: "RedeliveryAfterNack", run: testNack},
	{name: "Concurrency", run: testConcurrency},
	{name: "CloseWithUnackedLosesNothing", run: testCloseUnacked},
	{name: "CloseEndsTheSubscription", run: testCloseEnds},
	{name: "CloseLeavesNoGoroutine", run: testCloseLeavesNothing},
	{name: "KilledConsumerLosesNothing", run: testKilledConsumer},
	{name: "OutageMidStream", outage: true, run: testOutage},
}

func testCompeting(t *testing.T, h Harness) {
	b1, b2 := h.Connect(t), h.Connect(t)
	spec := bridge.Spec{Topic: Unique("cmp"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	c := newCounter()
	ch1, _ := Subscribe(t, b1, spec)
	ch2, _ := Subscribe(t, b2, spec)
	c.consume("a", ch1)
	c.consume("b", ch2)
	const n = 40
	Publish(t, b1, spec.Topic, numbered("m", n)...)
	WaitFor(t, h.WaitLimit(), fmt.Sprintf("%d commands", n), func() bool { return c.total() >= n })
	time.Sleep(200 * time.Millisecond) // let a duplicate show up if there is one
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, k := range c.seen {
		if k != 1 {
			t.Errorf("command %s handled %d times, want once", p, k)
		}
	}
	if len(c.seen) != n {
		t.Errorf("%d distinct commands handled, want %d", len(c.seen), n)
	}
}

func testFanOut(t *testing.T, h Harness) {
	b1, b2, b3 := h.Connect(t), h.Connect(t), h.Connect(t)
	topic := Unique("evt")
	// group A has two competing instances, group B one.
	chA1, _ := Subscribe(t, b1, bridge.Spec{Topic: topic, Group: "a.v1", Kind: bridge.Event, Concurrency: 1})
	chA2, _ := Subscribe(t, b2, bridge.Spec{Topic: topic, Group: "a.v1", Kind: bridge.Event, Concurrency: 1})
	chB, _ := Subscribe(t, b3, bridge.Spec{Topic: topic, Group: "b.v1", Kind: bridge.Event, Concurrency: 1})
	ca, cb := newCounter(), newCounter()
	ca.consume("a1", chA1)
	ca.consume("a2", chA2)
	cb.consume("b", chB)
	const n = 30
	Publish(t, b1, topic, numbered("e", n)...)
	WaitFor(t, h.WaitLimit(), "both groups to get every event", func() bool { return ca.total() >= n && cb.total() >= n })
	time.Sleep(200 * time.Millisecond)
	for name, cc := range map[string]*counter{"a": ca, "b": cb} {
		cc.mu.Lock()
		if len(cc.seen) != n {
			t.Errorf("group %s got %d distinct events, want %d", name, len(cc.seen), n)
		}
		for p, k := range cc.seen {
			if k != 1 {
				t.Errorf("group %s got %s %d times, want once", name, p, k)
			}
		}
		cc.mu.Unlock()
	}
}

func testReply(t *testing.T, h Harness) {
	b1, b2 := h.Connect(t), h.Connect(t)
	t1, t2 := Unique("reply"), Unique("reply")
	ch1, _ := Subscribe(t, b1, bridge.Spec{Topic: t1, Group: "inst1", Kind: bridge.Reply, Concurrency: 1})
	ch2, _ := Subscribe(t, b2, bridge.Spec{Topic: t2, Group: "inst2", Kind: bridge.Reply, Concurrency: 1})
	c1, c2 := newCounter(), newCounter()
	c1.consume("1", ch1)
	c2.consume("2", ch2)
	Publish(t, b2, t1, "for-1")
	Publish(t, b1, t2, "for-2a", "for-2b")
	WaitFor(t, h.WaitLimit(), "replies", func() bool { return c1.total() == 1 && c2.total() == 2 })
	time.Sleep(100 * time.Millisecond)
	if c1.seen["for-1"] != 1 || c1.total() != 1 {
		t.Errorf("instance 1 got %v, want only for-1", c1.seen)
	}
	if c2.seen["for-2a"] != 1 || c2.seen["for-2b"] != 1 || c2.total() != 2 {
		t.Errorf("instance 2 got %v, want for-2a and for-2b", c2.seen)
	}
}

func testNack(t *testing.T, h Harness) {
	b := h.Connect(t)
	caps := b.Capabilities()
	spec := bridge.Spec{Topic: Unique("nack"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	ch, _ := Subscribe(t, b, spec)
	Publish(t, b, spec.Topic, "x")
	first := receive(t, h, ch)
	const delay = 400 * time.Millisecond
	first.Metadata.Set(bridge.NackDelayKey, delay.String())
	nacked := time.Now()
	first.Nack()
	second := receive(t, h, ch)
	second.Ack()
	if string(second.Payload) != "x" || second.UUID != first.UUID {
		t.Fatalf("redelivered %q (uuid %s), want x (uuid %s)", second.Payload, second.UUID, first.UUID)
	}
	if caps.CountsDeliveries {
		if d1, d2 := first.Metadata.Get(bridge.DeliveryKey), second.Metadata.Get(bridge.DeliveryKey); d1 != "1" || d2 != "2" {
			t.Errorf("delivery counts %q then %q, want 1 then 2", d1, d2)
		}
	}
	if caps.NackDelay {
		if waited := time.Since(nacked); waited < delay-50*time.Millisecond {
			t.Errorf("redelivered after %s, asked for %s", waited, delay)
		}
	}
}

func receive(t *testing.T, h Harness, ch <-chan *message.Message) *message.Message {
	t.Helper()
	return Receive(t, ch, h.WaitLimit())
}

// Receive returns the next message from ch, failing the test if none comes
// within d or the channel closes.
func Receive(t testing.TB, ch <-chan *message.Message, within time.Duration) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription channel closed")
		}
		return m
	case <-time.After(within):
		t.Fatal("no message within", within)
		return nil
	}
}

// ExpectNothing fails the test if a message arrives on ch within d.
func ExpectNothing(t testing.TB, ch <-chan *message.Message, d time.Duration) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("unexpected message %q", m.Payload)
	case <-time.After(d):
	}
}

func testConcurrency(t *testing.T, h Harness) {
	b := h.Connect(t)
	const workers = 4
	spec := bridge.Spec{Topic: Unique("conc"), Group: "svc.v1", Kind: bridge.Command, Concurrency: workers}
	ch, _ := Subscribe(t, b, spec)
	Publish(t, b, spec.Topic, numbered("c", workers)...)
	held := make([]*message.Message, 0, workers)
	for range workers {
		held = append(held, receive(t, h, ch)) // none acked yet
	}
	for _, m := range held {
		m.Ack()
	}
}

func testCloseUnacked(t *testing.T, h Harness) {
	b := h.Connect(t)
	spec := bridge.Spec{Topic: Unique("close"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	ch, sub := Subscribe(t, b, spec)
	Publish(t, b, spec.Topic, "inflight")
	m := receive(t, h, ch)
	var ch2 <-chan *message.Message
	if !b.Capabilities().GroupOutlivesMembers { // the next member must be there already
		ch2, _ = Subscribe(t, h.Connect(t), spec)
	}
	closed := make(chan struct{})
	go func() { _ = sub.Close(); close(closed) }()
	time.Sleep(100 * time.Millisecond)
	m.Nack() // the handler failed while the subscriber was closing
	select {
	case <-closed:
	case <-time.After(h.WaitLimit()):
		t.Fatal("Close did not return after the in-flight message was nacked")
	}
	if ch2 == nil {
		ch2, _ = Subscribe(t, h.Connect(t), spec)
	}
	again := receive(t, h, ch2)
	again.Ack()
	if string(again.Payload) != "inflight" {
		t.Fatalf("got %q, want the nacked message back", again.Payload)
	}
}

// When a subscriber's Close returns, the channel of its subscription is
// closed already: nothing of the subscription runs on.
func testCloseEnds(t *testing.T, h Harness) {
	b := h.Connect(t)
	spec := bridge.Spec{Topic: Unique("ends"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 2}
	for round := range 8 {
		ch, sub := Subscribe(t, b, spec)
		if round == 0 {
			Publish(t, b, spec.Topic, "x")
			receive(t, h, ch).Ack()
		}
		if err := sub.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
		select {
		case m, ok := <-ch:
			if ok {
				m.Ack()
				t.Fatalf("round %d: a message delivered after Close returned", round)
			}
		default:
			t.Fatalf("round %d: the channel is still open after Close returned", round)
		}
	}
}

// When a bridge's Close returns, no goroutine runs the backend's code any
// more: neither a subscription's, nor a health probe still in flight
// (Health returned, its context having ended first), nor a connection
// watcher's.
func testCloseLeavesNothing(t *testing.T, h Harness) {
	for round := range 5 {
		b := h.Connect(t)
		pkg := reflect.TypeOf(b).Elem().PkgPath() + "."
		spec := bridge.Spec{Topic: Unique("leaves"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 2}
		ch, sub := Subscribe(t, b, spec)
		Publish(t, b, spec.Topic, "x")
		receive(t, h, ch).Ack()
		if err := sub.Close(); err != nil {
			t.Fatalf("round %d: subscriber Close: %v", round, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		_ = b.Health(ctx) // returns at once; the probe may go on
		cancel()
		if err := b.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
		if left := GoroutinesIn(pkg); len(left) > 0 {
			t.Fatalf("round %d: goroutines of %s left after Close:\n%s", round, strings.TrimSuffix(pkg, "."), strings.Join(left, "\n\n"))
		}
	}
}

// GoroutinesIn returns the stacks of the goroutines that are in code whose
// name starts with prefix right now, without waiting for any to end. Not
// counted: a goroutine that only was created there, and one whose frame
// there is at a closing brace (it has returned and runs its deferred
// calls, such as the WaitGroup.Done that let Close return).
func GoroutinesIn(prefix string) []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var found []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		lines := strings.Split(g, "\n")
		for i, line := range lines {
			if strings.HasPrefix(line, "created by ") {
				break
			}
			if strings.HasPrefix(line, prefix) && i+1 < len(lines) {
				if !returning(lines[i+1]) {
					found = append(found, g)
				}
				break
			}
		}
	}
	return found
}

// returning reports whether a stack trace's location line ("\tfile:line
// +0x…") points at a line of source that only closes a block.
func returning(location string) bool {
	loc, _, _ := strings.Cut(strings.TrimSpace(location), " ")
	i := strings.LastIndexByte(loc, ':')
	if i < 0 {
		return false
	}
	n, err := strconv.Atoi(loc[i+1:])
	if err != nil {
		return false
	}
	src, err := os.ReadFile(loc[:i])
	if err != nil {
		return false
	}
	lines := strings.Split(string(src), "\n")
	if n < 1 || n > len(lines) {
		return false
	}
	l := strings.TrimSpace(lines[n-1])
	return l == "}" || l == "}()"
}

func testOutage(t *testing.T, h Harness) {
	b := h.Connect(t)
	spec := bridge.Spec{Topic: Unique("outage"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	ch, _ := Subscribe(t, b, spec)
	c := newCounter()
	c.consume("x", ch)
	const half = 50
	Publish(t, b, spec.Topic, numbered("before", half)...)
	WaitFor(t, h.WaitLimit(), "messages before the outage", func() bool { return c.total() >= half })

	restore := h.Outage(t)
	ctx, cancel := context.WithTimeout(context.Background(), h.WaitLimit())
	WaitFor(t, h.WaitLimit(), "Health to report the outage", func() bool { return b.Health(ctx) != nil })
	cancel()
	restore()
	WaitFor(t, 2*h.WaitLimit(), "Health to recover", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return b.Health(ctx) == nil
	})
	after := numbered("after", half)
	deadline := time.Now().Add(2 * h.WaitLimit())
	for _, p := range after { // a publish right after a reconnect may still fail once
		for {
			err := b.Publisher().Publish(spec.Topic, message.NewMessage(watermill.NewUUID(), []byte(p)))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("publish after the outage: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	WaitFor(t, 2*h.WaitLimit(), "every message after the outage", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, p := range after {
			if c.seen[p] == 0 {
				return false
			}
		}
		return true
	})
}
