package middleware_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/middleware"
)

//go:noinline
func panickingHandler(msg *message.Message) ([]*message.Message, error) {
	var fields []string
	return nil, errors.New(fields[len(msg.Payload)]) // index out of range: a runtime panic, as in real bugs
}

func TestRecovererTurnsPanicIntoPanicError(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	msg := newMsg(context.Background())
	out, err := middleware.Recoverer(log)(panickingHandler)(msg)
	if out != nil {
		t.Errorf("out = %v, want nil", out)
	}
	var p *middleware.PanicError
	if !errors.As(err, &p) {
		t.Fatalf("err = %v (%T), want a *PanicError", err, err)
	}
	if _, ok := p.Value.(error); !ok || !strings.Contains(p.Error(), "index out of range") {
		t.Errorf("PanicError: Value %v, Error %q; want the runtime error", p.Value, p.Error())
	}
	if !strings.Contains(p.Stack, "panickingHandler") {
		t.Errorf("Stack does not name the panicking function:\n%s", p.Stack)
	}
	if middleware.IsPermanent(err) {
		t.Error("a panic must be transient")
	}
	logged := buf.String()
	for _, want := range []string{"handler panicked", msg.UUID, "panickingHandler", "index out of range"} {
		if !strings.Contains(logged, want) {
			t.Errorf("log lacks %q:\n%s", want, logged)
		}
	}
}

func TestRecovererPanicValue(t *testing.T) {
	t.Parallel()
	type custom struct{ code int }
	_, err := middleware.Recoverer(quiet)(func(*message.Message) ([]*message.Message, error) {
		panic(custom{42})
	})(newMsg(context.Background()))
	var p *middleware.PanicError
	if !errors.As(err, &p) || p.Value != (custom{42}) {
		t.Errorf("err = %v, want a *PanicError with the panic's value", err)
	}
}

func TestRecovererPassesResultsThrough(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	out := []*message.Message{newMsg(context.Background())}
	got, err := middleware.Recoverer(slog.New(slog.NewTextHandler(&buf, nil)))(func(*message.Message) ([]*message.Message, error) {
		return out, errTransient
	})(newMsg(context.Background()))
	if len(got) != 1 || got[0] != out[0] || !errors.Is(err, errTransient) {
		t.Errorf("got %v, %v; want the handler's results", got, err)
	}
	if buf.Len() != 0 {
		t.Errorf("logged without a panic: %s", buf.String())
	}
}

// Retry sees a recovered panic as a transient failure and tries again.
func TestRecovererInsideRetry(t *testing.T) {
	t.Parallel()
	calls := 0
	h := func(*message.Message) ([]*message.Message, error) {
		calls++
		if calls == 1 {
			panic("first time only")
		}
		return nil, nil
	}
	if _, err := fast(3).Middleware()(middleware.Recoverer(quiet)(h))(newMsg(context.Background())); err != nil {
		t.Fatalf("err = %v, want success on the retry", err)
	}
	if calls != 2 {
		t.Errorf("%d calls, want 2", calls)
	}
}
