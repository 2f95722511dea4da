// Package emailapi is the email service's contract: what callers import.
package emailapi

import (
	"strings"

	"github.com/switchboard-go/switchboard/engine"
)

// SendWelcomeIn asks for a welcome e-mail.
type SendWelcomeIn struct {
	Email string `json:"email"`
	Name  string `json:"name"`
}

// Validate implements engine.Validator.
func (in SendWelcomeIn) Validate() error {
	if !strings.Contains(in.Email, "@") {
		return engine.Invalid("email", "must be an e-mail address")
	}
	return nil
}

// SendWelcomeOut reports the sent e-mail.
type SendWelcomeOut struct {
	MessageID string `json:"messageId"`
}

// ListSentIn asks for the e-mails sent so far: to the addresses in To, or
// all of them when To is empty (a reply is bounded in size: ask for a few
// hundred addresses at a time when there are thousands).
type ListSentIn struct {
	To []string `json:"to,omitempty"`
}

// ListSentOut lists sent e-mails, oldest first.
type ListSentOut struct {
	Sent []Sent `json:"sent"`
}

// Sent is one sent e-mail, with the conversation it belonged to.
type Sent struct {
	To            string `json:"to"`
	Subject       string `json:"subject"`
	CorrelationID string `json:"correlationId"`
	TraceID       string `json:"traceId"`
}

// SendWelcome sends a welcome e-mail.
var SendWelcome = engine.NewCommand[SendWelcomeIn, SendWelcomeOut]("email", "1", "sendWelcome")

// ListSent lists the e-mails sent by this service.
var ListSent = engine.NewCommand[ListSentIn, ListSentOut]("email", "1", "listSent")
