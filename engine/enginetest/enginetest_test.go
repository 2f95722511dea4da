package enginetest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/engine/enginetest"
)

// TestMain fails the package's tests if a goroutine outlives them: a
// harness stops its engine and bus when its test ends.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type In struct {
	Text string `json:"text"`
}

type Out struct {
	Text string `json:"text"`
}

var (
	front = engine.NewCommand[In, Out]("front", "1", "relay")
	back  = engine.NewCommand[In, Out]("back", "1", "echo")
	slow  = engine.NewCommand[In, Out]("slow", "1", "wait")
)

func frontService() *engine.Service {
	s := engine.NewService("front", "1")
	engine.Handle(s, front, func(ctx context.Context, in In) (Out, error) {
		return back.Invoke(ctx, in)
	})
	return s
}

// Services runs other services beside the one under test: the front's
// call reaches the real back service.
func TestServices(t *testing.T) {
	t.Parallel()
	b := engine.NewService("back", "1")
	engine.Handle(b, back, func(ctx context.Context, in In) (Out, error) { return Out{Text: "back:" + in.Text}, nil })
	h := enginetest.New(t, frontService(), enginetest.Services(b))
	out, err := front.Invoke(h.Context(), In{Text: "x"})
	if err != nil || out.Text != "back:x" {
		t.Errorf("Invoke = %+v, %v; want back:x", out, err)
	}
}

// EngineConfig sets the engine's settings: here a short CallTimeout, which
// a stub slower than it runs into.
func TestEngineConfig(t *testing.T) {
	t.Parallel()
	s := engine.NewService("front", "1")
	engine.Handle(s, front, func(ctx context.Context, in In) (Out, error) { return slow.Invoke(ctx, in) })
	h := enginetest.New(t, s,
		enginetest.EngineConfig(engine.Config{CallTimeout: 50 * time.Millisecond}),
		enginetest.Stub(slow, func(ctx context.Context, in In) (Out, error) {
			<-ctx.Done()
			return Out{}, ctx.Err()
		}))
	began := time.Now()
	_, err := front.Invoke(h.Context(), In{Text: "x"})
	if !errors.Is(err, engine.ErrTimeout) {
		t.Errorf("Invoke = %v, want ErrTimeout", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("Invoke took %s with a CallTimeout of 50 ms", took)
	}
}

// Context carries the engine and is the test's: live during the test.
func TestContext(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, frontService(), enginetest.Stub(back, func(ctx context.Context, in In) (Out, error) { return Out(in), nil }))
	ctx := h.Context()
	if ctx.Err() != nil {
		t.Fatalf("Context ended during the test: %v", ctx.Err())
	}
	if out, err := front.Invoke(ctx, In{Text: "y"}); err != nil || out.Text != "y" {
		t.Errorf("Invoke = %+v, %v", out, err)
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			t.Error("Context still live when the test's Cleanup runs; it mirrors t.Context")
		}
	})
}
