package dispatch_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine/internal/dispatch"
)

var errClose = errors.New("subscriber close failed")

// failingClose is a bridge whose subscribers close, then report errClose.
type failingClose struct{ bridge.Bridge }

func (f failingClose) Subscriber(ctx context.Context, spec bridge.Spec) (message.Subscriber, error) {
	s, err := f.Bridge.Subscriber(ctx, spec)
	return closeFails{s}, err
}

type closeFails struct{ message.Subscriber }

func (c closeFails) Close() error {
	_ = c.Subscriber.Close()
	return errClose
}

func handle(t *testing.T, rt *dispatch.Router, topic string) {
	t.Helper()
	spec := bridge.Spec{Topic: topic, Group: "g", Kind: bridge.Command, Concurrency: 1}
	if err := rt.Handle(t.Context(), "h-"+topic, spec, func(*message.Message) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// Close returns what the subscribers' Close returned, started or not.
// (Their errors used to be dropped.)
func TestCloseReturnsTheSubscribersErrors(t *testing.T) {
	for _, start := range []bool{false, true} {
		bus := inproc.New()
		rt, err := dispatch.New(failingClose{bus}, time.Second, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		handle(t, rt, "a")
		handle(t, rt, "b")
		if start {
			if err := rt.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		err = rt.Close()
		if !errors.Is(err, errClose) {
			t.Errorf("started %v: Close = %v, want the subscribers' error", start, err)
		}
		_ = bus.Close()
	}
}

// runEnd is a slog handler that is slow to log the line Watermill's Run
// logs last, and notes when that is done.
type runEnd struct {
	slog.Handler
	done *atomic.Bool
}

func (h runEnd) Enabled(context.Context, slog.Level) bool { return true }

func (h runEnd) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "All messages processed" {
		time.Sleep(200 * time.Millisecond)
		h.done.Store(true)
	}
	return nil
}

func (h runEnd) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h runEnd) WithGroup(string) slog.Handler      { return h }

// When Close returns, Watermill's Run has returned too: nothing of the
// router runs on. (Close used to return while Run was still finishing.)
func TestCloseWaitsForRunToReturn(t *testing.T) {
	bus := inproc.New()
	defer bus.Close()
	var ran atomic.Bool
	rt, err := dispatch.New(bus, time.Second, slog.New(runEnd{slog.DiscardHandler, &ran}))
	if err != nil {
		t.Fatal(err)
	}
	handle(t, rt, "a")
	if err := rt.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	if !ran.Load() {
		t.Error("Close returned before Watermill's Run did")
	}
}

// Close logs nothing at error level: Watermill's router logs "All handlers
// stopped, closing router" as an error when its handlers all end before its
// own Close has begun, which Close's closing of the subscribers used to
// race (a clean Stop then logged an error now and then).
func TestCloseLogsNoError(t *testing.T) {
	for i := range 200 {
		var sink strings.Builder
		var mu sync.Mutex
		log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &sink}, &slog.HandlerOptions{Level: slog.LevelError}))
		bus := inproc.New()
		rt, err := dispatch.New(bus, time.Second, log)
		if err != nil {
			t.Fatal(err)
		}
		handle(t, rt, "a")
		if err := rt.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := rt.Close(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // Watermill logs from a goroutine of its own
		mu.Lock()
		got := sink.String()
		mu.Unlock()
		if got != "" {
			t.Fatalf("close %d logged:\n%s", i, got)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
