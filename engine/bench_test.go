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
