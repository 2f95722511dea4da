package outbox_test

import (
	"encoding/json"
	"log/slog"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
