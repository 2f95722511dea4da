// Package user implements the user service: createUser stores a user, asks
// the email service for a welcome e-mail and (declared on the contract)
// emits user.created.
package user

import (
	"context"
	"fmt"
	"sync"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/examples/services/email/emailapi"
	"github.com/switchboard-go/switchboard/examples/services/user/userapi"
)

// Store keeps users in memory; it stands in for a database.
type Store struct {
	mu     sync.Mutex
	users  map[string]userapi.User
	byMail map[string]string
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{users: map[string]userapi.User{}, byMail: map[string]string{}}
}

// New returns the user service, storing in st.
func New(st *Store) *engine.Service {
	svc := engine.NewService("user", "1")
	engine.Handle(svc, userapi.CreateUser, func(ctx context.Context, in userapi.CreateUserIn) (userapi.User, error) {
		st.mu.Lock()
		if _, dup := st.byMail[in.Email]; dup {
			st.mu.Unlock()
			return userapi.User{}, engine.NewError(409, "a user with e-mail %s exists", in.Email)
		}
		u := userapi.User{ID: fmt.Sprintf("u%d", len(st.users)+1), Name: in.Name, Email: in.Email}
		st.users[u.ID] = u
		st.byMail[u.Email] = u.ID
		st.mu.Unlock()
		// A call to another service: a message on the bridge, wherever it runs.
		if _, err := emailapi.SendWelcome.Invoke(ctx, emailapi.SendWelcomeIn{Email: u.Email, Name: u.Name}); err != nil {
			return userapi.User{}, fmt.Errorf("welcome e-mail for %s: %w", u.ID, err)
		}
		return u, nil
	})
	engine.Handle(svc, userapi.GetUser, func(ctx context.Context, in userapi.GetUserIn) (userapi.User, error) {
		st.mu.Lock()
		defer st.mu.Unlock()
		u, ok := st.users[in.ID]
		if !ok {
			return userapi.User{}, engine.NewError(404, "no user %q", in.ID)
		}
		return u, nil
	})
	return svc
}
