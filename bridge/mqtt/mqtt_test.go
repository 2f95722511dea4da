package mqtt_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	_ "github.com/switchboard-go/switchboard/bridge/mqtt"
	"github.com/switchboard-go/switchboard/engine/backendtest"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

// The suite runs with durable members (a client_id for the test process,
// as each instance of a service would have): see "Sessions" in the package
// documentation for what members without one lose when they close.
func TestConformance(t *testing.T) {
	h := bridgetest.Harness{
		URL:    testenv.URL(t, testenv.MQTT) + "?client_id=" + bridgetest.Unique("conformance"),
		Outage: func(t *testing.T) func() { return testenv.Outage(t, testenv.MQTT) },
	}
	t.Run("Bridge", func(t *testing.T) { bridgetest.Run(t, h) })
	backendtest.Run(t, h)
}

// TestConformanceEphemeral runs the suite on the URL as most users write it,
// without client_id: members named at random, not Durable, and a group
// exists only while it has members (GroupOutlivesMembers false). Like the
// in-process backend it has no Outage: messages published while a broker
// restart has cleared the shared subscriptions are refused or dropped
// (see the package doc, "Broker restarts").
func TestConformanceEphemeral(t *testing.T) {
	h := bridgetest.Harness{URL: testenv.URL(t, testenv.MQTT)}
	t.Run("Bridge", func(t *testing.T) { bridgetest.Run(t, h) })
	backendtest.Run(t, h)
}

func TestBadURL(t *testing.T) {
	base := testenv.URL(t, testenv.MQTT)
	for _, tc := range []struct{ url, mention string }{
		{base + "?colour=blue", "colour"},
		{base + "?session_expiry=soon", "session_expiry"},
		{base + "?session_expiry=0s", "session_expiry"},
		{base + "?keep_alive=1ms", "keep_alive"},
		{base + "?client_id=a/b", "client_id"},
		{base + "?client_id=a&client_id=b", "client_id"},
		{"mqtt:///", "mqtt://"},
		{base + "/some/path", "mqtt://"},
	} {
		b, err := bridge.Open(t.Context(), tc.url)
		if err == nil {
			_ = b.Close()
			t.Errorf("Open(%q) succeeded", tc.url)
			continue
		}
		if !errors.Is(err, bridge.ErrBadURL) || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("Open(%q): %v; want ErrBadURL mentioning %s", tc.url, err, tc.mention)
		}
	}
}

// A topic MQTT cannot name, or one that would be read as a wildcard or a
// broker topic, is refused before anything is sent.
func TestTopicsRefused(t *testing.T) {
	b, err := bridge.Open(t.Context(), testenv.URL(t, testenv.MQTT))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, topic := range []string{"", "a..b", "a.+", "a.#", "a/b", "$SYS.x", "_sb.retry", "a.\x00"} {
		err := b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("x")))
		if !errors.Is(err, bridge.ErrRefused) {
			t.Errorf("Publish(%q): %v, want ErrRefused", topic, err)
		}
	}
	m := message.NewMessage(watermill.NewUUID(), []byte("x"))
	m.Metadata.Set("k", "nul\x00")
	if err := b.Publisher().Publish("a.b", m); !errors.Is(err, bridge.ErrRefused) {
		t.Errorf("metadata with NUL: %v, want ErrRefused", err)
	}
}

// Mosquitto answers a PUBACK with reason 0x10 when no session subscribes
// to the topic: the publish fails with ErrNoSubscriber at once.
func TestNoSubscriber(t *testing.T) {
	b, err := bridge.Open(t.Context(), testenv.URL(t, testenv.MQTT))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	start := time.Now()
	err = b.Publisher().Publish(bridgetest.Unique("nobody"), message.NewMessage(watermill.NewUUID(), []byte("x")))
	if !errors.Is(err, bridge.ErrNoSubscriber) {
		t.Fatalf("publish to a topic nobody subscribes: %v, want ErrNoSubscriber", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %s", d)
	}
}

// A member with a stable client_id resumes its session after a restart:
// the message its handler held when the process went away comes back,
// counted as a second delivery (the broker flags it DUP), and so does the
// one published while no member ran, as a first delivery.
func TestSessionSurvivesConsumerRestart(t *testing.T) {
	base := testenv.URL(t, testenv.MQTT)
	url := base + "?client_id=" + bridgetest.Unique("inst")
	spec := bridge.Spec{Topic: bridgetest.Unique("restart"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}

	b1, err := bridge.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	if !b1.Capabilities().Durable {
		t.Error("Durable is false with a client_id")
	}
	ch, _ := bridgetest.Subscribe(t, b1, spec)
	bridgetest.Publish(t, b1, spec.Topic, "held")
	held := bridgetest.Receive(t, ch, 10*time.Second) // never settled
	_ = b1.Close()                                    // the process goes away

	b0, err := bridge.Open(t.Context(), base)
	if err != nil {
		t.Fatal(err)
	}
	defer b0.Close()
	if b0.Capabilities().Durable {
		t.Error("Durable is true without a client_id")
	}
	bridgetest.Publish(t, b0, spec.Topic, "meanwhile") // queued in the session

	b2, err := bridge.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	ch2, _ := bridgetest.Subscribe(t, b2, spec)
	got := map[string]string{}
	for range 2 {
		m := bridgetest.Receive(t, ch2, 10*time.Second)
		got[string(m.Payload)] = m.Metadata.Get(bridge.DeliveryKey)
		if string(m.Payload) == "held" && m.UUID != held.UUID {
			t.Errorf("held message came back as %s, was %s", m.UUID, held.UUID)
		}
		m.Ack()
	}
	if got["held"] != "2" || got["meanwhile"] != "1" {
		t.Errorf("got payload → delivery %v, want held → 2, meanwhile → 1", got)
	}
}

// An event nacked by one group comes back to that group only: the copy
// goes to the group's redelivery topic, not to the topic every group reads.
func TestNackGoesToItsGroupOnly(t *testing.T) {
	b, err := bridge.Open(t.Context(), testenv.URL(t, testenv.MQTT))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	topic := bridgetest.Unique("evt")
	chA, _ := bridgetest.Subscribe(t, b, bridge.Spec{Topic: topic, Group: "a.v1", Kind: bridge.Event, Concurrency: 1})
	chB, _ := bridgetest.Subscribe(t, b, bridge.Spec{Topic: topic, Group: "b.v1", Kind: bridge.Event, Concurrency: 1})
	bridgetest.Publish(t, b, topic, "e")
	bridgetest.Receive(t, chB, 10*time.Second).Ack()
	m := bridgetest.Receive(t, chA, 10*time.Second)
	m.Metadata.Set(bridge.NackDelayKey, "10ms")
	m.Nack()
	again := bridgetest.Receive(t, chA, 10*time.Second)
	again.Ack()
	if again.UUID != m.UUID || again.Metadata.Get(bridge.DeliveryKey) != "2" {
		t.Errorf("redelivered %s with delivery %q, want %s with 2", again.UUID, again.Metadata.Get(bridge.DeliveryKey), m.UUID)
	}
	bridgetest.ExpectNothing(t, chB, 300*time.Millisecond)
}

// A PUBACK goes out as soon as its message is acked, even while an earlier
// one is still held: when the process goes away only the held one comes
// back. (In receive order, a nacked message waiting out its delay would
// hold back every later PUBACK.)
func TestAckDoesNotWaitForEarlierMessages(t *testing.T) {
	base := testenv.URL(t, testenv.MQTT)
	url := base + "?client_id=" + bridgetest.Unique("inst")
	spec := bridge.Spec{Topic: bridgetest.Unique("order"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 2}
	b1, err := bridge.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := bridgetest.Subscribe(t, b1, spec)
	bridgetest.Publish(t, b1, spec.Topic, "first", "second")
	first := bridgetest.Receive(t, ch, 10*time.Second)
	second := bridgetest.Receive(t, ch, 10*time.Second)
	if string(first.Payload) != "first" {
		first, second = second, first
	}
	second.Ack()
	time.Sleep(200 * time.Millisecond) // the PUBACK reaches the broker
	_ = b1.Close()

	b2, err := bridge.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	ch2, _ := bridgetest.Subscribe(t, b2, spec)
	again := bridgetest.Receive(t, ch2, 10*time.Second)
	again.Ack()
	if string(again.Payload) != "first" {
		t.Errorf("after the restart got %q, want first (the one not acked)", again.Payload)
	}
	bridgetest.ExpectNothing(t, ch2, 500*time.Millisecond) // second was acknowledged
}

// A member without a client_id leaves nothing behind when it closes: its
// session ends, so the broker never hands a later message to it (Mosquitto
// deals a shared subscription's messages to disconnected sessions too),
// and what it held goes to the other members. When the last one has
// closed, nobody subscribes any more.
func TestEphemeralMemberLeavesNothingBehind(t *testing.T) {
	url := testenv.URL(t, testenv.MQTT)
	spec := bridge.Spec{Topic: bridgetest.Unique("eph"), Group: "svc.v1", Kind: bridge.Command, Concurrency: 1}
	b1, b2 := connect(t, url), connect(t, url)
	ch1, sub1 := bridgetest.Subscribe(t, b1, spec)
	ch2, sub2 := bridgetest.Subscribe(t, b2, spec)
	bridgetest.Publish(t, b1, spec.Topic, "m0", "m1")
	var held *message.Message // the one member 1 got; member 2 gets the other
	select {
	case held = <-ch1:
	case m := <-ch2:
		m.Ack()
		held = bridgetest.Receive(t, ch1, 10*time.Second)
	}
	go func() { time.Sleep(100 * time.Millisecond); held.Nack() }()
	if err := sub1.Close(); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < 11 { // the nacked one, and every later one: none stranded with member 1
		if len(got) == 1 {
			bridgetest.Publish(t, b2, spec.Topic, numbered(10)...)
		}
		m := bridgetest.Receive(t, ch2, 10*time.Second)
		got[string(m.Payload)] = true
		m.Ack()
	}
	if !got[string(held.Payload)] {
		t.Errorf("member 2 got %v, not the message member 1 nacked while closing", got)
	}
	if err := sub2.Close(); err != nil {
		t.Fatal(err)
	}
	err := b1.Publisher().Publish(spec.Topic, message.NewMessage(watermill.NewUUID(), []byte("late")))
	if !errors.Is(err, bridge.ErrNoSubscriber) {
		t.Errorf("publish after the last member closed: %v, want ErrNoSubscriber", err)
	}
}

func connect(t *testing.T, url string) bridge.Bridge {
	t.Helper()
	b, err := bridge.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func numbered(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "n" + strconv.Itoa(i)
	}
	return out
}

// Nothing listens: Open fails with ErrUnreachable when its context ends,
// without showing the password.
func TestUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	b, err := bridge.Open(ctx, "mqtt://user:s3cret@127.0.0.1:1")
	if err == nil {
		_ = b.Close()
		t.Fatal("Open succeeded")
	}
	if !errors.Is(err, bridge.ErrUnreachable) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Open: %v; want ErrUnreachable without the password", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Open took %s", d)
	}
}
