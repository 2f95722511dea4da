package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/envelope"
)

const testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// TestHugeTracestateIsNotCopied: an 8 MiB tracestate given at the edge
// reaches no message, however small the payload limit.
func TestHugeTracestateIsNotCopied(t *testing.T) {
	front := engine.NewService("front", "1")
	engine.Handle(front, Nested, func(ctx context.Context, in EchoIn) (EchoOut, error) { return Echo.Invoke(ctx, in) })
	e, _ := start(t, inproc.New(), engine.Config{MaxPayloadBytes: 1024}, front, echoService())
	ctx := engine.WithMeta(engine.WithEngine(t.Context(), e), engine.Meta{Traceparent: testTraceparent, Tracestate: "k=" + strings.Repeat("v", 8<<20)})
	out, err := Nested.Invoke(ctx, EchoIn{Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Meta.Tracestate != "" || envelope.TraceID(out.Meta.Traceparent) != envelope.TraceID(testTraceparent) {
		t.Errorf("innermost handler saw a %d-byte tracestate, trace %s", len(out.Meta.Tracestate), out.Meta.Traceparent)
	}
}

// countingEcho is echoService counting its runs.
func countingEcho(runs *atomic.Int32) *engine.Service {
	s := engine.NewService("echo", "1")
	engine.Handle(s, Echo, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		runs.Add(1)
		return EchoOut{Text: in.Text, Meta: engine.MetaFrom(ctx)}, nil
	})
	return s
}

// TestOversizedMetadataIsAnswered: a command whose metadata is over a
// limit is answered with a 431 and never runs; the caller's side refuses
// to send such metadata at all.
func TestOversizedMetadataIsAnswered(t *testing.T) {
	var runs atomic.Int32
	bus := inproc.New()
	e, _ := start(t, bus, engine.Config{}, countingEcho(&runs))
	big := strings.Repeat("p", envelope.MaxMetadataEntryBytes)
	for name, md := range map[string]map[string]string{
		"entry": {envelope.KeyPrincipalID: big},
		"total": {"a": big[:4000], "b": big[:4000], "c": big[:4000], "d": big[:4000], "e": big[:4000]},
	} {
		r := raw(t, bus, Echo.String(), []byte(`{"text":"x"}`), md)
		we := envelope.UnmarshalError(r.Payload)
		if r.Metadata.Get(envelope.KeyError) != "1" || !errors.Is(we, engine.ErrMetadataTooLarge) {
			t.Errorf("%s: reply %s, want a 431", name, r.Payload)
		}
		if len(r.Metadata.Get(envelope.KeyPrincipalID)) > 0 {
			t.Errorf("%s: the error reply carries the oversized principal", name)
		}
	}
	ctx := engine.WithMeta(engine.WithEngine(t.Context(), e), engine.Meta{PrincipalID: big})
	if _, err := Echo.Invoke(ctx, EchoIn{Text: "x"}); !errors.Is(err, engine.ErrMetadataTooLarge) {
		t.Errorf("Invoke with an oversized principal: %v, want ErrMetadataTooLarge", err)
	}
	if err := Echo.Send(ctx, EchoIn{Text: "x"}); !errors.Is(err, engine.ErrMetadataTooLarge) {
		t.Errorf("Send with an oversized principal: %v, want ErrMetadataTooLarge", err)
	}
	if err := Echoed.Emit(ctx, EchoOut{Text: "x"}); !errors.Is(err, engine.ErrMetadataTooLarge) {
		t.Errorf("Emit with an oversized principal: %v, want ErrMetadataTooLarge", err)
	}
	if n := runs.Load(); n != 0 {
		t.Errorf("the handler ran %d times", n)
	}
}

// TestOversizedMetadataEventIsDeadLettered: an event over the limits is
// dead-lettered at once as permanent, not redelivered.
func TestOversizedMetadataEventIsDeadLettered(t *testing.T) {
	var runs atomic.Int32
	svc := engine.NewService("jobs", "1")
	engine.Subscribe(svc, Job, func(ctx context.Context, in EchoIn) error { runs.Add(1); return nil })
	store := deadletter.NewMemory()
	bus := inproc.New()
	start(t, bus, engine.Config{Reliability: engine.Reliability{DeadLetters: store}}, svc)
	msg := message.NewMessage(watermill.NewUUID(), []byte(`{"text":"x"}`))
	msg.Metadata.Set(envelope.KeyTracestate, strings.Repeat("v", 20000))
	if err := bus.Publisher().Publish("event."+Job.String(), msg); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a dead letter", func() bool { return len(deadLetters(t, store)) == 1 })
	time.Sleep(100 * time.Millisecond)
	r := deadLetters(t, store)[0]
	if r.ErrorKind != deadletter.KindPermanent || !strings.Contains(r.Error, "431") || runs.Load() != 0 {
		t.Errorf("dead letter %s %q, handler runs %d", r.ErrorKind, r.Error, runs.Load())
	}
}

// TestTracerDropsLongTracestate: with a recording tracer (whose
// propagator accepts tracestates of several KiB), a tracestate longer than
// envelope.MaxTracestateBytes received on a message is not copied to the
// messages it causes.
func TestTracerDropsLongTracestate(t *testing.T) {
	long := make([]string, 12)
	for i := range long {
		long[i] = fmt.Sprintf("k%d=%s", i, strings.Repeat("v", 200))
	}
	next := engine.NewEvent[EchoIn]("jobs.next")
	svc := engine.NewService("jobs", "1")
	engine.Subscribe(svc, Job, func(ctx context.Context, in EchoIn) error { return next.Emit(ctx, in) })
	bus := inproc.New()
	start(t, bus, engine.Config{TracerProvider: sdktrace.NewTracerProvider()}, svc)
	sub, err := bus.Subscriber(t.Context(), bridge.Spec{Topic: "event.jobs.next", Group: "probe", Kind: bridge.Event, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(t.Context(), "event.jobs.next")
	if err != nil {
		t.Fatal(err)
	}
	for _, ts := range []string{strings.Join(long, ","), "a=1"} {
		msg := message.NewMessage(watermill.NewUUID(), []byte(`{"text":"x"}`))
		msg.Metadata.Set(envelope.KeyTraceparent, testTraceparent)
		msg.Metadata.Set(envelope.KeyTracestate, ts)
		if err := bus.Publisher().Publish("event."+Job.String(), msg); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-ch:
			m.Ack()
			got := m.Metadata.Get(envelope.KeyTracestate)
			if want := ts; len(ts) > envelope.MaxTracestateBytes {
				want = ""
				if got != want {
					t.Errorf("a %d-byte tracestate reached the next message as %d bytes", len(ts), len(got))
				}
			} else if got != want {
				t.Errorf("tracestate %q reached the next message as %q", ts, got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no next event")
		}
	}
}
