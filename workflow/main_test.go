package workflow_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/testenv"
)

// TestMain fails the package's tests if a goroutine outlives them.
// In the crash test's worker process, it runs the worker instead.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(crashChild())
	}
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}
