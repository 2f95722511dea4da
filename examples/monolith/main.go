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
		HandleSignals: true,
	})
	if err != nil {
		return err
	}
	if err := eng.Use(tr.middleware); err != nil {
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

	call := engine.WithMeta(engine.WithEngine(ctx, eng), engine.Meta{PrincipalID: "demo-admin"})
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
	var mine []emailapi.Sent
	for deadline := time.Now().Add(10 * time.Second); len(mine) < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("user.created was not handled: sent %v", mine)
		}
		sent, err := emailapi.ListSent.Invoke(call, emailapi.ListSentIn{})
		if err != nil {
			return fmt.Errorf("listSent: %w", err)
		}
		mine = mine[:0]
		for _, s := range sent.Sent {
			if s.To == u.Email {
				mine = append(mine, s)
			}
		}
	}
	for _, s := range mine {
		fmt.Printf("e-mail to %s: %q\n", s.To, s.Subject)
	}
	tr.print()
	if serve {
		fmt.Println("serving; Ctrl-C to stop")
	} else {
		cancel()
	}
	return <-runErr
}

// tracer is an engine-wide middleware (eng.Use) that records every handled
// message; it is also an example of plugging a plain Watermill middleware
// into the engine.
type tracer struct {
	mu    sync.Mutex
	steps []*step
	depth map[string]int // message id → nesting depth
}

type step struct {
	depth               int
	topic, group        string
	status, correlation string
	trace, principal    string
}

func (t *tracer) middleware(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		m := engine.MetaFrom(msg.Context())
		t.mu.Lock()
		if t.depth == nil {
			t.depth = map[string]int{}
		}
		d := 0
		if parent, ok := t.depth[m.CausationID]; ok {
			d = parent + 1
		}
		t.depth[m.MessageID] = d
		s := &step{depth: d, topic: message.SubscribeTopicFromCtx(msg.Context()), group: message.HandlerNameFromCtx(msg.Context()),
			correlation: m.CorrelationID, trace: engine.TraceID(m.Traceparent), principal: m.PrincipalID}
		t.steps = append(t.steps, s)
		t.mu.Unlock()

		out, err := next(msg)
		t.mu.Lock()
		s.status = "ok"
		if err != nil {
			s.status = "error: " + err.Error()
		}
		t.mu.Unlock()
		return out, err
	}
}

// print shows the first conversation (the first createUser) as a tree.
func (t *tracer) print() {
	t.mu.Lock()
	defer t.mu.Unlock()
	first := t.steps[0]
	for _, s := range t.steps {
		if s.depth == 0 {
			first = s
			break
		}
	}
	fmt.Printf("trace of the first call (correlation %s, trace %s, principal %s):\n", short(first.correlation), short(first.trace), first.principal)
	for _, s := range t.steps {
		if s.correlation != first.correlation {
			continue
		}
		what := s.topic
		if strings.HasPrefix(s.topic, "event.") {
			what += " → " + strings.SplitN(s.group, "/", 2)[0]
		}
		same := ""
		if s.trace != first.trace || s.principal != first.principal {
			same = " (trace or principal lost!)"
		}
		fmt.Printf("  %s%s: %s%s\n", strings.Repeat("  ", s.depth), what, s.status, same)
	}
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8] + "…"
	}
	return id
}
