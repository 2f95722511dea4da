// Command email runs the example email service alone, as one container of a
// microservices deployment: SWITCHBOARD_BRIDGE=nats://… go run ./examples/microservices/email
package main

import (
	"github.com/switchboard-go/switchboard/examples/internal/app"
	"github.com/switchboard-go/switchboard/examples/services/email"
)

func main() { app.Main("email", email.New(&email.Outbox{})) }
