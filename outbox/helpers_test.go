package outbox_test

import (
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// openServer opens a bridge on one of the test servers (testenv.NATS, …),
// closed when the test ends.
func openServer(t *testing.T, server string) bridge.Bridge {
	t.Helper()
	b, err := bridge.Open(t.Context(), testenv.URL(t, server))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
