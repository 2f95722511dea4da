// Command custom-middleware shows your own middleware at the engine's three
// scopes, around the example user and email services (examples/services,
// used unchanged):
//
//   - engine, eng.Use: an audit log of every handled message — service,
//     handler, topic, principal, tenant and outcome — read from
//     engine.MetaFrom, engine.RouteFrom and message.SubscribeTopicFromCtx;
//   - service, svc.Use: a per-tenant rate limit on the user service (a
//     small token bucket) that answers 429 (engine.Error), a transient error
//     the caller may retry later;
//   - handler, the engine.Use option: an auth guard on one command of a small
//     reports service defined here, answering engine.ErrUnauthorized (401)
//     when the conversation has no principal.
//
// Every middleware is a plain Watermill message.HandlerMiddleware. They run
// outermost first (engine, service, handler) inside the engine's own
// reliability middleware, so the audit log sees the guard's 401 and the
// limiter's 429 as outcomes. Principal and tenant are set once, at the edge,
// with engine.WithMeta, and flow to every message the call causes: the
// audit lines of the email service show them too.
//
//	go run ./examples/custom-middleware
//
// It runs in-process, prints what happens and exits.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/examples/services/email"
	"github.com/switchboard-go/switchboard/examples/services/email/emailapi"
	"github.com/switchboard-go/switchboard/examples/services/user"
	"github.com/switchboard-go/switchboard/examples/services/user/userapi"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "custom-middleware:", err)
		os.Exit(1)
	}
}

// SentMailIn asks the reports service how many e-mails were sent.
type SentMailIn struct{}

// SentMailOut is the answer.
type SentMailOut struct {
	Count int `json:"count"`
}

// SentMail is the reports service's one command. Only a known principal may
// call it: see the guard registered with it in reports.
var SentMail = engine.NewCommand[SentMailIn, SentMailOut]("reports", "1", "sentMail")

// reports returns a small service whose command is guarded by
// requirePrincipal: the third, innermost, middleware scope.
func reports() *engine.Service {
	svc := engine.NewService("reports", "1")
	engine.Handle(svc, SentMail, func(ctx context.Context, _ SentMailIn) (SentMailOut, error) {
		sent, err := emailapi.ListSent.Invoke(ctx, emailapi.ListSentIn{})
		if err != nil {
			return SentMailOut{}, err
		}
		return SentMailOut{Count: len(sent.Sent)}, nil
	}, engine.Use(requirePrincipal))
	return svc
}

// requirePrincipal is a guard: without a principal the handler never runs
// and the caller gets a 401.
func requirePrincipal(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if engine.MetaFrom(msg.Context()).PrincipalID == "" {
			return nil, &engine.Error{Code: engine.ErrUnauthorized.Code, Message: "sign in to read reports"}
		}
		return next(msg)
	}
}

// rateLimit is a token bucket per tenant: burst requests at once, then one
// more every refill.
type rateLimit struct {
	burst   int
	refill  time.Duration
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimit(burst int, refill time.Duration) *rateLimit {
	return &rateLimit{burst: burst, refill: refill, buckets: map[string]*bucket{}}
}

// allow takes a token from tenant's bucket and reports whether there was
// one.
func (l *rateLimit) allow(tenant string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	b := l.buckets[tenant]
	if b == nil {
		b = &bucket{tokens: float64(l.burst), last: now}
		l.buckets[tenant] = b
	}
	b.tokens = min(float64(l.burst), b.tokens+float64(now.Sub(b.last))/float64(l.refill))
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// middleware answers 429 once the message's tenant has used its requests.
// 429 is transient: an awaited command returns it to its caller; an event
// or a fire-and-forget command is retried with backoff by the engine.
func (l *rateLimit) middleware(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		tenant := engine.MetaFrom(msg.Context()).TenantID
		if !l.allow(tenant) {
			return nil, &engine.Error{
				Code:    429,
				Reason:  "rate_limited",
				Message: fmt.Sprintf("tenant %q used its %d requests; one more every %s", tenant, l.burst, l.refill),
				Details: map[string]any{"tenant": tenant},
			}
		}
		return next(msg)
	}
}

// audit prints one line per handled message and counts them per topic.
type audit struct {
	out   io.Writer
	mu    sync.Mutex
	count map[string]int
}

func (a *audit) middleware(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		m := engine.MetaFrom(ctx)
		route, _ := engine.RouteFrom(ctx)
		topic := message.SubscribeTopicFromCtx(ctx)
		out, err := next(msg)
		outcome := "ok"
		if err != nil {
			outcome = err.Error()
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		fmt.Fprintf(a.out, "  audit  %-22s principal=%-6s tenant=%-7s → %s\n",
			route.Service+"/"+route.Handler, orNone(m.PrincipalID), orNone(m.TenantID), outcome)
		a.count[topic]++
		return out, err
	}
}

// waitFor waits until n messages of topic have been audited: events are
// handled asynchronously.
func (a *audit) waitFor(topic string, n int) error {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		a.mu.Lock()
		got := a.count[topic]
		a.mu.Unlock()
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d messages handled", topic, got, n)
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// lockedWriter serialises the writes of handlers and of the main flow.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// run wires the three scopes, drives a short scenario and prints it on
// stdout.
func run(stdout io.Writer) error {
	out := &lockedWriter{w: stdout}
	aud := &audit{out: out, count: map[string]int{}}
	eng, err := engine.New(engine.Config{
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	if err := eng.Use(aud.middleware); err != nil { // engine scope
		return err
	}
	users := user.New(user.NewStore())
	users.Use(newRateLimit(2, 10*time.Second).middleware) // service scope
	if err := eng.Register(users, email.New(&email.Outbox{}), reports()); err != nil {
		return err
	}
	ctx := context.Background()
	if err := eng.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = eng.Stop(ctx) }()

	as := func(principal, tenant string) context.Context {
		return engine.WithMeta(engine.WithEngine(ctx, eng), engine.Meta{PrincipalID: principal, TenantID: tenant})
	}
	created := 0
	createUser := func(principal, tenant, name string) error {
		fmt.Fprintf(out, "%s@%s creates user %s\n", principal, tenant, name)
		u, err := userapi.CreateUser.Invoke(as(principal, tenant), userapi.CreateUserIn{Name: name, Email: strings.ToLower(name) + "@example.com"})
		var e *engine.Error
		switch {
		case err == nil:
			created++
			fmt.Fprintf(out, "  → created %s\n", u.ID)
			return aud.waitFor("event."+userapi.UserCreated.String(), created) // the e-mail service's subscription
		case errors.As(err, &e) && e.Code == 429:
			fmt.Fprintf(out, "  → refused: %d %s\n", e.Code, e.Message)
			return nil
		default:
			return fmt.Errorf("createUser %s: %w", name, err)
		}
	}
	sentMail := func(principal string) error {
		who := principal
		if who == "" {
			who = "an anonymous caller"
		}
		fmt.Fprintf(out, "%s asks for the e-mail report\n", who)
		r, err := SentMail.Invoke(as(principal, ""), SentMailIn{})
		var e *engine.Error
		switch {
		case err == nil:
			fmt.Fprintf(out, "  → %d e-mails sent\n", r.Count)
			return nil
		case errors.Is(err, engine.ErrUnauthorized) && errors.As(err, &e):
			fmt.Fprintf(out, "  → refused: %d %s\n", e.Code, e.Message)
			return nil
		default:
			return fmt.Errorf("sentMail: %w", err)
		}
	}

	fmt.Fprintln(out, "audit: engine · rate limit 2 per tenant: user service · auth guard: reports.sentMail")
	for _, step := range []func() error{
		func() error { return createUser("ada", "acme", "Ada") },
		func() error { return sentMail("") },
		func() error { return sentMail("ada") },
		func() error { return createUser("ada", "acme", "Bob") },
		func() error { return createUser("ada", "acme", "Carol") }, // acme's third request: 429
		func() error { return createUser("grace", "globex", "Dan") },
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return eng.Stop(ctx)
}
