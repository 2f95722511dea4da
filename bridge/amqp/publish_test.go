package amqp_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

// captureDefaultLog sends slog.Default (what the bridge logs to) to a
// buffer until the test ends.
func captureDefaultLog(t *testing.T) *testenv.LogBuffer {
	buf := &testenv.LogBuffer{}
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(buf, nil)))
	t.Cleanup(func() { slog.SetDefault(old) })
	return buf
}

// TestLongTopicIsRefusedWithoutLosingTheConnection: a routing key over 255
// bytes is refused by the publisher; before, amqp091 failed writing the
// frame and shut the publishing connection down with a 501.
func TestLongTopicIsRefusedWithoutLosingTheConnection(t *testing.T) {
	logs := captureDefaultLog(t) // before Open: the bridge keeps the logger it found
	b := openBridge(t)
	err := b.Publisher().Publish("reply."+strings.Repeat("x", 300), message.NewMessage(watermill.NewUUID(), []byte("{}")))
	if !errors.Is(err, bridge.ErrRefused) || errors.Is(err, bridge.ErrUnreachable) {
		t.Fatalf("publish to a 306-byte topic: %v, want bridge.ErrRefused, not ErrUnreachable", err)
	}
	time.Sleep(200 * time.Millisecond) // the connection teardown was asynchronous
	if strings.Contains(logs.String(), "connection lost") {
		t.Errorf("the publishing connection was lost:\n%s", logs)
	}
}
