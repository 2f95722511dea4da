// Command serverless runs the example services the way a function platform
// or a container runs them: one process, the HTTP gateway in front, the
// user and email services behind it on the in-process bridge (no broker),
// listening on $PORT (default 8080). The service code is the same as in
// examples/monolith, examples/microservices and examples/edge.
//
//	go run ./examples/serverless
//	curl -i -H 'Content-Type: application/json' -d '{"name":"Ada","email":"ada@example.com"}' localhost:8080/users
//	curl -i -H 'Authorization: Bearer demo-token' localhost:8080/users/u1
//	curl -H 'Authorization: Bearer demo-token' localhost:8080/emails
//	curl localhost:8080/openapi.json
//
// Endpoints:
//
//	POST /users       user.v1.createUser   public (sign-up), 201 with the user
//	GET  /users/{id}  user.v1.getUser      bearer token
//	GET  /emails      email.v1.listSent    bearer token
//	GET  /openapi.json, /healthz, /readyz
//
// The bearer token is $API_TOKEN; without it the demo token "demo-token"
// is accepted, and a warning says so. SIGTERM drains: new requests get 503
// for $DRAIN_DELAY (1s), in-flight ones complete, then the engine stops.
package main

import (
	"log/slog"
	"net/http"
	"os"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/examples/internal/app"
	"github.com/switchboard-go/switchboard/examples/services/email"
	"github.com/switchboard-go/switchboard/examples/services/email/emailapi"
	"github.com/switchboard-go/switchboard/examples/services/user"
	"github.com/switchboard-go/switchboard/examples/services/user/userapi"
	"github.com/switchboard-go/switchboard/services/httpgateway"
)

// DemoToken is the bearer token accepted when $API_TOKEN is not set.
const DemoToken = "demo-token"

func main() {
	app.Serve(app.Options{
		Name:     "serverless",
		Services: []*engine.Service{user.New(user.NewStore()), email.New(&email.Outbox{})},
		Gateway:  gateway,
	})
}

// gateway exposes the services' commands over HTTP.
func gateway(eng *engine.Engine, log *slog.Logger) *httpgateway.Gateway {
	token := os.Getenv("API_TOKEN")
	if token == "" {
		token = DemoToken
		log.Warn("API_TOKEN is not set: the demo token is accepted", "token", DemoToken)
	}
	gw := httpgateway.New(httpgateway.Config{
		Engine:        eng,
		Logger:        log,
		Title:         "Switchboard example: users and e-mails",
		Version:       "1",
		Authenticator: httpgateway.BearerTokens(map[string]httpgateway.Identity{token: {Principal: "api-client", Tenant: "demo"}}),
	})
	httpgateway.Route(gw, http.MethodPost, "/users", userapi.CreateUser,
		httpgateway.Public(), httpgateway.Status(http.StatusCreated), httpgateway.Summary("Sign a user up (sends a welcome e-mail)"))
	httpgateway.Route(gw, http.MethodGet, "/users/{id}", userapi.GetUser, httpgateway.Summary("Read a user"))
	httpgateway.Route(gw, http.MethodGet, "/emails", emailapi.ListSent, httpgateway.Summary("List the e-mails sent so far"))
	return gw
}
