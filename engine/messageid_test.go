package engine_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
)

// WithMessageID gives an Invoke's, a Send's and an Emit's message the id
// the caller chose; without it each message has a fresh one.
func TestWithMessageIDSetsTheMessageID(t *testing.T) {
	t.Parallel()
	ev := engine.NewEvent[EchoIn]("msgid.event")
	sub, got := scheduleService("msgid-sub", ev, 2)
	e, _ := start(t, inproc.New(), engine.Config{}, echoService(), sub)
	ctx := engine.WithEngine(t.Context(), e)

	out, err := Echo.Invoke(engine.WithMessageID(ctx, "run-1/step-1"), EchoIn{Text: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Meta.MessageID != "run-1/step-1" {
		t.Errorf("handler saw message id %q, want run-1/step-1", out.Meta.MessageID)
	}
	again, err := Echo.Invoke(ctx, EchoIn{Text: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if again.Meta.MessageID == "run-1/step-1" || again.Meta.MessageID == "" {
		t.Errorf("without WithMessageID the id is %q, want a fresh one", again.Meta.MessageID)
	}
	if err := ev.Emit(engine.WithMessageID(ctx, "run-1/step-2"), EchoIn{Text: "b"}); err != nil {
		t.Fatal(err)
	}
	if r := waitFor(t, got, 5*time.Second); r.meta.MessageID != "run-1/step-2" {
		t.Errorf("subscriber saw message id %q, want run-1/step-2", r.meta.MessageID)
	}
}

// An id that is empty, too long or not printable ASCII is refused at the
// call, as bad input, and nothing is sent.
func TestWithMessageIDRefusesBadIDs(t *testing.T) {
	t.Parallel()
	var handled atomic.Int32
	s := engine.NewService("msgid-bad", "1")
	engine.Handle(s, Echo2, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		handled.Add(1)
		return EchoOut{}, nil
	})
	e, _ := start(t, inproc.New(), engine.Config{}, s)
	ctx := engine.WithEngine(t.Context(), e)
	for _, id := range []string{"", strings.Repeat("x", engine.MaxMessageIDLen+1), "has space", "tab\t", "é"} {
		_, err := Echo2.Invoke(engine.WithMessageID(ctx, id), EchoIn{Text: "a"})
		if !errors.Is(err, engine.ErrInvalidInput) {
			t.Errorf("Invoke with id %q: %v, want ErrInvalidInput", id, err)
		}
		if err := Echo2.Send(engine.WithMessageID(ctx, id), EchoIn{Text: "a"}); !errors.Is(err, engine.ErrInvalidInput) {
			t.Errorf("Send with id %q: %v, want ErrInvalidInput", id, err)
		}
	}
	if _, err := Echo2.Invoke(engine.WithMessageID(ctx, strings.Repeat("x", engine.MaxMessageIDLen)), EchoIn{Text: "a"}); err != nil {
		t.Errorf("an id of MaxMessageIDLen: %v", err)
	}
	if n := handled.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1 (only the valid id)", n)
	}
}

var Echo2 = engine.NewCommand[EchoIn, EchoOut]("msgid-bad", "1", "echo")

// Two calls waiting at once with one id on one engine cannot both be
// matched to their replies: the second is refused, the first answered.
func TestWithMessageIDRefusesASecondWaitingCall(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	s := engine.NewService("msgid-dup", "1")
	engine.Handle(s, Slow, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		entered <- struct{}{}
		<-release
		return EchoOut{Text: in.Text}, nil
	})
	e, _ := start(t, inproc.New(), engine.Config{}, s)
	ctx := engine.WithMessageID(engine.WithEngine(t.Context(), e), "same-id")
	first := make(chan error, 1)
	go func() {
		_, err := Slow.Invoke(ctx, EchoIn{Text: "first"})
		first <- err
	}()
	<-entered
	if _, err := Slow.Invoke(ctx, EchoIn{Text: "second"}); !errors.Is(err, engine.ErrInvalidInput) {
		t.Errorf("second call with a waiting call's id: %v, want ErrInvalidInput", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("first call: %v", err)
	}
}

var Slow = engine.NewCommand[EchoIn, EchoOut]("msgid-dup", "1", "slow")

// A Background function runs once the engine runs, can call services with
// its context, sees that context end when the engine stops, and Stop
// waits for it to return.
func TestServiceBackground(t *testing.T) {
	t.Parallel()
	var returned atomic.Bool
	called := make(chan string, 1)
	s := engine.NewService("bg", "1")
	s.Background(func(ctx context.Context) error {
		out, err := Echo.Invoke(ctx, EchoIn{Text: "from background"})
		if err != nil {
			called <- "error: " + err.Error()
		} else {
			called <- out.Text
		}
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // finishing its work after the stop began
		returned.Store(true)
		return nil
	})
	e, err := engine.New(engine.Config{SharedBridge: inproc.New()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Register(echoService(), s); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-called:
		if got != "from background" {
			t.Fatalf("background Invoke: %s", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("background function not started")
	}
	if err := e.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !returned.Load() {
		t.Error("Stop returned before the background function did")
	}
}

// A nil Background function is reported by Register; an error returned
// before the stop is logged with the service's name.
func TestServiceBackgroundErrors(t *testing.T) {
	t.Parallel()
	bad := engine.NewService("bg-nil", "1")
	bad.Background(nil)
	e, err := engine.New(engine.Config{SharedBridge: inproc.New()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Register(bad); err == nil || !strings.Contains(err.Error(), "Background") {
		t.Errorf("Register with a nil Background: %v", err)
	}

	failing := engine.NewService("bg-fail", "1")
	failing.Background(func(ctx context.Context) error { return errors.New("store unreachable") })
	_, logs := start(t, inproc.New(), engine.Config{}, failing)
	waitLog(t, logs, "store unreachable")
	if !strings.Contains(logs.String(), "bg-fail.v1") {
		t.Errorf("log does not name the service:\n%s", logs.String())
	}
}

// A handler's own messages never inherit the id its caller chose: each
// gets a fresh one (two messages with one id would be one to an inbox).
func TestWithMessageIDIsNotInheritedByTheHandler(t *testing.T) {
	t.Parallel()
	front := engine.NewService("front", "1")
	engine.Handle(front, Nested, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		return Echo.Invoke(ctx, in)
	})
	e, _ := start(t, inproc.New(), engine.Config{}, front, echoService())
	out, err := Nested.Invoke(engine.WithMessageID(engine.WithEngine(t.Context(), e), "chosen"), EchoIn{Text: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Meta.MessageID == "chosen" || out.Meta.CausationID != "chosen" {
		t.Errorf("nested message id %q caused by %q; want a fresh id caused by \"chosen\"", out.Meta.MessageID, out.Meta.CausationID)
	}
}
