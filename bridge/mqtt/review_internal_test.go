package mqtt

import (
	"context"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

// Review: a member connects inside Subscribe (openSource), waiting for the
// broker until Subscribe's context ends, and the engine subscribes with
// context.WithoutCancel. Meanwhile the runtime holds its mutex, so
// Abandon and Close cannot end the wait: Bridge.Close, which calls Abandon
// with b.mu held, hangs, and with it everything that takes b.mu (Publish,
// Subscriber, Health). Here the broker "goes away" for the subscribers only
// (their server address is made unreachable after Open).
func TestReviewCloseWhileSubscribingToAnUnreachableBroker(t *testing.T) {
	u, err := url.Parse(testenv.URL(t, testenv.MQTT))
	if err != nil {
		t.Fatal(err)
	}
	br, err := open(t.Context(), u, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	b := br.(*mqttBridge)
	b.server = &url.URL{Scheme: "mqtt", Host: "127.0.0.1:1"} // refused
	spec := bridge.Spec{Topic: "review.unreachable", Group: "g", Kind: bridge.Event, Concurrency: 1}
	sub, err := b.Subscriber(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = sub.Subscribe(context.WithoutCancel(t.Context()), spec.Topic) }()
	time.Sleep(500 * time.Millisecond) // Subscribe is connecting
	closed := make(chan struct{})
	go func() { _ = b.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Bridge.Close did not return within 10s while a Subscribe waits for an unreachable broker")
	}
}
