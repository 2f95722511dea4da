package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

type EchoIn struct {
	Text  string `json:"text"`
	Count int    `json:"count"`
}

func (in EchoIn) Validate() error {
	if in.Text == "invalid" {
		return engine.Invalid("text", "must not be \"invalid\"")
	}
	return nil
}

type EchoOut struct {
	Text string `json:"text"`
	Meta engine.Meta
}

var (
	Echo   = engine.NewCommand[EchoIn, EchoOut]("echo", "1", "echo")
	Nested = engine.NewCommand[EchoIn, EchoOut]("front", "1", "nested")
	Echoed = engine.NewEvent[EchoOut]("echo.echoed")
)

// start runs an engine with services on bus until the test ends.
func start(t *testing.T, bus bridge.Bridge, cfg engine.Config, services ...*engine.Service) (*engine.Engine, *testenv.LogBuffer) {
	t.Helper()
	sink := &testenv.LogBuffer{}
	cfg.SharedBridge = bus
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Register(services...); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	return e, sink
}

func echoService(opts ...engine.HandlerOption) *engine.Service {
	s := engine.NewService("echo", "1")
	engine.Handle(s, Echo, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		return EchoOut{Text: strings.Repeat(in.Text, max(in.Count, 1)), Meta: engine.MetaFrom(ctx)}, nil
	}, opts...)
	return s
}

func TestRoundTripAndMetadataFlow(t *testing.T) {
	bus := inproc.New()
	front := engine.NewService("front", "1")
	engine.Handle(front, Nested, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		out, err := Echo.Invoke(ctx, in)
		if err != nil {
			return EchoOut{}, err
		}
		out.Text = "front:" + out.Text
		return out, nil
	})
	e, _ := start(t, bus, engine.Config{}, front, echoService())

	edge := engine.Meta{CorrelationID: "corr-1", PrincipalID: "alice", TenantID: "acme",
		Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	ctx, cancel := context.WithTimeout(engine.WithMeta(engine.WithEngine(t.Context(), e), edge), 5*time.Second)
	defer cancel()
	deadline, _ := ctx.Deadline()
	out, err := Nested.Invoke(ctx, EchoIn{Text: "hi", Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	if out.Text != "front:hihi" {
		t.Errorf("Text = %q", out.Text)
	}
	m := out.Meta // the meta the innermost handler saw
	if m.CorrelationID != "corr-1" || m.PrincipalID != "alice" || m.TenantID != "acme" {
		t.Errorf("correlation/principal/tenant did not flow: %+v", m)
	}
	if envelope.TraceID(m.Traceparent) != "4bf92f3577b34da6a3ce929d0e0e4736" || m.Traceparent == edge.Traceparent {
		t.Errorf("traceparent %q: want same trace, new span", m.Traceparent)
	}
	if m.MessageID == "" || m.CausationID == "" || m.CausationID == m.MessageID {
		t.Errorf("message/causation ids: %+v", m)
	}
	if m.Deadline.IsZero() || m.Deadline.After(deadline) {
		t.Errorf("deadline %v, want at most the caller's %v", m.Deadline, deadline)
	}
}

func TestEdgeCallStartsNewConversation(t *testing.T) {
	e, _ := start(t, inproc.New(), engine.Config{}, echoService())
	out, err := Echo.Invoke(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Meta.CorrelationID != out.Meta.MessageID || out.Meta.CausationID != "" {
		t.Errorf("edge call: correlation %q, message %q, causation %q", out.Meta.CorrelationID, out.Meta.MessageID, out.Meta.CausationID)
	}
	if !envelope.ValidTraceparent(out.Meta.Traceparent) {
		t.Errorf("no trace started: %q", out.Meta.Traceparent)
	}
}

func TestErrorsCrossTheWire(t *testing.T) {
	svc := engine.NewService("err", "1")
	handled := engine.NewCommand[EchoIn, EchoOut]("err", "1", "handled")
	unexpected := engine.NewCommand[EchoIn, EchoOut]("err", "1", "unexpected")
	panics := engine.NewCommand[EchoIn, EchoOut]("err", "1", "panics")
	wrapped := engine.NewCommand[EchoIn, EchoOut]("err", "1", "wrapped")
	engine.Handle(svc, handled, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		return EchoOut{}, &engine.Error{Code: 409, Message: "taken", Details: map[string]any{"id": "42"}}
	})
	engine.Handle(svc, unexpected, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		return EchoOut{}, errors.New("secret connection string postgres://admin:hunter2@db")
	})
	engine.Handle(svc, panics, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		panic("secret panic value")
	})
	engine.Handle(svc, wrapped, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		return EchoOut{}, fmt.Errorf("looking up: %w", engine.ErrNotFound)
	})
	e, logs := start(t, inproc.New(), engine.Config{}, svc)
	ctx := engine.WithEngine(t.Context(), e)

	_, err := handled.Invoke(ctx, EchoIn{Text: "a"})
	var ee *engine.Error
	if !errors.As(err, &ee) || ee.Code != 409 || ee.Message != "taken" || ee.Details["id"] != "42" {
		t.Errorf("handled error arrived as %#v", err)
	}
	if !errors.Is(err, engine.ErrConflict) || errors.Is(err, engine.ErrNotFound) {
		t.Errorf("errors.Is by code broken for %v", err)
	}

	_, err = wrapped.Invoke(ctx, EchoIn{Text: "a"})
	if !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("wrapped sentinel arrived as %v", err)
	}

	for _, c := range []*engine.Command[EchoIn, EchoOut]{unexpected, panics} {
		_, err = c.Invoke(ctx, EchoIn{Text: "a"})
		if !errors.Is(err, engine.ErrInternal) {
			t.Errorf("%s: got %v, want ErrInternal", c, err)
		}
		if strings.Contains(err.Error(), "secret") || strings.Contains(fmt.Sprint(ee), "hunter2") {
			t.Errorf("%s: internals leaked to the caller: %v", c, err)
		}
	}
	log := logs.String()
	if !strings.Contains(log, "hunter2") || !strings.Contains(log, "secret panic value") || !strings.Contains(log, "runtime/debug.Stack") {
		t.Errorf("service-side log lacks the original error or the panic stack:\n%s", log)
	}
	// the engine still serves after a panic
	if _, err := handled.Invoke(ctx, EchoIn{Text: "again"}); !errors.Is(err, engine.ErrConflict) {
		t.Errorf("after panic: %v", err)
	}
}

func TestTimeouts(t *testing.T) {
	svc := engine.NewService("slow", "1")
	slow := engine.NewCommand[EchoIn, EchoOut]("slow", "1", "sleep")
	release := make(chan struct{})
	var started atomic.Int32
	engine.Handle(svc, slow, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		started.Add(1)
		if in.Text == "forever" {
			<-release // ignores its context: never returns on its own
			return EchoOut{}, nil
		}
		select {
		case <-time.After(time.Duration(in.Count) * time.Millisecond):
			return EchoOut{Text: in.Text}, nil
		case <-ctx.Done():
			return EchoOut{}, ctx.Err()
		}
	}, engine.Concurrency(1))
	e, logs := start(t, inproc.New(), engine.Config{CallTimeout: 300 * time.Millisecond}, svc, echoService())
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	defer free()
	ctx := engine.WithEngine(t.Context(), e)

	// default timeout
	if _, err := slow.Invoke(ctx, EchoIn{Text: "a", Count: 2000}); !errors.Is(err, engine.ErrTimeout) {
		t.Errorf("default timeout: %v", err)
	}
	// per-call timeout overrides the default
	if out, err := slow.Invoke(ctx, EchoIn{Text: "b", Count: 500}, engine.CallTimeout(3*time.Second)); err != nil || out.Text != "b" {
		t.Errorf("per-call timeout: %v %v", out, err)
	}
	// the caller's context deadline wins when earlier
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := slow.Invoke(short, EchoIn{Text: "c", Count: 2000}, engine.CallTimeout(5*time.Second)); !errors.Is(err, engine.ErrTimeout) {
		t.Errorf("context deadline: %v", err)
	}
	// a cancelled context is not a timeout
	cctx, ccancel := context.WithCancel(ctx)
	go func() { time.Sleep(50 * time.Millisecond); ccancel() }()
	if _, err := slow.Invoke(cctx, EchoIn{Text: "d", Count: 2000}); !errors.Is(err, context.Canceled) || errors.Is(err, engine.ErrTimeout) {
		t.Errorf("cancelled: %v", err)
	}
	// a handler that ignores its context: the caller times out; the handler
	// keeps its message, and its slot, until it returns, then serves the
	// next call.
	if _, err := slow.Invoke(ctx, EchoIn{Text: "forever"}); !errors.Is(err, engine.ErrTimeout) {
		t.Errorf("hung handler: %v", err)
	}
	free()
	if out, err := slow.Invoke(ctx, EchoIn{Text: "next", Count: 1}, engine.CallTimeout(3*time.Second)); err != nil || out.Text != "next" {
		t.Errorf("after a hung handler: %v %v", out, err)
	}
	if _, err := Echo.Invoke(ctx, EchoIn{Text: "other"}); err != nil {
		t.Errorf("other service after a hung handler: %v", err)
	}
	waitLog(t, logs, "reply arrived after its caller stopped waiting")
	if e.UnsolicitedReplies() == 0 {
		t.Error("late replies not counted")
	}
}

func waitLog(t *testing.T, logs *testenv.LogBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), want); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q:\n%s", want, logs.String())
		}
	}
}

func TestNoHandlerAndNoEngine(t *testing.T) {
	e, _ := start(t, inproc.New(), engine.Config{}, echoService())
	missing := engine.NewCommand[EchoIn, EchoOut]("ghost", "1", "boo")
	_, err := missing.Invoke(engine.WithEngine(t.Context(), e), EchoIn{Text: "a"})
	if !errors.Is(err, engine.ErrNoHandler) || !errors.Is(err, engine.ErrUnavailable) || errors.Is(err, engine.ErrCircuitOpen) {
		t.Errorf("missing handler: %v", err)
	}
	if _, err := Echo.Invoke(t.Context(), EchoIn{Text: "a"}); !errors.Is(err, engine.ErrNoEngine) {
		t.Errorf("no engine: %v", err)
	}
	if err := Echoed.Emit(t.Context(), EchoOut{}); !errors.Is(err, engine.ErrNoEngine) {
		t.Errorf("emit without engine: %v", err)
	}
}

// raw publishes payload with metadata md to topic and returns the reply.
func raw(t *testing.T, bus bridge.Bridge, topic string, payload []byte, md map[string]string) *message.Message {
	t.Helper()
	inst := "raw" + watermill.NewShortUUID()[:8]
	sub, err := bus.Subscriber(t.Context(), bridge.Spec{Topic: "reply." + inst, Group: inst, Kind: bridge.Reply, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(t.Context(), "reply."+inst)
	if err != nil {
		t.Fatal(err)
	}
	msg := message.NewMessage(watermill.NewUUID(), payload)
	for k, v := range md {
		msg.Metadata.Set(k, v)
	}
	msg.Metadata.Set(envelope.KeyReplyTo, "reply."+inst)
	if err := bus.Publisher().Publish(topic, msg); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		r.Ack()
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no reply")
		return nil
	}
}

func TestBadInputGetsAClearAnswer(t *testing.T) {
	bus := inproc.New()
	e, _ := start(t, bus, engine.Config{MaxPayloadBytes: 1024}, echoService())
	cases := []struct {
		name, payload string
		code          int
		field, text   string
	}{
		{"invalid JSON", `{"text":`, 400, "", "malformed JSON"},
		{"not JSON", `hello`, 400, "", "malformed JSON"},
		{"wrong type", `{"text": 5}`, 400, "text", "want a string, got JSON number"},
		{"unknown field", `{"text":"a","colour":"red"}`, 400, "colour", "unknown field"},
		{"empty", ``, 400, "", "empty payload"},
		{"null", `null`, 400, "", "empty payload"},
		{"trailing data", `{"text":"a"} {"text":"b"}`, 400, "", "after the JSON value"},
		{"fails Validate", `{"text":"invalid"}`, 400, "text", "must not be"},
		{"oversized", `{"text":"` + strings.Repeat("x", 2000) + `"}`, 413, "", "limit is 1024"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := raw(t, bus, Echo.String(), []byte(c.payload), nil)
			if r.Metadata.Get(envelope.KeyError) != "1" {
				t.Fatalf("reply is not an error: %s", r.Payload)
			}
			we := envelope.UnmarshalError(r.Payload)
			if we.Code != c.code || !strings.Contains(we.Message, c.text) {
				t.Errorf("got %d %q, want %d containing %q", we.Code, we.Message, c.code, c.text)
			}
			if c.field != "" && we.Details["field"] != c.field {
				t.Errorf("details %v, want field %q", we.Details, c.field)
			}
		})
	}
	// The caller's side refuses invalid and oversized input before sending.
	ctx := engine.WithEngine(t.Context(), e)
	if _, err := Echo.Invoke(ctx, EchoIn{Text: "invalid"}); !errors.Is(err, engine.ErrInvalidInput) {
		t.Errorf("caller-side Validate: %v", err)
	}
	if _, err := Echo.Invoke(ctx, EchoIn{Text: strings.Repeat("y", 2000)}); !errors.Is(err, engine.ErrPayloadTooLarge) {
		t.Errorf("caller-side size limit: %v", err)
	}
	// A message with no metadata at all is still handled and answered.
	r := raw(t, bus, Echo.String(), []byte(`{"text":"bare"}`), nil)
	var out EchoOut
	if err := json.Unmarshal(r.Payload, &out); err != nil || out.Text != "bare" || out.Meta.CorrelationID == "" {
		t.Errorf("bare message: %s %v", r.Payload, err)
	}
	// and the engine still serves typed calls
	if _, err := Echo.Invoke(ctx, EchoIn{Text: "fine"}); err != nil {
		t.Error(err)
	}
}

func TestUnknownFieldPolicy(t *testing.T) {
	bus := inproc.New()
	start(t, bus, engine.Config{}, echoService(engine.AllowUnknownFields()))
	r := raw(t, bus, Echo.String(), []byte(`{"text":"a","colour":"red"}`), nil)
	if r.Metadata.Get(envelope.KeyError) == "1" {
		t.Fatalf("AllowUnknownFields handler rejected an unknown field: %s", r.Payload)
	}
}

// TestMiddlewareScopes: middleware runs at three scopes, outermost first:
// the engine's (Engine.Use), the service's (Service.Use), the handler's
// (the Use option); a guard answers the caller, a shaping middleware edits
// the reply. Engine.Use is refused once the engine has started, like
// Register, and then adds nothing.
func TestMiddlewareScopes(t *testing.T) {
	var mu sync.Mutex
	var order []string
	mark := func(name string) message.HandlerMiddleware {
		return func(h message.HandlerFunc) message.HandlerFunc {
			return func(msg *message.Message) ([]*message.Message, error) {
				mu.Lock()
				order = append(order, name)
				mu.Unlock()
				return h(msg)
			}
		}
	}
	guard := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if engine.MetaFrom(msg.Context()).PrincipalID == "" {
				return nil, engine.ErrUnauthorized
			}
			return h(msg)
		}
	}
	shape := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			for _, m := range out {
				m.Payload = bytes.ToUpper(m.Payload)
			}
			return out, err
		}
	}
	svc := echoService(engine.Use(mark("handler"), guard, shape))
	svc.Use(mark("service"))
	e, err := engine.New(engine.Config{SharedBridge: inproc.New(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Use(mark("engine")); err != nil {
		t.Fatal(err)
	}
	if err := e.Register(svc); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	ctx := engine.WithEngine(t.Context(), e)

	if _, err := Echo.Invoke(ctx, EchoIn{Text: "a"}); !errors.Is(err, engine.ErrUnauthorized) {
		t.Fatalf("guard: %v", err)
	}
	out, err := Echo.Invoke(engine.WithMeta(ctx, engine.Meta{PrincipalID: "bob"}), EchoIn{Text: "abc"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Text != "ABC" {
		t.Errorf("shaping middleware: Text = %q", out.Text)
	}

	if err := e.Use(mark("late")); err == nil || !strings.Contains(err.Error(), "Use after Start") {
		t.Errorf("Use after Start: %v, want an error", err)
	}
	if _, err := Echo.Invoke(engine.WithMeta(ctx, engine.Meta{PrincipalID: "bob"}), EchoIn{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(order, ","); got != "engine,service,handler,engine,service,handler,engine,service,handler" {
		t.Errorf("order %s", got)
	}
}

// TestUseRefusesNilMiddleware: a nil middleware is an error at every
// scope (Engine.Use at once, adding none of its arguments; Service.Use and
// the Use option at Register), not a panic when the engine starts.
func TestUseRefusesNilMiddleware(t *testing.T) {
	var ran atomic.Int32
	counted := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) { ran.Add(1); return h(msg) }
	}
	e, err := engine.New(engine.Config{SharedBridge: inproc.New(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Use(counted, nil); err == nil || !strings.Contains(err.Error(), "middleware 2 of 2 is nil") {
		t.Errorf("Use(mw, nil): %v, want an error naming the second", err)
	}
	bad := echoService(engine.Use(nil))
	bad.Use(counted, nil)
	err = e.Register(bad)
	for _, want := range []string{"echo.v1: in Service.Use: middleware 2 of 2 is nil", "echo: in the Use option: middleware 1 of 1 is nil"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Register does not report %q: %v", want, err)
		}
	}

	if err := e.Register(echoService()); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	if _, err := Echo.Invoke(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	if n := ran.Load(); n != 0 {
		t.Errorf("a middleware from a refused Use ran %d times", n)
	}
}

func TestSuccessEventAndSubscriptions(t *testing.T) {
	announce := engine.NewCommand[EchoIn, EchoOut]("echo", "2", "announce").EmitsOnSuccess(Echoed)
	v2 := engine.NewService("echo", "2")
	engine.Handle(v2, announce, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		return EchoOut{Text: in.Text + "!"}, nil
	})
	got := make(chan string, 10)
	listen := func(name string) *engine.Service {
		s := engine.NewService(name, "1")
		engine.Subscribe(s, Echoed, func(ctx context.Context, ev EchoOut) error {
			got <- name + ":" + ev.Text + ":" + engine.MetaFrom(ctx).PrincipalID
			return nil
		})
		return s
	}
	// echo v1 and v2 side by side, two subscribing services
	e, _ := start(t, inproc.New(), engine.Config{}, echoService(), v2, listen("a"), listen("b"))
	ctx := engine.WithMeta(engine.WithEngine(t.Context(), e), engine.Meta{PrincipalID: "p"})
	if _, err := announce.Invoke(ctx, EchoIn{Text: "hey"}); err != nil {
		t.Fatal(err)
	}
	if out, err := Echo.Invoke(ctx, EchoIn{Text: "v1"}); err != nil || out.Text != "v1" {
		t.Fatalf("v1 beside v2: %v %v", out, err)
	}
	seen := map[string]bool{}
	for range 2 {
		select {
		case s := <-got:
			seen[s] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("events seen: %v", seen)
		}
	}
	if !seen["a:hey!:p"] || !seen["b:hey!:p"] {
		t.Errorf("events seen: %v", seen)
	}
	select {
	case s := <-got:
		t.Errorf("extra event %s", s)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestSubscriptionRedeliveredAfterError(t *testing.T) {
	var calls atomic.Int32
	s := engine.NewService("flaky", "1")
	done := make(chan struct{})
	engine.Subscribe(s, Echoed, func(ctx context.Context, ev EchoOut) error {
		if calls.Add(1) < 3 {
			return errors.New("transient")
		}
		close(done)
		return nil
	})
	e, _ := start(t, inproc.New(), engine.Config{}, s)
	if err := Echoed.Emit(engine.WithEngine(t.Context(), e), EchoOut{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("handled %d times, not redelivered to success", calls.Load())
	}
}

func TestConcurrencyOption(t *testing.T) {
	const n = 4
	var inFlight, peak atomic.Int32
	gate := make(chan struct{})
	svc := engine.NewService("conc", "1")
	cmd := engine.NewCommand[EchoIn, EchoOut]("conc", "1", "wait")
	engine.Handle(svc, cmd, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		cur := inFlight.Add(1)
		for p := peak.Load(); cur > p && !peak.CompareAndSwap(p, cur); p = peak.Load() {
		}
		<-gate
		inFlight.Add(-1)
		return EchoOut{}, nil
	}, engine.Concurrency(n))
	e, _ := start(t, inproc.New(), engine.Config{}, svc)
	var wg sync.WaitGroup
	for range 2 * n {
		wg.Go(func() { _, _ = cmd.Invoke(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"}) })
	}
	for deadline := time.Now().Add(5 * time.Second); inFlight.Load() < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d handlers in flight, want %d", inFlight.Load(), n)
		}
	}
	time.Sleep(50 * time.Millisecond)
	close(gate)
	wg.Wait()
	if peak.Load() != n {
		t.Errorf("peak concurrency %d, want exactly %d", peak.Load(), n)
	}
}

func TestLifecycle(t *testing.T) {
	bus := inproc.New()
	release := make(chan struct{})
	svc := engine.NewService("drain", "1")
	cmd := engine.NewCommand[EchoIn, EchoOut]("drain", "1", "work")
	entered := make(chan struct{}, 1)
	engine.Handle(svc, cmd, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		entered <- struct{}{}
		<-release
		return EchoOut{Text: "done"}, nil
	})
	srv, err := engine.New(engine.Config{SharedBridge: bus, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Register(svc); err != nil {
		t.Fatal(err)
	}
	if err := srv.Health(t.Context()); !errors.Is(err, engine.ErrNotReady) {
		t.Errorf("Health before start: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	runErr := make(chan error, 1)
	go func() { runErr <- srv.Run(ctx) }()
	<-srv.Ready()
	if err := srv.Health(t.Context()); err != nil {
		t.Fatalf("Health while running: %v", err)
	}
	caller, _ := start(t, bus, engine.Config{})
	reply := make(chan error, 1)
	go func() {
		out, err := cmd.Invoke(engine.WithEngine(t.Context(), caller), EchoIn{Text: "x"})
		if err == nil && out.Text != "done" {
			err = fmt.Errorf("got %q", out.Text)
		}
		reply <- err
	}()
	<-entered
	cancel() // SIGTERM-equivalent while a handler is in flight
	time.Sleep(100 * time.Millisecond)
	if err := srv.Health(t.Context()); !errors.Is(err, engine.ErrNotReady) || !strings.Contains(err.Error(), "draining") {
		t.Errorf("Health while draining: %v", err)
	}
	close(release)
	if err := <-reply; err != nil {
		t.Errorf("in-flight call during drain: %v", err)
	}
	if err := <-runErr; err != nil {
		t.Errorf("Run: %v", err)
	}
	if srv.State() != engine.StateStopped {
		t.Errorf("state %s", srv.State())
	}

	// Stop with nothing in flight is quick (Watermill's router alone would
	// wait its whole close timeout if it never ran: #697).
	idle, err := engine.New(engine.Config{SharedBridge: bus, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	_ = idle.Register(echoService())
	if err := idle.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if err := idle.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > time.Second {
		t.Errorf("idle Stop took %s", d)
	}
	neverRan, _ := engine.New(engine.Config{SharedBridge: bus})
	began = time.Now()
	if err := neverRan.Stop(t.Context()); err != nil || time.Since(began) > time.Second {
		t.Errorf("Stop of a never-started engine: %v after %s", err, time.Since(began))
	}
}

func TestConfigAndRegistrationErrors(t *testing.T) {
	err := engine.Config{CallTimeout: -1, DrainTimeout: -1, MaxPayloadBytes: -5, CommandConcurrency: -1, InstanceID: "bad id!", Bridge: "nats://x", SharedBridge: inproc.New()}.Validate()
	for _, want := range []string{"CallTimeout", "DrainTimeout", "MaxPayloadBytes", "CommandConcurrency", "instance name", "both Bridge and SharedBridge"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate does not report %s: %v", want, err)
		}
	}
	if _, err := engine.New(engine.Config{Bridge: "carrier-pigeon://coop"}); !errors.Is(err, bridge.ErrUnknownScheme) {
		t.Errorf("unknown scheme: %v", err)
	}
	if _, err := engine.New(engine.Config{Bridge: "::not a url"}); !errors.Is(err, bridge.ErrBadURL) {
		t.Errorf("bad URL: %v", err)
	}

	e, err := engine.New(engine.Config{SharedBridge: inproc.New()})
	if err != nil {
		t.Fatal(err)
	}
	wrong := engine.NewService("other", "1")
	engine.Handle(wrong, Echo, func(ctx context.Context, in EchoIn) (EchoOut, error) { return EchoOut{}, nil })
	dup := echoService()
	engine.Handle(dup, Echo, func(ctx context.Context, in EchoIn) (EchoOut, error) { return EchoOut{}, nil })
	err = e.Register(wrong, dup, engine.NewService("Bad Name", "x"))
	for _, want := range []string{"does not belong to service other.v1", "two handlers", "invalid service name", "invalid version"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Register does not report %q: %v", want, err)
		}
	}
	if err := e.Register(echoService()); err != nil {
		t.Fatal(err)
	}
	if err := e.Register(echoService()); err == nil || !strings.Contains(err.Error(), "registered twice") {
		t.Errorf("second registration: %v", err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("NewCommand with an invalid name did not panic")
			}
		}()
		engine.NewCommand[EchoIn, EchoOut]("svc", "1", "has space")
	}()
}

type recordingPublisher struct {
	mu     sync.Mutex
	topics []string
}

func (p *recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range msgs {
		p.topics = append(p.topics, topic)
	}
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

func TestWithPublisherRedirectsEmitAndSend(t *testing.T) {
	got := make(chan string, 1)
	s := engine.NewService("listener", "1")
	engine.Subscribe(s, Echoed, func(ctx context.Context, ev EchoOut) error { got <- ev.Text; return nil })
	e, _ := start(t, inproc.New(), engine.Config{}, s, echoService())
	rec := &recordingPublisher{}
	ctx := engine.WithPublisher(engine.WithEngine(t.Context(), e), rec)
	if err := Echoed.Emit(ctx, EchoOut{Text: "via outbox"}); err != nil {
		t.Fatal(err)
	}
	if err := Echo.Send(ctx, EchoIn{Text: "fire"}); err != nil {
		t.Fatal(err)
	}
	if len(rec.topics) != 2 || rec.topics[0] != "event.echo.echoed" || rec.topics[1] != "echo.v1.echo" {
		t.Errorf("publisher got %v", rec.topics)
	}
	select {
	case text := <-got:
		t.Errorf("the bridge delivered %q although ctx carried another publisher", text)
	case <-time.After(100 * time.Millisecond):
	}
	// Invoke still goes through the bridge: it waits for a reply.
	if out, err := Echo.Invoke(ctx, EchoIn{Text: "rpc"}); err != nil || out.Text != "rpc" {
		t.Errorf("Invoke with a publisher in ctx: %v %v", out, err)
	}
}
