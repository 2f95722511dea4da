package mqtt_test

import (
	"errors"
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

func TestConformance(t *testing.T) {
	h := bridgetest.Harness{
		URL:    testenv.URL(t, testenv.MQTT),
		Outage: func(t *testing.T) func() { return testenv.Outage(t, testenv.MQTT) },
	}
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
