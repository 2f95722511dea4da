// Package email implements the email service: it "sends" e-mails (records
// them in memory) and greets every new user a second time when it sees
// user.created.
package email

import (
	"context"
	"fmt"
	"sync"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/examples/services/email/emailapi"
	"github.com/switchboard-go/switchboard/examples/services/user/userapi"
)

// Outbox records sent e-mails; it stands in for an SMTP client.
type Outbox struct {
	mu   sync.Mutex
	sent []emailapi.Sent
}

func (o *Outbox) send(ctx context.Context, to, subject string) int {
	m := engine.MetaFrom(ctx)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sent = append(o.sent, emailapi.Sent{To: to, Subject: subject, CorrelationID: m.CorrelationID, TraceID: engine.TraceID(m.Traceparent)})
	return len(o.sent)
}

// Sent returns a copy of the sent e-mails.
func (o *Outbox) Sent() []emailapi.Sent {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]emailapi.Sent(nil), o.sent...)
}

// New returns the email service, sending through out.
func New(out *Outbox) *engine.Service {
	svc := engine.NewService("email", "1")
	engine.Handle(svc, emailapi.SendWelcome, func(ctx context.Context, in emailapi.SendWelcomeIn) (emailapi.SendWelcomeOut, error) {
		n := out.send(ctx, in.Email, "Welcome, "+in.Name)
		return emailapi.SendWelcomeOut{MessageID: fmt.Sprintf("mail-%d", n)}, nil
	})
	engine.Handle(svc, emailapi.ListSent, func(ctx context.Context, in emailapi.ListSentIn) (emailapi.ListSentOut, error) {
		all := out.Sent()
		if len(in.To) == 0 {
			return emailapi.ListSentOut{Sent: all}, nil
		}
		to := make(map[string]bool, len(in.To))
		for _, a := range in.To {
			to[a] = true
		}
		sent := []emailapi.Sent{}
		for _, s := range all {
			if to[s.To] {
				sent = append(sent, s)
			}
		}
		return emailapi.ListSentOut{Sent: sent}, nil
	})
	engine.Subscribe(svc, userapi.UserCreated, func(ctx context.Context, u userapi.User) error {
		out.send(ctx, u.Email, "Getting started")
		return nil
	})
	return svc
}
