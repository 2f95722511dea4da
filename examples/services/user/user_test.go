package user_test

import (
	"context"
	"errors"
	"testing"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/engine/enginetest"
	"github.com/switchboard-go/switchboard/examples/services/email/emailapi"
	"github.com/switchboard-go/switchboard/examples/services/user"
	"github.com/switchboard-go/switchboard/examples/services/user/userapi"
)

// The user service tested alone: the email service is a stub.
func TestCreateUser(t *testing.T) {
	var welcomed []string
	h := enginetest.New(t, user.New(user.NewStore()),
		enginetest.Stub(emailapi.SendWelcome, func(ctx context.Context, in emailapi.SendWelcomeIn) (emailapi.SendWelcomeOut, error) {
			welcomed = append(welcomed, in.Email)
			return emailapi.SendWelcomeOut{MessageID: "m1"}, nil
		}))

	u, err := userapi.CreateUser.Invoke(h.Context(), userapi.CreateUserIn{Name: "Ada", Email: "ada@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if len(welcomed) != 1 || welcomed[0] != "ada@example.com" {
		t.Errorf("welcome e-mails: %v", welcomed)
	}
	if got := enginetest.Emitted(h, userapi.UserCreated); len(got) != 1 || got[0] != u {
		t.Errorf("user.created emitted %v, want [%v]", got, u)
	}
	_, err = userapi.CreateUser.Invoke(h.Context(), userapi.CreateUserIn{Name: "Ada", Email: "ada@example.com"})
	if !errors.Is(err, engine.ErrConflict) {
		t.Errorf("duplicate: %v", err)
	}
	if got := enginetest.Emitted(h, userapi.UserCreated); len(got) != 1 {
		t.Errorf("a failed createUser emitted user.created: %v", got)
	}
	if _, err := userapi.CreateUser.Invoke(h.Context(), userapi.CreateUserIn{Name: "", Email: "x@example.com"}); !errors.Is(err, engine.ErrInvalidInput) {
		t.Errorf("missing name: %v", err)
	}
	got, err := userapi.GetUser.Invoke(h.Context(), userapi.GetUserIn{ID: u.ID})
	if err != nil || got != u {
		t.Errorf("GetUser: %v %v", got, err)
	}
	if _, err := userapi.GetUser.Invoke(h.Context(), userapi.GetUserIn{ID: "nobody"}); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("GetUser unknown: %v", err)
	}
}

// When the email service fails, createUser reports it with the email
// service's own error.
func TestCreateUserWhenEmailFails(t *testing.T) {
	h := enginetest.New(t, user.New(user.NewStore()),
		enginetest.Stub(emailapi.SendWelcome, func(ctx context.Context, in emailapi.SendWelcomeIn) (emailapi.SendWelcomeOut, error) {
			return emailapi.SendWelcomeOut{}, engine.ErrUnavailable
		}))
	_, err := userapi.CreateUser.Invoke(h.Context(), userapi.CreateUserIn{Name: "Bo", Email: "bo@example.com"})
	if !errors.Is(err, engine.ErrUnavailable) {
		t.Errorf("got %v, want the stub's 503", err)
	}
	if got := enginetest.Emitted(h, userapi.UserCreated); len(got) != 0 {
		t.Errorf("user.created emitted after a failure: %v", got)
	}
}
