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

// Bridge.Close returns while a Subscribe is still connecting to a broker
// that does not answer (the engine subscribes with a context that never
// ends), and does not hold the bridge's lock meanwhile, which Publish,
// Subscriber and Health need. Here the broker "goes away" for the
// subscribers only (their server address is made unreachable after Open).
func TestCloseWhileSubscribingToAnUnreachableBroker(t *testing.T) {
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
