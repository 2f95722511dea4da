package engine_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
)

// BenchmarkInvoke measures an in-process command round trip: 1 hop (caller →
// echo) and 2 hops (caller → front → echo, the seed's user → email call).
func BenchmarkInvoke(b *testing.B) {
	front := engine.NewService("front", "1")
	engine.Handle(front, Nested, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		return Echo.Invoke(ctx, in)
	})
	e, err := engine.New(engine.Config{SharedBridge: inproc.New(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Register(front, echoService()); err != nil {
		b.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer e.Stop(context.Background())
	ctx := engine.WithEngine(context.Background(), e)
	in := EchoIn{Text: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
	for _, c := range []struct {
		name string
		cmd  *engine.Command[EchoIn, EchoOut]
	}{{"1hop", Echo}, {"2hops", Nested}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.cmd.Invoke(ctx, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEmit measures an in-process event fan-out: one event emitted
// and handled by two subscribing services, one event at a time.
func BenchmarkEmit(b *testing.B) {
	handled := make(chan struct{}, 2)
	var services []*engine.Service
	for _, name := range []string{"suba", "subb"} {
		s := engine.NewService(name, "1")
		engine.Subscribe(s, Echoed, func(context.Context, EchoOut) error {
			handled <- struct{}{}
			return nil
		})
		services = append(services, s)
	}
	e, err := engine.New(engine.Config{SharedBridge: inproc.New(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Register(services...); err != nil {
		b.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer e.Stop(context.Background())
	ctx := engine.WithEngine(context.Background(), e)
	ev := EchoOut{Text: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
	b.ReportAllocs()
	for b.Loop() {
		if err := Echoed.Emit(ctx, ev); err != nil {
			b.Fatal(err)
		}
		<-handled
		<-handled
	}
}
