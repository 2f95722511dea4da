package workflowtest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/testenv"
)

// TestMain fails the package's tests if a goroutine outlives them: an
// Env stops its engine and bus when its test ends.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}
