package dispatch_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: every
// engine, router and subscription a test starts must be stopped without a
// trace.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
