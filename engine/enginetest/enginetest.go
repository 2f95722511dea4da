package enginetest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
)

// Harness runs services for one test. Create it with New.
type Harness struct {
	t      testing.TB
	eng    *engine.Engine
	rec    *recorder
	mu     sync.Mutex
	done   map[string]chan error // message id → first handling result
	stubs  map[string]*engine.Service
	extra  []*engine.Service
	config engine.Config
}

// Option configures a Harness.
type Option func(*Harness)

// Stub answers cmd with fn, standing in for the service that owns it.
func Stub[In, Out any](cmd *engine.Command[In, Out], fn func(ctx context.Context, in In) (Out, error)) Option {
	return func(h *Harness) {
		key := cmd.Service() + ".v" + cmd.Version()
		s := h.stubs[key]
		if s == nil {
			s = engine.NewService(cmd.Service(), cmd.Version())
			h.stubs[key] = s
		}
		engine.Handle(s, cmd, fn)
	}
}

// Services runs other services beside the one under test.
func Services(services ...*engine.Service) Option {
	return func(h *Harness) { h.extra = append(h.extra, services...) }
}

// EngineConfig sets the engine's settings (timeouts, limits, reliability).
// Its Bridge and SharedBridge are ignored: the harness always uses a
// private in-process bus.
func EngineConfig(cfg engine.Config) Option {
	return func(h *Harness) { h.config = cfg }
}

// New starts svc (and any Services and stubs) on a private bus, and
// stops everything when the test ends.
func New(t testing.TB, svc *engine.Service, opts ...Option) *Harness {
	t.Helper()
	h := &Harness{t: t, done: map[string]chan error{}, stubs: map[string]*engine.Service{}}
	for _, o := range opts {
		o(h)
	}
	h.rec = &recorder{Bridge: inproc.New()}
	cfg := h.config
	cfg.Bridge = ""
	cfg.SharedBridge = h.rec
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	eng, err := engine.New(cfg)
	if err != nil {
		t.Fatalf("enginetest: %v", err)
	}
	if err := eng.Use(h.track); err != nil {
		t.Fatalf("enginetest: %v", err)
	}
	services := append([]*engine.Service{svc}, h.extra...)
	for _, s := range h.stubs {
		services = append(services, s)
	}
	if err := eng.Register(services...); err != nil {
		t.Fatalf("enginetest: %v", err)
	}
	if err := eng.Start(context.Background()); err != nil {
		t.Fatalf("enginetest: %v", err)
	}
	t.Cleanup(func() {
		_ = eng.Stop(context.Background())
		_ = h.rec.Bridge.Close()
	})
	h.eng = eng
	return h
}

// Engine returns the running engine.
func (h *Harness) Engine() *engine.Engine { return h.eng }

// Context returns a context for Invoke and Emit: the test's own
// (testing.T.Context, which it mirrors: it is cancelled just before the
// test's Cleanup functions run) carrying the harness's engine.
func (h *Harness) Context() context.Context {
	return engine.WithEngine(h.t.Context(), h.eng)
}

// Emitted returns the payloads of every ev emitted so far, in order.
func Emitted[T any](h *Harness, ev *engine.Event[T]) []T {
	h.t.Helper()
	var out []T
	for _, m := range h.rec.published("event." + ev.String()) {
		var v T
		if err := json.Unmarshal(m.Payload, &v); err != nil {
			h.t.Fatalf("enginetest: emitted %s does not decode: %v", ev, err)
		}
		out = append(out, v)
	}
	return out
}

// Deliver emits ev with payload and waits until the first subscription that
// receives it has handled it, returning that handler's error (a failed
// delivery is then redelivered, as on any bridge).
func Deliver[T any](h *Harness, ev *engine.Event[T], payload T) error {
	h.t.Helper()
	if err := ev.Emit(h.Context(), payload); err != nil {
		return err
	}
	msgs := h.rec.published("event." + ev.String())
	id := msgs[len(msgs)-1].UUID
	select {
	case err := <-h.result(id):
		return err
	case <-time.After(10 * time.Second):
		return fmt.Errorf("enginetest: no subscription handled %s within 10 s", ev)
	}
}

func (h *Harness) result(id string) chan error {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.done[id]
	if ch == nil {
		ch = make(chan error, 1)
		h.done[id] = ch
	}
	return ch
}

// track records the first result of handling each message.
func (h *Harness) track(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := next(msg)
		select {
		case h.result(msg.UUID) <- err:
		default:
		}
		return out, err
	}
}

// recorder keeps every message published through the bridge.
type recorder struct {
	bridge.Bridge
	mu   sync.Mutex
	msgs map[string][]*message.Message
}

func (r *recorder) Publisher() message.Publisher { return recPub{r} }

func (r *recorder) published(topic string) []*message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*message.Message(nil), r.msgs[topic]...)
}

type recPub struct{ r *recorder }

func (p recPub) Publish(topic string, msgs ...*message.Message) error {
	p.r.mu.Lock()
	if p.r.msgs == nil {
		p.r.msgs = map[string][]*message.Message{}
	}
	for _, m := range msgs {
		p.r.msgs[topic] = append(p.r.msgs[topic], m.Copy())
	}
	p.r.mu.Unlock()
	return p.r.Bridge.Publisher().Publish(topic, msgs...)
}

func (recPub) Close() error { return nil }

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
