package deadletter_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/deadletter"
)

// TestReplayAllStopsWhenTheBrokerIsGone: with the broker closed, every
// publish would fail alike (on a real broker, each after its timeout), so
// ReplayAll stops at the first and every record stays.
func TestReplayAllStopsWhenTheBrokerIsGone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := deadletter.NewMemory()
	at := time.Now().Add(-time.Minute)
	for i := range 20 {
		_, err := store.Put(ctx, deadletter.Record{MessageID: fmt.Sprint("m", i), Topic: "event.t", Group: "g",
			Payload: []byte(`{}`), Metadata: map[string]string{}, Error: "boom", FirstFailedAt: at, LastFailedAt: at})
		if err != nil {
			t.Fatal(err)
		}
	}
	bus := inproc.New()
	_ = bus.Close()
	c, err := deadletter.ReplayAll(ctx, store, bus.Publisher(), deadletter.Filter{})
	if !errors.Is(err, bridge.ErrClosed) || c.Failed != 1 || c.Replayed != 0 {
		t.Fatalf("ReplayAll on a closed broker: %+v, %v; want 1 failed and ErrClosed", c, err)
	}
	recs, _, err := store.List(ctx, deadletter.Filter{Limit: 100})
	if err != nil || len(recs) != 20 {
		t.Fatalf("%d records left, %v; want all 20", len(recs), err)
	}
}
