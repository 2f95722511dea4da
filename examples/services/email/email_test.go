package email_test

import (
	"testing"

	"github.com/switchboard-go/switchboard/engine/enginetest"
	"github.com/switchboard-go/switchboard/examples/services/email"
	"github.com/switchboard-go/switchboard/examples/services/email/emailapi"
	"github.com/switchboard-go/switchboard/examples/services/user/userapi"
)

// The email service's subscription, driven by an event the test delivers.
func TestGreetsNewUsers(t *testing.T) {
	out := &email.Outbox{}
	h := enginetest.New(t, email.New(out))
	if err := enginetest.Deliver(h, userapi.UserCreated, userapi.User{ID: "u1", Name: "Ada", Email: "ada@example.com"}); err != nil {
		t.Fatal(err)
	}
	sent, err := emailapi.ListSent.Invoke(h.Context(), emailapi.ListSentIn{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sent.Sent) != 1 || sent.Sent[0].To != "ada@example.com" || sent.Sent[0].Subject != "Getting started" {
		t.Errorf("sent %v", sent.Sent)
	}
}
