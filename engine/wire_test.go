package engine_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	_ "github.com/switchboard-go/switchboard/bridge/all"
	"github.com/switchboard-go/switchboard/bridge/bridgetest"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

// TestNewNeverShowsThePassword: engine.New's errors and logs, for every URL
// shape on every scheme, hold no password.
func TestNewNeverShowsThePassword(t *testing.T) {
	const secret = "S3CRETPW"
	logs := &testenv.LogBuffer{}
	for _, scheme := range bridge.Schemes() {
		if scheme == "gochannel" {
			continue
		}
		for _, raw := range bridgetest.URLsWithPassword(scheme, secret) {
			e, err := engine.New(engine.Config{Bridge: raw, ConnectTimeout: 3 * time.Second, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err == nil {
				t.Errorf("New(%s) succeeded", bridge.Redact(raw))
				_ = e.Stop(t.Context())
				continue
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("New: the error shows the password: %v", err)
			}
		}
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the logs show the password:\n%s", logs)
	}
}
