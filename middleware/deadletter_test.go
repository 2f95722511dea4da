package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/middleware"
)

var route = envelope.Route{Service: "billing.v1", Handler: "charge", Group: "billing.v1", Topic: "event.order.placed", Kind: envelope.KindEvent}

// routed is the context the engine gives a handled message: it carries the
// route the dead-letter record names.
func routed() context.Context { return envelope.WithRoute(context.Background(), route) }

// deterministic is a redelivery policy without jitter: 1 s doubling to 1 min.
var deterministic = middleware.Backoff{InitialInterval: time.Second, Multiplier: 2, MaxInterval: time.Minute, RandomizationFactor: -1}

// dlChain composes DeadLetter around Retry around h, as the engine does.
func dlChain(dl middleware.DeadLetter, attempts int, h message.HandlerFunc) message.HandlerFunc {
	if dl.Logger == nil {
		dl.Logger = quiet
	}
	return dl.Middleware()(fast(attempts).Middleware()(h))
}

func all(t *testing.T, s deadletter.Store) []deadletter.Record {
	t.Helper()
	recs, _, err := s.List(context.Background(), deadletter.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func nackDelay(t *testing.T, msg *message.Message) time.Duration {
	t.Helper()
	v, ok := msg.Metadata[bridge.NackDelayKey]
	if !ok {
		t.Fatalf("no %s set", bridge.NackDelayKey)
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s = %q: %v", bridge.NackDelayKey, v, err)
	}
	return d
}

func TestDeadLetterPermanentErrorStoredOnceAndAcked(t *testing.T) {
	t.Parallel()
	store := deadletter.NewMemory()
	cause := fmt.Errorf("charging: %w", &envelope.Error{Code: http.StatusUnprocessableEntity, Message: "card expired"})
	c := &counter{outcome: always(cause)}
	msg := newMsg(routed(),
		bridge.DeliveryKey, "1", bridge.NackDelayKey, "5s", deadletter.TargetGroupKey, route.Group,
		envelope.KeyCorrelationID, "corr-1", envelope.KeyTenantID, "acme")
	before := time.Now()
	out, err := dlChain(middleware.DeadLetter{Store: store}, 3, c.handle)(msg)
	after := time.Now()
	if err != nil || out != nil {
		t.Fatalf("got %v, %v; want nil, nil (acked after storing)", out, err)
	}
	if n := c.calls.Load(); n != 1 {
		t.Errorf("handler called %d times, want exactly 1 for a permanent error", n)
	}
	recs := all(t, store)
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	r := recs[0]
	if r.ErrorKind != deadletter.KindPermanent || r.Error != cause.Error() || r.MessageID != msg.UUID || r.Attempts != 1 {
		t.Errorf("record kind %q, error %q, message %q, attempts %d; want permanent, %q, %q, 1",
			r.ErrorKind, r.Error, r.MessageID, r.Attempts, cause.Error(), msg.UUID)
	}
	if string(r.Payload) != string(msg.Payload) {
		t.Errorf("payload %q, want %q", r.Payload, msg.Payload)
	}
	if r.Service != route.Service || r.Handler != route.Handler || r.Group != route.Group || r.Topic != route.Topic {
		t.Errorf("route %s/%s/%s/%s, want %+v", r.Service, r.Handler, r.Group, r.Topic, route)
	}
	for _, k := range []string{bridge.DeliveryKey, bridge.NackDelayKey, middleware.AttemptKey, deadletter.TargetGroupKey} {
		if _, ok := r.Metadata[k]; ok {
			t.Errorf("record metadata keeps the internal key %q: %v", k, r.Metadata)
		}
	}
	if r.Metadata[envelope.KeyCorrelationID] != "corr-1" || r.Metadata[envelope.KeyTenantID] != "acme" {
		t.Errorf("record metadata lost the message's own keys: %v", r.Metadata)
	}
	if r.LastFailedAt.Before(before) || r.LastFailedAt.After(after) {
		t.Errorf("LastFailedAt %v not within the call [%v, %v]", r.LastFailedAt, before, after)
	}
	if r.FirstFailedAt.IsZero() || r.FirstFailedAt.After(r.LastFailedAt) {
		t.Errorf("FirstFailedAt %v, LastFailedAt %v", r.FirstFailedAt, r.LastFailedAt)
	}
	if msg.Metadata.Get(deadletter.TargetGroupKey) != route.Group {
		t.Error("storing the record edited the message's own metadata")
	}
}

func TestDeadLetterTransientErrorIsRedeliveredWithGrowingDelay(t *testing.T) {
	t.Parallel()
	store := deadletter.NewMemory()
	dl := middleware.DeadLetter{Store: store, MaxDeliveries: 5, Redelivery: deterministic}
	delay := func(delivery int) time.Duration {
		c := &counter{outcome: always(errTransient)}
		msg := newMsg(routed(), bridge.DeliveryKey, strconv.Itoa(delivery))
		_, err := dlChain(dl, 2, c.handle)(msg)
		if !errors.Is(err, errTransient) {
			t.Fatalf("delivery %d: err = %v, want the handler's error (nack)", delivery, err)
		}
		if n := c.calls.Load(); n != 2 {
			t.Errorf("delivery %d: %d in-memory attempts, want 2", delivery, n)
		}
		return nackDelay(t, msg)
	}
	d2 := delay(2)
	if d2 <= 0 {
		t.Errorf("nack delay after delivery 2 = %s, want positive", d2)
	}
	d1, d4 := delay(1), delay(4)
	if d1 != time.Second || d2 != 2*time.Second || d4 != 8*time.Second {
		t.Errorf("nack delays after deliveries 1, 2, 4 = %s, %s, %s; want 1s, 2s, 8s", d1, d2, d4)
	}
	if recs := all(t, store); len(recs) != 0 {
		t.Errorf("stored %d records before the budget ran out", len(recs))
	}
	capped := middleware.DeadLetter{Store: store, MaxDeliveries: 50, Redelivery: deterministic, Logger: quiet}
	msg := newMsg(routed(), bridge.DeliveryKey, "20")
	_, _ = capped.Middleware()((&counter{outcome: always(errTransient)}).handle)(msg)
	if d := nackDelay(t, msg); d != time.Minute {
		t.Errorf("nack delay after delivery 20 = %s, want the 1m MaxInterval", d)
	}
}

func TestDeadLetterDefaultRedeliveryHasJitterWithinBounds(t *testing.T) {
	t.Parallel()
	dl := middleware.DeadLetter{Store: deadletter.NewMemory(), Logger: quiet}.Middleware()
	seen := map[time.Duration]bool{}
	for range 20 {
		msg := newMsg(routed(), bridge.DeliveryKey, "1")
		_, _ = dl((&counter{outcome: always(errTransient)}).handle)(msg)
		d := nackDelay(t, msg)
		if d < 500*time.Millisecond || d > 1500*time.Millisecond {
			t.Fatalf("default delay after delivery 1 = %s, want 1s ± 50%%", d)
		}
		seen[d] = true
	}
	if len(seen) < 2 {
		t.Error("20 default delays are all equal: no jitter")
	}
}

func TestDeadLetterExhaustedAtMaxDeliveries(t *testing.T) {
	t.Parallel()
	store := deadletter.NewMemory()
	c := &counter{outcome: always(errTransient)}
	msg := newMsg(routed(), bridge.DeliveryKey, "5")
	out, err := dlChain(middleware.DeadLetter{Store: store, MaxDeliveries: 5}, 3, c.handle)(msg)
	if err != nil || out != nil {
		t.Fatalf("got %v, %v; want nil, nil (acked after storing)", out, err)
	}
	recs := all(t, store)
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	if r := recs[0]; r.ErrorKind != deadletter.KindExhausted || r.Attempts != 15 || r.Error != errTransient.Error() {
		t.Errorf("record kind %q, attempts %d, error %q; want exhausted, 5 deliveries × 3 attempts = 15, %q",
			r.ErrorKind, r.Attempts, r.Error, errTransient)
	}
}

func TestDeadLetterWithoutDeliveryCountStoresOnFirstFailure(t *testing.T) {
	t.Parallel()
	for _, delivery := range []string{"", "0", "garbage"} {
		store := deadletter.NewMemory()
		msg := newMsg(routed())
		if delivery != "" {
			msg.Metadata.Set(bridge.DeliveryKey, delivery)
		}
		_, err := dlChain(middleware.DeadLetter{Store: store}, 2, (&counter{outcome: always(errTransient)}).handle)(msg)
		if err != nil {
			t.Errorf("delivery %q: err = %v, want nil (stored and acked)", delivery, err)
		}
		recs := all(t, store)
		if len(recs) != 1 || recs[0].ErrorKind != deadletter.KindExhausted || recs[0].Attempts != 2 {
			t.Errorf("delivery %q: records %+v, want one exhausted record with 2 attempts", delivery, recs)
		}
	}
}

// failingStore fails the first fails Puts, then stores in Memory.
type failingStore struct {
	*deadletter.Memory
	mu    sync.Mutex
	fails int
	puts  int
}

var errStoreDown = errors.New("store down")

func (s *failingStore) Put(ctx context.Context, r deadletter.Record) (string, error) {
	s.mu.Lock()
	s.puts++
	fail := s.puts <= s.fails
	s.mu.Unlock()
	if fail {
		return "", errStoreDown
	}
	return s.Memory.Put(ctx, r)
}

func TestDeadLetterStoreFailureNacks(t *testing.T) {
	t.Parallel()
	for _, cause := range []error{errTransient, middleware.Permanent(errTransient)} {
		store := &failingStore{Memory: deadletter.NewMemory(), fails: 1000}
		msg := newMsg(routed(), bridge.DeliveryKey, "5")
		_, err := dlChain(middleware.DeadLetter{Store: store, MaxDeliveries: 5, Redelivery: deterministic}, 1, (&counter{outcome: always(cause)}).handle)(msg)
		if err == nil {
			t.Fatalf("%v: err = nil: the message would be acked without being stored", cause)
		}
		if !errors.Is(err, errStoreDown) || !errors.Is(err, errTransient) {
			t.Errorf("err = %v, want both the handler's and the store's error", err)
		}
		if d := nackDelay(t, msg); d != 16*time.Second {
			t.Errorf("nack delay = %s, want 16s (after delivery 5)", d)
		}
		if store.puts != 1 {
			t.Errorf("%d Puts, want 1", store.puts)
		}
	}
}

// When the store write fails, the first failure time is kept for the
// record written on a later delivery.
func TestDeadLetterKeepsFirstFailureAcrossAFailedStoreWrite(t *testing.T) {
	t.Parallel()
	store := &failingStore{Memory: deadletter.NewMemory(), fails: 1}
	chain := dlChain(middleware.DeadLetter{Store: store}, 1, (&counter{outcome: always(errTransient)}).handle)
	msg := newMsg(routed())
	if _, err := chain(msg); err == nil {
		t.Fatal("err = nil although the store failed")
	}
	between := time.Now()
	time.Sleep(2 * time.Millisecond) // let the clock move on (not a speed assertion)
	redelivered := newMsg(routed())
	redelivered.UUID = msg.UUID
	if _, err := chain(redelivered); err != nil {
		t.Fatalf("second delivery: %v", err)
	}
	recs := all(t, store)
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	if !recs[0].FirstFailedAt.Before(between) {
		t.Errorf("FirstFailedAt %v is after the first failure (before %v): lost when the store write failed", recs[0].FirstFailedAt, between)
	}
}

func TestDeadLetterCircuitOpenIsNeverStored(t *testing.T) {
	t.Parallel()
	store := deadletter.NewMemory()
	open := fmt.Errorf("%w: billing: paused for 10s", middleware.ErrCircuitOpen)
	for _, delivery := range []string{"", "1", "5", "6", "1000"} {
		msg := newMsg(routed())
		if delivery != "" {
			msg.Metadata.Set(bridge.DeliveryKey, delivery)
		}
		_, err := dlChain(middleware.DeadLetter{Store: store, MaxDeliveries: 5, Redelivery: deterministic}, 1, (&counter{outcome: always(open)}).handle)(msg)
		if !errors.Is(err, middleware.ErrCircuitOpen) {
			t.Errorf("delivery %q: err = %v, want ErrCircuitOpen (nack)", delivery, err)
		}
		if d := nackDelay(t, msg); d != time.Second {
			t.Errorf("delivery %q: nack delay %s, want the first redelivery delay, 1s", delivery, d)
		}
	}
	if recs := all(t, store); len(recs) != 0 {
		t.Errorf("an open circuit dead-lettered %d messages", len(recs))
	}
}

func TestDeadLetterSuccessAfterFailuresStoresNothing(t *testing.T) {
	t.Parallel()
	store := deadletter.NewMemory()
	c := &counter{outcome: failing(4, errTransient)} // 2 deliveries × 2 attempts fail, then success
	chain := dlChain(middleware.DeadLetter{Store: store, MaxDeliveries: 3}, 2, c.handle)
	id := newMsg(routed()).UUID
	for delivery := 1; delivery <= 3; delivery++ {
		msg := newMsg(routed(), bridge.DeliveryKey, strconv.Itoa(delivery))
		msg.UUID = id
		_, err := chain(msg)
		if want := delivery < 3; (err != nil) != want {
			t.Errorf("delivery %d: err = %v, want failure %v", delivery, err, want)
		}
	}
	if recs := all(t, store); len(recs) != 0 {
		t.Errorf("stored %d records although delivery 3 succeeded", len(recs))
	}
}

func TestDeadLetterRedeliveredAfterCrashKeepsOneRecord(t *testing.T) {
	t.Parallel()
	store := deadletter.NewMemory()
	chain := dlChain(middleware.DeadLetter{Store: store}, 1, (&counter{outcome: always(middleware.Permanent(errTransient))}).handle)
	first := newMsg(routed(), bridge.DeliveryKey, "1")
	if _, err := chain(first); err != nil {
		t.Fatal(err)
	}
	// The process crashed before the ack: the backend delivers it again.
	again := newMsg(routed(), bridge.DeliveryKey, "2")
	again.UUID, again.Payload = first.UUID, first.Payload
	if _, err := chain(again); err != nil {
		t.Fatal(err)
	}
	recs := all(t, store)
	if len(recs) != 1 {
		t.Fatalf("%d records for one message, want 1", len(recs))
	}
	if recs[0].Attempts != 2 {
		t.Errorf("Attempts %d, want 2 (the second delivery's count)", recs[0].Attempts)
	}
}

func TestDeadLetterValidate(t *testing.T) {
	t.Parallel()
	if err := (middleware.DeadLetter{Store: deadletter.NewMemory()}).Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	err := middleware.DeadLetter{MaxDeliveries: -1, Redelivery: middleware.Backoff{Multiplier: 0.5, MaxElapsedTime: time.Hour}}.Validate()
	for _, want := range []string{"Store is nil", "MaxDeliveries is negative", "multiplier 0.5", "MaxElapsedTime is not used"} {
		if err == nil || !containsStr(err.Error(), want) {
			t.Errorf("Validate error lacks %q: %v", want, err)
		}
	}
}

// Deliveries spent bouncing off an open circuit do not count towards the
// budget: after five bounces, the first real failure is redelivered, not
// dead-lettered.
func TestDeadLetterCircuitBouncesDoNotSpendTheBudget(t *testing.T) {
	t.Parallel()
	store := deadletter.NewMemory()
	var fail error
	chain := dlChain(middleware.DeadLetter{Store: store, MaxDeliveries: 5, Redelivery: deterministic}, 1,
		func(*message.Message) ([]*message.Message, error) { return nil, fail })
	id := watermill.NewUUID()
	deliver := func(n int) error {
		msg := message.NewMessage(id, []byte(`{}`))
		msg.SetContext(routed())
		msg.Metadata.Set(bridge.DeliveryKey, fmt.Sprint(n))
		_, err := chain(msg)
		return err
	}
	fail = fmt.Errorf("%w: paused", middleware.ErrCircuitOpen)
	for n := 1; n <= 5; n++ {
		if err := deliver(n); !errors.Is(err, middleware.ErrCircuitOpen) {
			t.Fatalf("bounce %d: %v", n, err)
		}
	}
	fail = errTransient
	if err := deliver(6); err == nil {
		t.Fatal("the first real failure after the bounces was acked")
	}
	if recs := all(t, store); len(recs) != 0 {
		t.Fatalf("dead-lettered after one real failure: %+v", recs)
	}
	for n := 7; n <= 10; n++ {
		_ = deliver(n)
	}
	recs := all(t, store)
	if len(recs) != 1 || recs[0].Attempts != 5 || recs[0].ErrorKind != deadletter.KindExhausted {
		t.Errorf("after 5 real failures: %+v, want one exhausted record with 5 attempts", recs)
	}
}

// DeadLetter composed on a plain Watermill router (no engine route in the
// context) still keys its records by topic: the same message id failing on
// two topics is two records, each naming its topic and handler.
func TestDeadLetterOnAWatermillRouterKeysByTopic(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	logger := watermill.NopLogger{}
	pubSub := gochannel.NewGoChannel(gochannel.Config{}, logger)
	defer pubSub.Close()
	r, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	store := deadletter.NewMemory()
	r.AddMiddleware(middleware.DeadLetter{Store: store, Logger: quiet}.Middleware())
	for _, topic := range []string{"orders", "refunds"} {
		r.AddConsumerHandler("on-"+topic, topic, pubSub, func(*message.Message) error {
			return middleware.Permanent(errors.New("refused"))
		})
	}
	go func() { _ = r.Run(ctx) }()
	defer r.Close()
	<-r.Running()
	for _, topic := range []string{"orders", "refunds"} {
		if err := pubSub.Publish(topic, message.NewMessage("same-id", []byte(`{}`))); err != nil {
			t.Fatal(err)
		}
	}
	var recs []deadletter.Record
	for ctx.Err() == nil {
		recs, _, _ = store.List(ctx, deadletter.Filter{})
		if len(recs) == 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	topics := map[string]string{}
	for _, rec := range recs {
		topics[rec.Topic] = rec.Handler
	}
	if len(recs) != 2 || topics["orders"] != "on-orders" || topics["refunds"] != "on-refunds" {
		t.Fatalf("records %+v; want one per topic, each naming its topic and handler", recs)
	}
}
