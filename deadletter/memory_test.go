package deadletter_test

import (
	"testing"

	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/deadletter/storetest"
)

func TestMemoryStore(t *testing.T) {
	t.Parallel()
	storetest.Run(t, deadletter.NewMemory())
}
