package postgres_test

import (
	"context"
	"errors"
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
)

// statements records the SQL of every statement sent by a bridge's pool.
type statements struct {
	mu   sync.Mutex
	sqls []string
	slow func(sql string) // if set, runs before each statement is sent
}

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	s.sqls = append(s.sqls, d.SQL)
	slow := s.slow
	s.mu.Unlock()
	if slow != nil {
		slow(d.SQL)
	}
	return ctx
}

func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// take returns the statements recorded since the last take.
func (s *statements) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sqls
	s.sqls = nil
	return out
}

func count(sqls []string, substr string) int {
	n := 0
	for _, q := range sqls {
		if strings.Contains(q, substr) {
			n++
		}
	}
	return n
}

func openTraced(t *testing.T) (*postgres.Bridge, *statements) {
	t.Helper()
	st := &statements{}
	b, err := postgres.OpenTraced(context.Background(), schemaURL(t), st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, st
}

// One Publish of many messages to a topic of several groups is a single
// statement: one INSERT for every message and group, no BEGIN or COMMIT.
func TestPublishIsOneStatement(t *testing.T) {
	b, st := openTraced(t)
	topic := bridgetest.Unique("event.batch")
	for _, g := range []string{"a", "b", "c"} {
		if _, err := b.Subscriber(context.Background(), bridge.Spec{Topic: topic, Group: g, Kind: bridge.Event, Concurrency: 1}); err != nil {
			t.Fatal(err)
		}
	}
	msgs := make([]*message.Message, 50)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte("x"))
	}
	st.take()
	if err := b.Publisher().Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
	if got := st.take(); len(got) != 1 || count(got, "INSERT INTO") != 1 {
		t.Fatalf("Publish of %d messages sent %d statements, want one INSERT: %q", len(msgs), len(got), got)
	}
}

// A batch of n waiting rows is claimed in one statement, and acks that
// arrive together are deleted together (those that arrive while one DELETE
// runs go in the next): far fewer statements than rows. It took n+1 when
// each ack was a statement.
func TestBatchClaimAndAck(t *testing.T) {
	const n = 32
	b, st := openTraced(t)
	spec := bridge.Spec{Topic: bridgetest.Unique("event.batch"), Group: "g", Kind: bridge.Event, Concurrency: n}
	sub, err := b.Subscriber(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte("x"))
	}
	if err := b.Publisher().Publish(spec.Topic, msgs...); err != nil {
		t.Fatal(err)
	}
	st.take()
	ch, err := sub.Subscribe(context.Background(), spec.Topic)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]*message.Message, 0, n)
	for range n {
		got = append(got, bridgetest.Receive(t, ch, wait))
	}
	var wg sync.WaitGroup
	for _, m := range got {
		wg.Go(func() { m.Ack() })
	}
	wg.Wait()
	if err := sub.Close(); err != nil { // waits until every ack is stored
		t.Fatal(err)
	}
	sqls := st.take()
	claims := count(sqls, "FOR UPDATE SKIP LOCKED")
	deletes := count(sqls, "DELETE FROM")
	t.Logf("%d rows: %d statements, %d claims, %d deletes", n, len(sqls), claims, deletes)
	if len(sqls) > n/4 {
		t.Fatalf("%d rows took %d statements (%d claims, %d deletes), want at most %d: %q",
			n, len(sqls), claims, deletes, n/4, sqls)
	}
	// Every ack was stored: nothing is left for the group.
	var left int
	q := "SELECT count(*) FROM " + pgx.Identifier{b.Adapter().Schema}.Sanitize() + ".bridge_queue"
	if err := b.Pool().QueryRow(context.Background(), q).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d rows left after every message was acked", left)
	}
}

// One message at a time (an event handler's concurrency), each row costs
// one claim and one delete, nothing more: no poll, release or retry. (Acks
// rode on the next claim before the shared consumer runtime: n statements
// then, 2n now, since the runtime acknowledges as soon as the handler acks
// rather than when the next claim goes out.)
func TestAckRidesOnNextClaim(t *testing.T) {
	const n = 10
	b, st := openTraced(t)
	spec := bridge.Spec{Topic: bridgetest.Unique("event.seq"), Group: "g", Kind: bridge.Event, Concurrency: 1}
	sub, err := b.Subscriber(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte("x"))
	}
	if err := b.Publisher().Publish(spec.Topic, msgs...); err != nil {
		t.Fatal(err)
	}
	st.take()
	ch, err := sub.Subscribe(context.Background(), spec.Topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range msgs {
		got := bridgetest.Receive(t, ch, wait)
		if got.UUID != want.UUID {
			t.Fatalf("got %s, want %s (publish order)", got.UUID, want.UUID)
		}
		got.Ack()
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	sqls := st.take()
	t.Logf("%d rows one at a time: %d statements", n, len(sqls))
	if len(sqls) > 2*n+2 {
		t.Fatalf("%d rows one at a time took %d statements, want at most %d: %q", n, len(sqls), 2*n+2, sqls)
	}
}

// Publish calls that arrive while a publish statement runs share the next
// one (group commit), and each still gets its own answer: success,
// bridge.ErrNoSubscriber for a topic without groups, bridge.ErrRefused for a
// message that cannot be stored.
func TestGroupCommit(t *testing.T) {
	const n = 20
	b, st := openTraced(t)
	topic := bridgetest.Unique("event.gc")
	for _, g := range []string{"a", "b"} {
		if _, err := b.Subscriber(context.Background(), bridge.Spec{Topic: topic, Group: g, Kind: bridge.Event, Concurrency: 1}); err != nil {
			t.Fatal(err)
		}
	}
	pub := b.Publisher()
	// burst holds the first publish statement back while the others call
	// Publish, then returns their errors (the first one's last).
	burst := func(others ...func() error) []error {
		var once sync.Once
		started := make(chan struct{})
		st.mu.Lock()
		st.slow = func(sql string) {
			if strings.Contains(sql, "INSERT INTO") {
				once.Do(func() { close(started); time.Sleep(300 * time.Millisecond) })
			}
		}
		st.mu.Unlock()
		first := make(chan error, 1)
		go func() { first <- pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("first"))) }()
		<-started
		errs := make([]error, len(others)+1)
		var wg sync.WaitGroup
		for i, f := range others {
			wg.Go(func() { errs[i] = f() })
		}
		wg.Wait()
		errs[len(others)] = <-first
		return errs
	}
	good := func() error { return pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("x"))) }

	st.take()
	others := []func() error{func() error {
		return pub.Publish(bridgetest.Unique("nobody"), message.NewMessage(watermill.NewUUID(), nil))
	}}
	for range n {
		others = append(others, good)
	}
	errs := burst(others...)
	if !errors.Is(errs[0], bridge.ErrNoSubscriber) {
		t.Errorf("publish to a topic without groups: %v, want ErrNoSubscriber", errs[0])
	}
	for i, err := range errs[1:] {
		if err != nil {
			t.Errorf("publish %d: %v", i, err)
		}
	}
	inserts := count(st.take(), "INSERT INTO")
	t.Logf("%d concurrent Publish calls: %d INSERT statements", n+2, inserts)
	if inserts > n/4 {
		t.Errorf("%d concurrent Publish calls took %d INSERT statements, want at most %d", n+2, inserts, n/4)
	}

	// A message that cannot be stored fails its batch's statement; each
	// call then runs alone, and only that one is refused.
	errs = burst(func() error {
		bad := message.NewMessage(watermill.NewUUID(), nil)
		bad.Metadata.Set("k", "a\x00b")
		return pub.Publish(topic, bad)
	}, good, good)
	if !errors.Is(errs[0], bridge.ErrRefused) {
		t.Errorf("publish with a NUL in the metadata: %v, want ErrRefused", errs[0])
	}
	for i, err := range errs[1:] {
		if err != nil {
			t.Errorf("publish %d beside the refused one: %v", i, err)
		}
	}

	var rows int
	q := "SELECT count(*) FROM " + pgx.Identifier{b.Adapter().Schema}.Sanitize() + ".bridge_queue"
	if err := b.Pool().QueryRow(context.Background(), q).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if want := 2 * (n + 1 + 3); rows != want {
		t.Errorf("%d rows queued, want %d (every good message once per group)", rows, want)
	}
}
