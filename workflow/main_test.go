package workflow_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/testenv"
)

// TestMain fails the package's tests if a goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}
