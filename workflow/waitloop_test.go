package workflow_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/workflow"
)

// A careless CallTimeout (shorter than the wait command's 200 ms margin)
// made every wait answer "running" at once, and Invoke asked again at
// once: a busy loop of commands and queries for as long as the run ran.
// Each wait now holds at least one poll interval (50 ms).
func TestInvokeWithAShortCallTimeoutDoesNotSpin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wf := workflow.New("wforders", "1", "napping", func(wf workflow.Context, in ChargeIn) (Done, error) {
		return Done{}, workflow.Sleep(wf, 3*time.Second)
	})
	orders := engine.NewService("wforders", "1")
	var waits atomic.Int64
	orders.Use(func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if r, ok := engine.RouteFrom(msg.Context()); ok && strings.HasSuffix(r.Topic, "-wait") {
				waits.Add(1)
			}
			return h(msg)
		}
	})
	if err := workflow.Register(orders, e.store(), wf); err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.Config{SharedBridge: inprocBus(t), Logger: quiet(), CallTimeout: 150 * time.Millisecond,
		Reliability: engine.Reliability{CallBreaker: engine.BreakerPolicy{Disabled: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Register(orders); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Stop(context.Background()) })
	ctx, cancel := context.WithTimeout(engine.WithEngine(t.Context(), eng), 2*time.Second)
	defer cancel()
	_, _ = wf.Invoke(ctx, ChargeIn{}) // the run sleeps past ctx
	if n := waits.Load(); n > 100 {
		t.Errorf("%d wait commands in 2 s, want at most 100 (one per 50 ms poll or fewer)", n)
	}
}
