// Package scenario is the seed's scenario as the example tests drive it, so
// every deployment model is checked against the same expectations: a user
// is created (which sends the welcome e-mail through a nested command) and
// user.created makes the email service send a second one, both within the
// caller's conversation and trace.
package scenario

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/examples/services/email/emailapi"
	"github.com/switchboard-go/switchboard/examples/services/user/userapi"
)

// Traceparent is the trace every scenario starts.
const Traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// Welcomed reports whether sent holds both e-mails to address, and fails
// the test for any of them sent outside the caller's correlation id or the
// trace of Traceparent.
func Welcomed(t testing.TB, sent []emailapi.Sent, address, correlation string) bool {
	t.Helper()
	got := map[string]bool{}
	for _, s := range sent {
		if s.To != address {
			continue
		}
		got[s.Subject] = true
		if s.CorrelationID != correlation || s.TraceID != engine.TraceID(Traceparent) {
			t.Errorf("%q sent with correlation %q and trace %q, want %q and %q", s.Subject, s.CorrelationID, s.TraceID, correlation, engine.TraceID(Traceparent))
		}
	}
	return got["Welcome, Ada"] && got["Getting started"]
}

// Bus runs the scenario from a caller engine on the bus: createUser,
// getUser, a duplicate (409), and both e-mails within 20 s.
func Bus(t testing.TB, eng *engine.Engine) {
	t.Helper()
	corr := "corr-" + watermill.NewShortUUID()
	ctx := engine.WithMeta(engine.WithEngine(t.Context(), eng), engine.Meta{CorrelationID: corr, Traceparent: Traceparent})
	address := "ada-" + strings.ToLower(watermill.NewShortUUID()[:6]) + "@example.com"
	u, err := userapi.CreateUser.Invoke(ctx, userapi.CreateUserIn{Name: "Ada", Email: address}, engine.CallTimeout(20*time.Second))
	if err != nil {
		t.Fatalf("createUser: %v", err)
	}
	if got, err := userapi.GetUser.Invoke(ctx, userapi.GetUserIn{ID: u.ID}); err != nil || got != u {
		t.Errorf("getUser: %+v %v", got, err)
	}
	if _, err := userapi.CreateUser.Invoke(ctx, userapi.CreateUserIn{Name: "Ada", Email: address}); !errors.Is(err, engine.ErrConflict) {
		t.Errorf("duplicate: %v", err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		sent, err := emailapi.ListSent.Invoke(ctx, emailapi.ListSentIn{})
		if err != nil {
			t.Fatal(err)
		}
		if Welcomed(t, sent.Sent, address, corr) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("e-mails to %s never all sent: %+v", address, sent.Sent)
		}
	}
}
