// Command monolith runs the example services in one process and drives the
// seed's scenario once: create a user (which calls the email service and
// emits user.created), read it back, list the e-mails sent, then exit.
//
//	go run ./examples/monolith                       # in-process
//	SWITCHBOARD_BRIDGE=nats://127.0.0.1:4222 go run ./examples/monolith
//	go run ./examples/monolith -serve                # keep running until Ctrl-C
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	_ "github.com/switchboard-go/switchboard/bridge/all"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/envelope"
	"github.com/switchboard-go/switchboard/examples/services/email"
	"github.com/switchboard-go/switchboard/examples/services/email/emailapi"
	"github.com/switchboard-go/switchboard/examples/services/user"
	"github.com/switchboard-go/switchboard/examples/services/user/userapi"
)

func main() {
	serve := flag.Bool("serve", false, "keep running after the demo until interrupted")
	flag.Parse()
	if err := run(*serve); err != nil {
		fmt.Fprintln(os.Stderr, "monolith:", err)
		os.Exit(1)
	}
}

func run(serve bool) error {
	tr := &tracer{}
	eng, err := engine.New(engine.Config{
		Bridge:        os.Getenv("SWITCHBOARD_BRIDGE"),
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Middleware:    []message.HandlerMiddleware{tr.middleware},
		HandleSignals: true,
	})
	if err != nil {
		return err
	}
	outbox := &email.Outbox{}
	if err := eng.Register(user.New(user.NewStore()), email.New(outbox)); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- eng.Run(ctx) }()
	select {
	case <-eng.Ready():
	case err := <-runErr:
		return err
	}
	fmt.Printf("engine running on %s\n", eng.Bridge().Name())

	call := engine.WithMeta(eng.Context(ctx), engine.Meta{PrincipalID: "demo-admin"})
	u, err := userapi.CreateUser.Invoke(call, userapi.CreateUserIn{Name: "Ada", Email: "ada@example.com"})
	if err != nil {
		return fmt.Errorf("createUser: %w", err)
	}
	fmt.Printf("created %s <%s> as %s\n", u.Name, u.Email, u.ID)

	_, err = userapi.CreateUser.Invoke(call, userapi.CreateUserIn{Name: "Ada again", Email: "ada@example.com"})
	var e *engine.Error
	if !errors.As(err, &e) {
		return fmt.Errorf("duplicate createUser: want an *engine.Error, got %v", err)
	}
	fmt.Printf("duplicate rejected: %d %s\n", e.Code, e.Message)

	// The user.created subscription runs asynchronously: wait for its e-mail.
	var sent emailapi.ListSentOut
	for deadline := time.Now().Add(10 * time.Second); len(sent.Sent) < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("user.created was not handled: sent %v", sent.Sent)
		}
		if sent, err = emailapi.ListSent.Invoke(call, emailapi.ListSentIn{}); err != nil {
			return fmt.Errorf("listSent: %w", err)
		}
	}
	for _, s := range sent.Sent {
		fmt.Printf("e-mail to %s: %q\n", s.To, s.Subject)
	}
	fmt.Println("trace:")
	tr.print()
	if serve {
		fmt.Println("serving; Ctrl-C to stop")
	} else {
		cancel()
	}
	return <-runErr
}

// tracer is a global middleware that records every handled message; it is
// also an example of plugging a plain Watermill middleware into the engine.
type tracer struct {
	mu    sync.Mutex
	lines []string
	trace string
}

func (t *tracer) middleware(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		m := engine.MetaFrom(msg.Context())
		out, err := next(msg)
		status := "ok"
		if err != nil {
			status = "error: " + err.Error()
		}
		topic := message.SubscribeTopicFromCtx(msg.Context())
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.trace == "" {
			t.trace = envelope.TraceID(m.Traceparent)
		}
		t.lines = append(t.lines, fmt.Sprintf("  %-22s %-8s principal=%s correlation=%s… caused-by=%s… trace-shared=%v",
			topic, status, m.PrincipalID, short(m.CorrelationID), short(m.CausationID), envelope.TraceID(m.Traceparent) == t.trace))
		return out, err
	}
}

func (t *tracer) print() {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Println(strings.Join(t.lines, "\n"))
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
