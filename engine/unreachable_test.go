package engine_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	_ "github.com/switchboard-go/switchboard/bridge/all"
	"github.com/switchboard-go/switchboard/engine"
)

// closedPort returns a local address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// TestNewUnreachableMatchesBothSentinels: an engine whose broker cannot be
// reached at start-up fails with an error that is engine.ErrUnreachable (the
// sentinel an application tests for) and bridge.ErrUnreachable alike.
func TestNewUnreachableMatchesBothSentinels(t *testing.T) {
	addr := closedPort(t)
	for _, url := range []string{
		"nats://" + addr,
		"amqp://guest:guest@" + addr + "/",
		"postgres://postgres@" + addr + "/switchboard?sslmode=disable",
	} {
		t.Run(url[:4], func(t *testing.T) {
			eng, err := engine.New(engine.Config{Bridge: url, ConnectTimeout: 2 * time.Second})
			if err == nil {
				_ = eng.Stop(t.Context())
				t.Fatal("New succeeded against a closed port")
			}
			if !errors.Is(err, engine.ErrUnreachable) {
				t.Errorf("errors.Is(err, engine.ErrUnreachable) = false: %v", err)
			}
			if !errors.Is(err, bridge.ErrUnreachable) {
				t.Errorf("errors.Is(err, bridge.ErrUnreachable) = false: %v", err)
			}
			var e *engine.Error
			if !errors.As(err, &e) || e.Code != 503 {
				t.Errorf("errors.As(*engine.Error) = %v, %v; want a 503", e, err)
			}
		})
	}
}
