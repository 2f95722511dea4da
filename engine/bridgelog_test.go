package engine_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

// A bridge the engine opens from Config.Bridge logs to Config.Logger, not
// to slog.Default(): the NATS backend's "stream created" line goes to the
// engine's logger only.
func TestBridgeLogsToTheEnginesLogger(t *testing.T) {
	var mine, global testenv.LogBuffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&global, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(old)

	svc := engine.NewService(uniqueName("logs"), "1")
	cmd := engine.NewCommand[EchoIn, EchoOut](svc.Name(), "1", "echo")
	engine.Handle(svc, cmd, func(_ context.Context, in EchoIn) (EchoOut, error) { return EchoOut{Text: in.Text}, nil })
	e, err := engine.New(engine.Config{
		Bridge: strings.TrimSuffix(testenv.URL(t, testenv.NATS), "/") + "?stream_prefix=SBTEST_&max_age=1h",
		Logger: slog.New(slog.NewTextHandler(&mine, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Register(svc); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := e.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(mine.String(), "nats: stream created") {
		t.Errorf("the engine's logger has no bridge line:\n%s", mine.String())
	}
	if strings.Contains(global.String(), "bridge=nats") {
		t.Errorf("the bridge logged to slog.Default():\n%s", global.String())
	}
}
