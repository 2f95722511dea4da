// Package userapi is the user service's contract: what callers import.
package userapi

import (
	"strings"

	"github.com/switchboard-go/switchboard/engine"
)

// CreateUserIn is the input of CreateUser.
type CreateUserIn struct {
	Name  string `json:"name"`
	Email string `json:"email"`
}

// Validate implements engine.Validator.
func (in CreateUserIn) Validate() error {
	if strings.TrimSpace(in.Name) == "" {
		return engine.Invalid("name", "is required")
	}
	if !strings.Contains(in.Email, "@") {
		return engine.Invalid("email", "must be an e-mail address")
	}
	return nil
}

// User is a stored user.
type User struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

// GetUserIn is the input of GetUser.
type GetUserIn struct {
	ID string `json:"id"`
}

// UserCreated is emitted after every successful CreateUser, with the user.
var UserCreated = engine.NewEvent[User]("user.created")

// CreateUser stores a user and sends them a welcome e-mail.
var CreateUser = engine.NewCommand[CreateUserIn, User]("user", "1", "createUser").EmitsOnSuccess(UserCreated)

// GetUser returns a stored user, or engine.ErrNotFound.
var GetUser = engine.NewCommand[GetUserIn, User]("user", "1", "getUser")
