// Command user runs the example user service alone, as one container of a
// microservices deployment: SWITCHBOARD_BRIDGE=nats://… go run ./examples/microservices/user
package main

import (
	"github.com/switchboard-go/switchboard/examples/internal/app"
	"github.com/switchboard-go/switchboard/examples/services/user"
)

func main() { app.Main("user", user.New(user.NewStore())) }
