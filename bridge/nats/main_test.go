package nats_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: every
// engine, router and subscription a test starts must be stopped without a
// trace.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The outage tests restart nats-server from this process; the
		// goroutine reaping it lives as long as the server, by design.
		goleak.IgnoreAnyFunction("github.com/switchboard-go/switchboard/internal/testenv.stopServer.func1.1"),
	)
}
