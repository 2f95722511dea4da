package dispatch_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine/internal/dispatch"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/router"
)

// Replies nobody waits for (late, or duplicated by an at-least-once backend)
// are counted and logged at debug level only: a burst of them must not flood
// the log. Replies to waiting calls are not counted.
func TestUnsolicitedRepliesAreCountedNotWarned(t *testing.T) {
	bus := inproc.New()
	defer bus.Close()
	var logs testenv.LogBuffer
	calls := dispatch.NewCalls()
	stop, err := dispatch.Listen(t.Context(), bus, "i1", calls, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	reply, _ := calls.Expect("req-waiting")
	defer calls.Forget("req-waiting", reply)
	const late = 50
	for i := range late + 1 {
		m := message.NewMessage(watermill.NewUUID(), nil)
		m.Metadata.Set(envelope.KeyCausationID, "req-gone")
		if i == late {
			m.Metadata.Set(envelope.KeyCausationID, "req-waiting")
		}
		if err := bus.Publisher().Publish(router.ReplyTopic("i1"), m); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-reply:
	case <-time.After(10 * time.Second):
		t.Fatal("the awaited reply never came")
	}
	// Replies are handled concurrently: the late ones may still be counting.
	for deadline := time.Now().Add(10 * time.Second); calls.Unsolicited() < late && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // the waited-for reply must not be counted too
	if n := calls.Unsolicited(); n != late {
		t.Errorf("Unsolicited() = %d, want %d", n, late)
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("unsolicited replies logged above debug:\n%s", logs.String())
	}
}
