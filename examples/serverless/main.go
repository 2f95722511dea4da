// Command serverless runs the example services the way a function platform
// or a container runs them: one process, the HTTP gateway in front, the
// user and email services behind it on the in-process bridge (no broker),
// listening on $PORT (default 8080). The service code is the same as in
// examples/monolith, examples/microservices and examples/edge.
//
//	go run ./examples/serverless -demo     # or: API_TOKEN=… go run ./examples/serverless
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
// The bearer token is $API_TOKEN. Without it the process refuses to start
// (exit code 2), unless demo mode is asked for with -demo or
// SWITCHBOARD_DEMO=1: then the published token "demo-token" is accepted,
// and a warning says so. No token is ever logged. SIGTERM drains: new
// requests get 503 for $DRAIN_DELAY (1s), in-flight ones complete, then the
// engine stops.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/examples/internal/app"
	"github.com/switchboard-go/switchboard/examples/services/email"
	"github.com/switchboard-go/switchboard/examples/services/email/emailapi"
	"github.com/switchboard-go/switchboard/examples/services/user"
	"github.com/switchboard-go/switchboard/examples/services/user/userapi"
	"github.com/switchboard-go/switchboard/services/httpgateway"
)

// DemoToken is the bearer token accepted in demo mode without $API_TOKEN.
// It is published, so anybody can use it: demo mode must be asked for.
const DemoToken = "demo-token"

// errNoToken stops a process started without a token or demo mode.
var errNoToken = errors.New("$API_TOKEN is not set: set it, or run with -demo (or SWITCHBOARD_DEMO=1) to accept the published demo token")

func main() {
	demo := flag.Bool("demo", false, "without $API_TOKEN, accept the published demo token (as SWITCHBOARD_DEMO=1 does)")
	flag.Parse()
	token, err := apiToken(os.Getenv("API_TOKEN"), *demo || os.Getenv("SWITCHBOARD_DEMO") == "1")
	if err != nil {
		fmt.Fprintln(os.Stderr, "serverless:", err)
		os.Exit(2)
	}
	app.Serve(app.Options{
		Name:     "serverless",
		Services: []*engine.Service{user.New(user.NewStore()), email.New(&email.Outbox{})},
		Gateway: func(eng *engine.Engine, log *slog.Logger) *httpgateway.Gateway {
			return gateway(eng, log, token)
		},
	})
}

// apiToken returns the bearer token to accept: $API_TOKEN (env), else the
// demo token in demo mode, else errNoToken.
func apiToken(env string, demo bool) (string, error) {
	switch {
	case strings.TrimSpace(env) != "":
		return env, nil
	case demo:
		return DemoToken, nil
	}
	return "", errNoToken
}

// gateway exposes the services' commands over HTTP to holders of token.
func gateway(eng *engine.Engine, log *slog.Logger, token string) *httpgateway.Gateway {
	if token == DemoToken {
		log.Warn("demo mode: the published demo token is accepted; set API_TOKEN for anything else")
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
