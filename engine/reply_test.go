package engine_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/deadletter"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/envelope"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

// backends opens a bridge on each backend, on the real servers, isolated
// from other tests (own schema, expiring queues, test stream prefix).
func backends() map[string]func(t *testing.T) bridge.Bridge {
	open := func(t *testing.T, raw string) bridge.Bridge {
		t.Helper()
		b, err := bridge.Open(t.Context(), raw)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	return map[string]func(t *testing.T) bridge.Bridge{
		"gochannel": func(t *testing.T) bridge.Bridge { return inproc.New() },
		"nats": func(t *testing.T) bridge.Bridge {
			return open(t, strings.TrimSuffix(testenv.URL(t, testenv.NATS), "/")+"?stream_prefix=SBTEST_&max_age=1h")
		},
		"amqp": func(t *testing.T) bridge.Bridge {
			return open(t, testenv.URL(t, testenv.AMQP)+"?queue_expires=10m")
		},
		"postgres": func(t *testing.T) bridge.Bridge {
			return open(t, testenv.URL(t, testenv.Postgres)+"&schema="+testenv.Schema(t, testenv.PostgresDB(t)))
		},
	}
}

// uniqueName is a service name no other test run uses.
func uniqueName(prefix string) string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	b := []byte(prefix)
	for range 10 {
		b = append(b, letters[rand.IntN(len(letters))])
	}
	return string(b)
}

// natsStreams lists the streams that store subjects under the topics of a
// test's services, and deletes them when the test ends.
func natsStreams(t *testing.T, prefixes ...string) func() []string {
	nc, err := natsgo.Connect(testenv.URL(t, testenv.NATS))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	list := func() []string {
		var out []string
		l := js.ListStreams(context.Background())
		for info := range l.Info() {
			for _, s := range info.Config.Subjects {
				for _, p := range prefixes {
					if strings.HasPrefix(s, p) {
						out = append(out, info.Config.Name)
					}
				}
			}
		}
		return out
	}
	t.Cleanup(func() {
		for _, name := range list() {
			_ = js.DeleteStream(context.Background(), name)
		}
		nc.Close()
	})
	return list
}

// TestForgedReplyToIsRefused: a command whose reply_to is not a reply
// topic (another service's command, a wildcard, spaces, a dot, over 255
// bytes) never runs, its would-be target never runs, it is dead-lettered
// once with the reason and not redelivered; no backend creates anything
// for it. A well-formed reply topic nobody listens on is answered into the
// void: the command runs once and the reply is dropped, with no stream.
func TestForgedReplyToIsRefused(t *testing.T) {
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			bus := open(t)
			victimSvc, echoSvc := uniqueName("victim"), uniqueName("echo")
			var streams func() []string
			if name == "nats" {
				streams = natsStreams(t, victimSvc, echoSvc, "reply.nobody")
			}
			victim := engine.NewCommand[EchoIn, EchoOut](victimSvc, "1", "charge")
			echo := engine.NewCommand[EchoIn, EchoOut](echoSvc, "1", "echo")
			var victimRuns, echoRuns atomic.Int32
			vs, es := engine.NewService(victimSvc, "1"), engine.NewService(echoSvc, "1")
			engine.Handle(vs, victim, func(ctx context.Context, in EchoIn) (EchoOut, error) {
				victimRuns.Add(1)
				return EchoOut{Text: in.Text}, nil
			})
			engine.Handle(es, echo, func(ctx context.Context, in EchoIn) (EchoOut, error) {
				echoRuns.Add(1)
				return EchoOut{Text: in.Text}, nil
			})
			store := deadletter.NewMemory()
			start(t, bus, engine.Config{Reliability: engine.Reliability{DeadLetters: store}}, vs, es)
			var before []string
			if streams != nil {
				before = streams()
			}

			forged := []string{victim.String(), "event.billing.charged", "reply.a b", "reply.*", "reply.>", "reply.x.y", "reply." + strings.Repeat("x", 300), "reply.é"}
			for _, rt := range forged {
				msg := message.NewMessage(watermill.NewUUID(), []byte(`{"text":"pay me"}`))
				msg.Metadata.Set(envelope.KeyReplyTo, rt)
				msg.Metadata.Set(envelope.KeyPrincipalID, "admin")
				if err := bus.Publisher().Publish(echo.String(), msg); err != nil {
					t.Fatal(err)
				}
			}
			waitUntil(t, "every forged command dead-lettered", func() bool { return len(deadLetters(t, store)) == len(forged) })
			time.Sleep(500 * time.Millisecond) // room for redeliveries and stray runs
			if n, m := echoRuns.Load(), victimRuns.Load(); n != 0 || m != 0 {
				t.Errorf("handler runs: echo %d, victim %d; want none", n, m)
			}
			for _, r := range deadLetters(t, store) {
				if r.ErrorKind != deadletter.KindPermanent || !strings.Contains(r.Error, "reply_to") || r.Attempts != 1 {
					t.Errorf("dead letter %s attempts %d: %s", r.ErrorKind, r.Attempts, r.Error)
				}
			}

			// Well-formed, but nobody listens: runs once, reply dropped.
			msg := message.NewMessage(watermill.NewUUID(), []byte(`{"text":"x"}`))
			msg.Metadata.Set(envelope.KeyReplyTo, "reply.nobody"+echoSvc)
			if err := bus.Publisher().Publish(echo.String(), msg); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the command to run", func() bool { return echoRuns.Load() == 1 })
			time.Sleep(500 * time.Millisecond)
			if n := echoRuns.Load(); n != 1 {
				t.Errorf("a command whose caller is gone ran %d times", n)
			}
			if streams != nil {
				if after := streams(); len(after) != len(before) {
					t.Errorf("streams before %v, after %v: a reply created one", before, after)
				}
			}
		})
	}
}

// TestPayloadsWithinTheServersLimit (NATS counts headers in max_payload):
// a request too large for the server is a 413 at the call, the handler
// never runs and the breaker does not count it; a result too large is
// answered with an error at once, and the handler runs once.
func TestPayloadsWithinTheServersLimit(t *testing.T) {
	bus := backends()["nats"](t)
	svc := uniqueName("big")
	natsStreams(t, svc)
	cmd := engine.NewCommand[EchoIn, EchoOut](svc, "1", "big")
	var runs atomic.Int32
	s := engine.NewService(svc, "1")
	engine.Handle(s, cmd, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		runs.Add(1)
		return EchoOut{Text: strings.Repeat("r", in.Count)}, nil
	})
	e, _ := start(t, bus, engine.Config{}, s)
	if lim := e.MaxPayloadBytes(); lim >= engine.DefaultMaxPayloadBytes || lim <= engine.DefaultMaxPayloadBytes-64<<10 {
		t.Errorf("MaxPayloadBytes = %d, want a little under the server's 1 MiB", lim)
	}
	ctx := engine.WithEngine(t.Context(), e)
	for range 8 { // more than the breaker's 5 consecutive failures
		_, err := cmd.Invoke(ctx, EchoIn{Text: strings.Repeat("q", engine.DefaultMaxPayloadBytes-200)}, engine.CallTimeout(5*time.Second))
		if !errors.Is(err, engine.ErrPayloadTooLarge) {
			t.Fatalf("request just under MaxPayloadBytes: %v, want ErrPayloadTooLarge", err)
		}
	}
	if n := runs.Load(); n != 0 {
		t.Errorf("oversized requests ran the handler %d times", n)
	}
	if _, err := cmd.Invoke(ctx, EchoIn{Text: "ok", Count: 10}); err != nil {
		t.Errorf("a small call after them: %v (the breaker must not have counted 413s)", err)
	}

	runs.Store(0)
	began := time.Now()
	_, err := cmd.Invoke(ctx, EchoIn{Count: engine.DefaultMaxPayloadBytes - 200}, engine.CallTimeout(10*time.Second))
	var we *engine.Error
	if !errors.As(err, &we) || we.Code != 500 {
		t.Errorf("result just under MaxPayloadBytes: %v, want a 500 answer", err)
	}
	if time.Since(began) > 5*time.Second {
		t.Errorf("the answer took %s: it must not wait for the deadline", time.Since(began))
	}
	time.Sleep(time.Second) // room for redeliveries
	if n := runs.Load(); n != 1 {
		t.Errorf("the handler ran %d times for one call, want 1", n)
	}
}

// refusing wraps a real bridge; its publisher refuses the first `times`
// replies with err.
type refusing struct {
	bridge.Bridge
	err   error
	times atomic.Int32
}

func (r *refusing) Publisher() message.Publisher { return refusingPub{r.Bridge.Publisher(), r} }

type refusingPub struct {
	message.Publisher
	r *refusing
}

func (p refusingPub) Publish(topic string, msgs ...*message.Message) error {
	if strings.HasPrefix(topic, "reply.") && msgs[0].Metadata.Get(envelope.KeyKind) == envelope.KindReply {
		if p.r.times.Add(-1) >= 0 {
			return p.r.err
		}
	}
	return p.Publisher.Publish(topic, msgs...)
}

// TestReplyPublishFailures: a permanent refusal of the reply is answered
// with an error and never re-runs the command; an unreachable backend
// still redelivers it (it may run again, bounded by the deadline).
func TestReplyPublishFailures(t *testing.T) {
	for _, c := range []struct {
		name     string
		err      error
		times    int32
		wantRuns int32
		wantCode int // 0: the result
	}{
		{"refused once", errors.New("refused"), 1, 1, 500},
		{"too large once", fmt.Errorf("%w: test", bridge.ErrTooLarge), 1, 1, 500},
		{"refused always", errors.New("refused"), 1 << 20, 1, 504},
		{"unreachable once", fmt.Errorf("%w: test", bridge.ErrUnreachable), 1, 2, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			bus := &refusing{Bridge: inproc.New(), err: c.err}
			bus.times.Store(c.times)
			var runs atomic.Int32
			s := engine.NewService("echo", "1")
			engine.Handle(s, Echo, func(ctx context.Context, in EchoIn) (EchoOut, error) {
				runs.Add(1)
				return EchoOut{Text: in.Text}, nil
			})
			e, _ := start(t, bus, engine.Config{Logger: slog.New(slog.DiscardHandler)}, s)
			out, err := Echo.Invoke(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"}, engine.CallTimeout(2*time.Second))
			var we *engine.Error
			switch {
			case c.wantCode == 0 && (err != nil || out.Text != "x"):
				t.Errorf("Invoke: %v, want the result", err)
			case c.wantCode != 0 && (!errors.As(err, &we) || we.Code != c.wantCode):
				t.Errorf("Invoke: %v, want a %d", err, c.wantCode)
			}
			time.Sleep(500 * time.Millisecond)
			if n := runs.Load(); n != c.wantRuns {
				t.Errorf("the handler ran %d times, want %d", n, c.wantRuns)
			}
		})
	}
}

// TestTooLargeErrorIsAnswered (NATS counts headers in max_payload): a
// handler's error too large for the server is answered with a 500 at
// once, not left for the caller's deadline, and the handler runs once.
func TestTooLargeErrorIsAnswered(t *testing.T) {
	bus := backends()["nats"](t)
	svc := uniqueName("bigerr")
	natsStreams(t, svc)
	cmd := engine.NewCommand[EchoIn, EchoOut](svc, "1", "fail")
	var runs atomic.Int32
	s := engine.NewService(svc, "1")
	engine.Handle(s, cmd, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		runs.Add(1)
		return EchoOut{}, &engine.Error{Code: 422, Message: strings.Repeat("e", engine.DefaultMaxPayloadBytes)}
	})
	e, _ := start(t, bus, engine.Config{}, s)
	began := time.Now()
	_, err := cmd.Invoke(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"}, engine.CallTimeout(5*time.Second))
	var we *engine.Error
	if !errors.As(err, &we) || we.Code != 500 {
		t.Errorf("Invoke: %v, want a 500 answer", err)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("the answer took %s: it must not wait for the deadline", d)
	}
	time.Sleep(500 * time.Millisecond) // room for redeliveries
	if n := runs.Load(); n != 1 {
		t.Errorf("the handler ran %d times, want 1", n)
	}
}

// TestMiddlewareEditingReplyToChangesNothing: whether a command is awaited
// is decided before any middleware runs, so a middleware that clears or
// forges reply_to neither loses the caller's answer nor redirects it.
func TestMiddlewareEditingReplyToChangesNothing(t *testing.T) {
	for name, value := range map[string]string{"cleared": "", "forged": "email.v1.sendWelcome", "another reply topic": "reply.someone-else"} {
		t.Run(name, func(t *testing.T) {
			var runs atomic.Int32
			s := engine.NewService("echo", "1")
			engine.Handle(s, Echo, func(ctx context.Context, in EchoIn) (EchoOut, error) {
				runs.Add(1)
				return EchoOut{Text: in.Text}, nil
			}, engine.Use(func(h message.HandlerFunc) message.HandlerFunc {
				return func(msg *message.Message) ([]*message.Message, error) {
					msg.Metadata.Set(envelope.KeyReplyTo, value)
					return h(msg)
				}
			}))
			e, _ := start(t, inproc.New(), engine.Config{Logger: slog.New(slog.DiscardHandler)}, s)
			out, err := Echo.Invoke(engine.WithEngine(t.Context(), e), EchoIn{Text: "x"}, engine.CallTimeout(2*time.Second))
			if err != nil || out.Text != "x" || runs.Load() != 1 {
				t.Errorf("Invoke: %+v, %v after %d runs; want the result after 1", out, err, runs.Load())
			}
		})
	}
}
